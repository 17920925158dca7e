"""A description of the machine a run happened on, as a plain JSON-able dict.

Timings mean little without the hardware and the BLAS behind them, so every ``metrics.json``
carries this block and ``report.md`` prints it. Nothing here may fail: a missing library or an
unreadable ``/proc`` file gives ``None`` for that entry, never an exception.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

from nnscratch.threads import usable_cores

#: Distribution name -> module name of the libraries whose versions we record.
_LIBRARIES = {"numpy": "numpy", "scipy": "scipy", "torch": "torch", "matplotlib": "matplotlib"}


def machine_info() -> dict[str, Any]:
    """Describe this machine and the numeric libraries in use.

    Returns
    -------
    dict
        ``cpu_model`` (str), ``logical_cores`` (int), ``usable_cores`` (int: cores this process
        may run on), ``memory_bytes`` and ``memory_gib`` (total RAM, ``None`` if unknown),
        ``os``, ``python``, one entry per library in ``numpy``, ``scipy``, ``torch``,
        ``matplotlib`` (version string, ``None`` when not installed) and ``blas``: a list of
        ``{"user_api", "internal_api", "version", "num_threads", "architecture"}`` dicts, one
        per BLAS/OpenMP library loaded in this process (from ``threadpoolctl``).
    """
    from nnscratch.model.footprint import physical_memory

    memory = physical_memory()
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count() or 1,
        "usable_cores": usable_cores(),
        "memory_bytes": memory,
        "memory_gib": round(memory / 2**30, 1) if memory else None,
        "os": platform.platform(),
        "python": platform.python_version(),
    }
    for dist, module in _LIBRARIES.items():
        info[dist] = _version(dist, module)
    info["blas"] = _blas_info()
    return info


def _cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo``, else ``platform.processor()``, else 'unknown'."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(dist: str, module: str) -> str | None:
    """The version of a library without importing it unless it is already imported.

    Importing torch costs seconds, so an already-imported module's ``__version__`` is used when
    available and the installed distribution's metadata otherwise.
    """
    loaded = sys.modules.get(module)
    version = getattr(loaded, "__version__", None) if loaded is not None else None
    if version:
        return str(version)
    try:
        return importlib.metadata.version(dist)
    except Exception:  # noqa: BLE001 - not installed, or broken metadata
        return None


def _blas_info() -> list[dict[str, Any]]:
    """The BLAS / OpenMP thread pools loaded in this process, as reported by threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info

        pools = threadpool_info()
    except Exception:  # noqa: BLE001 - threadpoolctl missing or failing on this platform
        return []
    keys = ("user_api", "internal_api", "version", "num_threads", "architecture")
    return [{key: pool.get(key) for key in keys} for pool in pools]
