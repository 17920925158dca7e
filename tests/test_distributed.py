"""Data-parallel training (docs/distributed.md): two CPU processes (gloo) against one process.

* ``torchrun --nproc-per-node 2`` trains both engines data-parallel on 2,000 MNIST images for one
  epoch in float64 (tests/distributed_worker.py: batch norm, dropout, uneven shards, momentum,
  L2, clipping); rank 0 then trains them as one process, the oracle. The weights agree to
  rounding (relative < 1e-12).
* A rank killed mid-run (SIGKILL) and a rank that hangs (SIGSTOP) make the other exit with one
  clear line on stderr, the first at once, the second after ``--dist-timeout``, never hanging.

Each launch is a process group of its own, killed in ``finally``: no worker outlives a test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import cli_env, optional_import

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def mnist_dir() -> str:
    """$NNSCRATCH_DATA_DIR when it holds MNIST (else skipped; failed under NNSCRATCH_REQUIRE_DATA=1)."""
    optional_import("torch")
    data_dir = os.environ.get("NNSCRATCH_DATA_DIR")
    if data_dir and (Path(data_dir) / "mnist").is_dir():
        return data_dir
    msg = "real MNIST needed: set NNSCRATCH_DATA_DIR to the folder that holds mnist/"
    if os.environ.get("NNSCRATCH_REQUIRE_DATA", "") not in ("", "0"):
        pytest.fail(msg + " (NNSCRATCH_REQUIRE_DATA=1)")
    pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    """One thread per process (2 processes on the 2 cores), unbuffered output, the sources first."""
    return cli_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1",
                   **extra)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill ``proc``'s whole process group (it was started in a session of its own)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def test_two_processes_train_the_weights_of_one(mnist_dir, tmp_path):
    out = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), str(HERE / "distributed_worker.py"), str(out)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=300)
    finally:
        _kill_group(proc)
    assert proc.returncode == 0, output[-3000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["steps"] == 32  # 2,000 images in batches of 63
    assert result["recorded"] == [{"processes": 2, "backend": "gloo"}, None]  # what metrics.json says
    for engine in ("numpy", "torch"):
        assert result[engine] < 1e-12, (engine, result)
        assert result[f"{engine}_loss"] < 1e-12, (engine, result)     # the global batch's loss, every step
        a, b = result[f"{engine}_train_accuracy"]
        assert a == b                                                  # the correct counts summed over ranks
    # the NumPy engine: ONE all-reduce per step for its gradients (+ 3 per batch-norm layer: 2 of
    # them, hidden (64, 32)); the twin: one for the step's loss and correct count (DDP's own aside)
    assert result["reductions"] == 32 * (1 + 2 * 3) + 32


def _start_rank(rank: int, port: int, tmp_path: Path, timeout_s: float) -> subprocess.Popen:
    """One rank of a 2-process ``nnscratch train --distributed`` (the variables torchrun would set)."""
    env = _env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NNSCRATCH_DATA_DIR=os.environ["NNSCRATCH_DATA_DIR"])
    args = ["train", "--distributed", "--dist-timeout", str(timeout_s), "--engine", "numpy", "--train-subset",
            "2000", "--epochs", "1000", "--hidden", "32", "--no-gradient-flow", "--no-checkpoints",
            "--out", str(tmp_path / f"run{rank}")]
    return subprocess.Popen([sys.executable, "-m", "nnscratch", *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.mark.parametrize("how", ["killed", "hung"])
def test_a_lost_rank_stops_the_other_with_one_line(mnist_dir, tmp_path, how):
    timeout_s = 6.0
    port = _free_port()
    rank0, rank1 = (_start_rank(r, port, tmp_path, timeout_s) for r in (0, 1))
    try:
        for line in rank0.stdout:  # rank 0's epoch lines: training is under way on both ranks
            if "epoch" in line and "train loss" in line:
                break
        else:
            pytest.fail("rank 0 ended before its first epoch: " + rank0.stderr.read()[-2000:])
        os.killpg(rank1.pid, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            rank0.wait(timeout=timeout_s + 60)  # the timeout, and time to say so; a hang fails here
        except subprocess.TimeoutExpired:
            pytest.fail(f"rank 0 still running {timeout_s + 60:g} s after rank 1 was {how}")
        waited = time.monotonic() - stopped_at
        stderr = rank0.stderr.read()
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert rank0.returncode == 1, stderr
        assert len(lines) == 1 and "Traceback" not in stderr, stderr
        assert lines[0].startswith("nnscratch: error: data-parallel run stopped: rank 0 of 2 lost contact"), lines[0]
        assert "--dist-timeout 6 s" in lines[0]
        if how == "hung":  # nobody said anything: only the timeout can have ended it
            assert waited >= timeout_s * 0.9, waited
        assert not (tmp_path / "run0").exists()  # rank 0 wrote nothing (the run folder is put in place at the end)
    finally:
        for proc in (rank0, rank1):
            _kill_group(proc)


# -- the pieces, in one process ------------------------------------------------------------------

class OneRank:
    """A communicator of a run of one process (the sum over one rank is the array itself)."""

    rank, world_size, reductions = 0, 1, 0

    def rows(self, n: int) -> slice:
        return slice(0, n)

    def allreduce_sum(self, array) -> None:
        self.reductions += 1


def test_shards_are_disjoint_contiguous_and_cover_the_batch():
    from nnscratch.training.distributed import shard_rows

    for n in (2, 7, 63, 64):
        for world in (1, 2, 3):
            if n < world:
                continue
            shards = [shard_rows(n, r, world) for r in range(world)]
            assert [s.start for s in shards] == [0] + [s.stop for s in shards[:-1]] and shards[-1].stop == n
            sizes = [s.stop - s.start for s in shards]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_a_last_batch_smaller_than_the_processes_is_refused():
    from nnscratch.errors import UsageError
    from nnscratch.training.distributed import check_shards

    check_shards(2000, 63, 2)  # last batch 47
    with pytest.raises(UsageError, match="last batch of 1: change --batch-size or --train-subset"):
        check_shards(129, 64, 2)


def test_the_data_parallel_numpy_engine_of_one_rank_is_the_plain_engine():
    """With one rank the sharded step, the flat gradient buffer and global batch norm are the
    plain unfused engine's numbers; the gradients are views of the one buffer that is reduced."""
    import numpy as np

    from nnscratch.model.registry import dropout_layers, initial_state
    from nnscratch.model.spec import mlp_spec
    from nnscratch.numpy_engine.data_parallel import DataParallelNumpyEngine, GlobalBatchNorm1d
    from nnscratch.numpy_engine.model import NumpyEngine
    from nnscratch.training.streams import dropout_keeps, init_rng

    spec = mlp_spec(20, (16, 8), 4, batch_norm=True, dropout=0.3)
    initial = initial_state(spec, init_rng(0), "he_normal")
    comm = OneRank()
    options = dict(optimizer="sgd", optimizer_options={"momentum": 0.9}, l2=1e-4)
    # batch norm's NumPy reference (GlobalBatchNorm1d's formulas), not its compiled twin (jit.py)
    plain = NumpyEngine(spec, initial, np.float64, fuse=False, compiled_layers=False, **options)
    parallel = DataParallelNumpyEngine(spec, initial, np.float64, communicator=comm, **options)
    assert sum(isinstance(layer, GlobalBatchNorm1d) for layer in parallel.model.layers) == 2
    for g in parallel.model.trainable_grads().values():
        assert np.shares_memory(g, parallel.flat_grad)
    rng = np.random.default_rng(1)
    for step in range(3):
        x, y = rng.normal(size=(10, 20)), rng.integers(0, 4, size=10)
        masks = dropout_keeps(0, 0, step, dropout_layers(spec), 10)
        plain.train_step(x, y, 0.1, masks)
        parallel.train_step(x, y, 0.1, masks)
    assert comm.reductions == 3 * (1 + 2 * 3)
    for name, value in plain.state_dict().items():
        np.testing.assert_array_equal(parallel.state_dict()[name], value, err_msg=name)
    np.testing.assert_array_equal(parallel.take_epoch_stats()[0], plain.take_epoch_stats()[0])


