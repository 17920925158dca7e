"""Small helpers shared by the gradient, twin, model-io and CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np

TINY = 1e-300


def rel_error(a, b) -> float:
    """Relative error of ``a`` against ``b`` in the infinity norm (one number per tensor)::

        max_i |a_i - b_i| / max(max_i |a_i|, max_i |b_i|, tiny)

    Norm-based rather than element-wise, so that entries that are (nearly) zero in both arrays do
    not blow the ratio up; it is 0 only when the arrays are equal.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    if a.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))), TINY)
    return float(np.max(np.abs(a - b))) / scale


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite differences ``(f(x + h e_i) - f(x - h e_i)) / 2h`` of the scalar ``f()`` with
    respect to every entry of ``x`` (perturbed in place and restored)."""
    assert x.dtype == np.float64, "finite differences need float64"
    grad = np.zeros(x.shape, dtype=np.float64)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + h
        f_plus = f()
        x[idx] = old - h
        f_minus = f()
        x[idx] = old
        grad[idx] = (f_plus - f_minus) / (2 * h)
    return grad


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
