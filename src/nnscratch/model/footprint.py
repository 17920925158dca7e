"""How much memory training a network takes, checked before any of it is allocated.

A network's size is the user's to choose, so a slip (``--hidden 1000000000``, two layers of
100,000) would otherwise end in a ``MemoryError`` traceback after the data is loaded, or in a
machine that swaps for minutes first. :func:`check_memory` refuses, in one line, a network whose
training needs more than the machine's physical memory, counted as a **lower bound**:

* ``4 P b`` per engine: the ``P`` parameters and buffers (:func:`~nnscratch.model.registry.state_shapes`)
  at ``b`` bytes each, their gradients, and up to two optimizer buffers (Adam's moments);
* ``3 B W b`` per engine: each layer's output for a batch of ``B`` rows, the input it keeps for
  the backward pass and the gradient flowing back (``W`` the sum of the layers' widths, input
  included).

The real need is higher (the data, NumPy's temporaries, torch's allocator), so a network this
refuses could never train here, and one it lets through may still be too large: the check is for
the typo, not a promise.
"""

from __future__ import annotations

import math
import os

from nnscratch.errors import UsageError

__all__ = ["physical_memory", "parameter_count", "training_bytes", "check_memory"]


def physical_memory() -> int | None:
    """Total physical memory in bytes, from psutil or ``sysconf``; ``None`` if neither works."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # noqa: BLE001 - psutil missing or unsupported platform
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def parameter_count(spec) -> int:
    """Entries of every parameter and buffer of ``spec`` (exact Python integers: no overflow)."""
    from nnscratch.model.registry import state_shapes

    return sum(math.prod(shape) for shape in state_shapes(spec).values())


def training_bytes(spec, itemsize: int, batch_size: int, engines: int = 1) -> int:
    """The lower bound of the module docstring: ``engines * (4 P + 3 B W) * itemsize`` bytes."""
    width = spec.input_dim + sum(out for _, _, _, out in spec.walk())
    return engines * (4 * parameter_count(spec) + 3 * batch_size * width) * itemsize


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if nbytes < 1000 or unit == "PB":
            return f"{nbytes:,.0f} {unit}" if unit == "bytes" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1000
    raise AssertionError  # unreachable


def check_memory(spec, itemsize: int, batch_size: int, engines: int = 1, *, fix: str) -> None:
    """A :class:`~nnscratch.errors.UsageError` naming the network, what its training needs and
    what the machine has, when :func:`training_bytes` is above :func:`physical_memory`; ``fix``
    ends the line (``"choose smaller --hidden layers or a smaller --batch-size"``)."""
    have = physical_memory()
    need = training_bytes(spec, itemsize, batch_size, engines)
    if have is None or need <= have:
        return
    twins = f" for {engines} engines" if engines > 1 else ""
    raise UsageError(f"the network {spec.describe()} has {parameter_count(spec):,} parameters: training it at "
                     f"batch {batch_size:,} in {8 * itemsize}-bit floats{twins} needs at least {_size(need)}, more "
                     f"than this machine's {_size(have)} of memory; {fix}")
