"""Small helpers shared by the tests: numerical gradients, CLI subprocesses, one-line errors, IDX bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

# the gradient check's own finite differences and relative error (one definition, in the package)
from nnscratch.analysis.gradcheck import numerical_gradient, rel_error  # noqa: F401


def cli_env(**overrides: str) -> dict[str, str]:
    """The environment for a CLI subprocess: this one, a non-interactive matplotlib backend, and
    the package's source folder on the path (in case it is not installed)."""
    env = dict(os.environ)
    env["MPLBACKEND"] = "Agg"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(overrides)
    return env


def run_cli(args: list[str], cwd: str | os.PathLike, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m nnscratch ARGS`` in a subprocess, output captured as text."""
    return subprocess.run([sys.executable, "-m", "nnscratch", *args], cwd=cwd, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def run_python(code: str, args: list[str], cwd: str | os.PathLike, env: dict[str, str] | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -c CODE ARGS`` in a subprocess, output captured as text."""
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(stderr: str, stdout: str = "") -> str:
    """The CLI's error contract: exactly one non-empty line on stderr, ``nnscratch: error: ...``,
    and no traceback anywhere. Returns that line."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    assert lines[0].startswith("nnscratch: error:"), lines[0]
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr + stdout
    return lines[0]


def one_line(exc_info) -> str:
    """The message of the exception in ``exc_info`` (``pytest.raises``), asserted to be one line."""
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes (uncompressed) of ``array``: the inverse of :func:`nnscratch.data.idx.parse_idx`,
    for writing test files. The dtype must be one of the six IDX types (uint8, int8, int16, int32,
    float32, float64) and the array must have at least 1 dimension."""
    from nnscratch.data.idx import IDX_DTYPES

    array = np.asarray(array)
    codes = {dt.newbyteorder("=").str: code for code, dt in IDX_DTYPES.items()}
    key = array.dtype.newbyteorder("=").str
    if key not in codes or array.ndim == 0:
        raise ValueError(f"cannot encode an array of dtype {array.dtype}, ndim {array.ndim} as IDX")
    code = codes[key]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def optional_import(module: str):
    """Import an optional dependency (torch, numba, scikit-learn) for a test.

    Where it is missing the test is skipped, except when ``NNSCRATCH_REQUIRE_OPTIONAL=1`` (``.ci/run``
    sets it): then the import error fails the test, so CI can never pass by silently dropping the
    torch twin, the Numba kernels or the scikit-learn oracle.
    """
    import importlib

    import pytest

    if os.environ.get("NNSCRATCH_REQUIRE_OPTIONAL", "") not in ("", "0"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


#: Why a ``--device cuda`` error case cannot run here (see :func:`skip_where_cuda_may_exist`).
CUDA_MAY_EXIST = "this machine may have a CUDA GPU: --device cuda is no error here"


def skip_where_cuda_may_exist() -> None:
    """Skip a test that expects ``--device cuda`` to be refused, unless this machine surely has no
    CUDA GPU (the same check the CLI makes first, :func:`nnscratch.engines.no_cuda_device`). The one
    guard of tests/test_config.py and tests/test_errors.py."""
    import pytest

    from nnscratch.engines import no_cuda_device

    if not no_cuda_device():
        pytest.skip(CUDA_MAY_EXIST)