def test_the_benchmark_says_plainly_when_data_parallel_does_not_pay(monkeypatch):
    import numpy as np

    from nnscratch.run import data_parallel_bench as bench

    def parallel(seconds):
        return lambda *a, **k: {"processes": 2, "numpy": [seconds] * 3, "torch": [seconds] * 3,
                                "numpy_reduce_ms_per_step": 0.5, "numpy_reductions_per_step": 1.0,
                                "torch_reduce_ms_per_step": 0.0, "allreduce_ms": 0.4, "gradient_numbers": 423_583}

    pixels, y = np.zeros((640, 784), np.uint8), np.zeros(640, np.int64)
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # an idle machine
    monkeypatch.setattr(bench, "one_process", lambda *a: {"numpy": [1.0] * 3, "torch": [2.0] * 3})
    monkeypatch.setattr(bench, "data_parallel", parallel(2.5))
    slow = bench.run_data_parallel_bench(pixels, y, None, 64, 3, 2)
    assert slow["verdict"].startswith("data-parallel does not pay on this machine")
    numpy_dp = slow["rows"][1]
    assert numpy_dp["layout"] == "2 processes x 1 thread" and numpy_dp["speedup"] == 1.0 / 2.5
    assert numpy_dp["allreduce_share"] == pytest.approx(0.5e-3 * 10 / 2.5)  # 10 steps of 0.5 ms in 2.5 s
    assert "does not pay" in bench.format_data_parallel_table(slow)
    monkeypatch.setattr(bench, "data_parallel", parallel(0.5))
    assert bench.run_data_parallel_bench(pixels, y, None, 64, 3, 2)["verdict"].startswith("data-parallel pays here")
    assert "NOTE" not in slow["verdict"]
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (9.0, 9.0, 9.0))  # a busy one: said so
    assert "the machine was busy" in bench.run_data_parallel_bench(pixels, y, None, 64, 3, 2)["verdict"]
