"""Run a reader on a hostile file in a subprocess whose memory is capped, so that a regression (a
reader that believes a declared size and allocates it) fails the test with a MemoryError instead of
taking the machine down.

The cap is on the address space (``RLIMIT_AS``), set by the child itself *after* it has imported
what it needs: its then address space (``VmSize``: Python, NumPy, Pillow, the package, about
0.3-0.6 GB, measured rather than guessed) plus :data:`HEADROOM`. Every hostile file in the tests
declares far more than that headroom (gigabytes to terabytes), while an honest reader needs a few
megabytes. OpenBLAS is held to one thread so that its per-thread buffers do not eat the headroom.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from helpers import cli_env

HEADROOM = 1 << 30  # bytes of address space the reader may use beyond the child's baseline

_PRELUDE = textwrap.dedent("""
    import json, resource, sys
    {imports}
    def _vm_size():
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    _baseline = _vm_size()
    resource.setrlimit(resource.RLIMIT_AS, (_baseline + {headroom}, resource.RLIM_INFINITY))
""")

_LIBRARY_CALL = textwrap.dedent("""
    from nnscratch.errors import NNScratchError
    try:
        {call}
    except NNScratchError as exc:
        print(json.dumps({{"error": type(exc).__name__, "message": str(exc)}}))
    else:
        print(json.dumps({{"error": None, "message": ""}}))
""")


def _require_linux() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the memory cap needs Linux (RLIMIT_AS and /proc/self/status)")


def run_capped(call: str, imports: str, cwd, env: dict[str, str] | None = None) -> tuple[str | None, str]:
    """Run ``call`` (one Python statement) after ``imports`` in a capped subprocess.

    Returns ``(error class name or None, message)`` of the :class:`~nnscratch.errors.NNScratchError`
    it raised. Anything else (a MemoryError, a traceback of any kind) fails the calling test.
    """
    _require_linux()
    code = _PRELUDE.format(imports=imports, headroom=HEADROOM) + _LIBRARY_CALL.format(call=call)
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env or cli_env(OPENBLAS_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, \
        f"the capped reader failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["error"], result["message"]


def run_cli_capped(args: list[str], cwd, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``nnscratch ARGS`` in a subprocess whose memory is capped once the CLI and the data package
    are imported."""
    _require_linux()
    imports = "import numpy, PIL.Image, nnscratch.data, nnscratch.cli.main"
    code = (_PRELUDE.format(imports=imports, headroom=HEADROOM)
            + "from nnscratch.cli.main import main\nsys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd,
                          env=env or cli_env(OPENBLAS_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)


def baseline_vm_size(imports: str, cwd) -> int:
    """The address space (bytes) of a child after ``imports``: for the report, and to check the cap is real."""
    code = _PRELUDE.format(imports=imports, headroom=HEADROOM) + "print(_baseline)\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=cli_env(OPENBLAS_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[-1])


__all__ = ["HEADROOM", "run_capped", "run_cli_capped", "baseline_vm_size", "json"]
