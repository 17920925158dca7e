"""Every script in benchmarks/ runs, at tiny sizes, so that none can rot unseen (benchmarks/optimizers.py
once called ``make_optimizer(..., jit=...)`` long after that argument was gone)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli_env, optional_import

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
#: script -> its arguments for a run of a few seconds
TINY = {
    "engines.py": ["--epochs", "1", "--batch-sizes", "256", "--deep", "--engines", "numpy-float32",
                   "--settle", "0", "--train-subset", "512", "--peak-size", "256"],
    "optimizers.py": ["2", "--small"],
    "checkpoints.py": ["1", "640"],
    "max_norm.py": ["1", "1"],
    "transfer.py": ["--small", "--out", "."],
    "keep_overhead.py": [str(BENCHMARKS.parent / "src" / "nnscratch" / "numpy_engine" / "layers.py"), "bn", "2", "10"],
    "gradient_flow.py": ["20", "1", "640"],
    "augment.py": ["1", "--train-subset", "512", "--repeats", "2"],
    "precision.py": ["256", "1", "numpy"],
    "products.py": ["--small", "--repeats", "1"],
    "twin_overhead.py": ["--rounds", "1", "--train-subset", "640", "--dropout", "0.2"],
}


def test_every_script_has_a_tiny_run():
    assert {p.name for p in BENCHMARKS.glob("*.py")} == set(TINY)


@pytest.mark.parametrize("script", sorted(TINY))
def test_the_script_runs(script, tmp_path, request):
    if script in ("engines.py", "checkpoints.py", "transfer.py", "gradient_flow.py", "augment.py", "max_norm.py",
                  "precision.py", "twin_overhead.py"):
        request.getfixturevalue("mnist")  # the real MNIST files (skip or fail as conftest says)
    elif script != "keep_overhead.py":
        optional_import("torch")
        optional_import("numba")
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *TINY[script]], cwd=tmp_path, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    if script == "optimizers.py":
        assert proc.stdout.count("bit-identical to numpy after 5 steps: True") == 4, proc.stdout
    elif script == "transfer.py":
        assert "MNIST 0-4 -> 5-9" in proc.stdout and (tmp_path / "transfer.png").is_file(), proc.stdout
        assert (tmp_path / "transfer.json").is_file()
    elif script == "keep_overhead.py":
        assert "step losses identical" in proc.stdout, proc.stdout
    elif script == "gradient_flow.py":
        assert "extra per recorded step" in proc.stdout and "epochs on/off" in proc.stdout, proc.stdout
    elif script == "max_norm.py":
        assert "--max-norm 1 (binds)" in proc.stdout and "MaxNorm.apply" in proc.stdout, proc.stdout
    elif script == "checkpoints.py":
        assert "one checkpoint write: median" in proc.stdout and "with/without:" in proc.stdout, proc.stdout
    elif script == "precision.py":
        assert "median numpy fp16:" in proc.stdout and "median numpy bf16:" in proc.stdout, proc.stdout
    elif script == "products.py":  # both dense layers' products recorded and replayed
        assert "20-8-10, batch   16:" in proc.stdout and "(2 dense layers, 3 steps)" in proc.stdout, proc.stdout
    elif script == "augment.py":
        assert "elastic recipe (scipy)" in proc.stdout and "augmented (default)" in proc.stdout, proc.stdout
    elif script == "twin_overhead.py":
        assert "784-533-10, batch 64, dropout 0.2, 640 images" in proc.stdout and "twin / plain = " in proc.stdout
    else:
        assert "numpy-float32" in proc.stdout, proc.stdout
