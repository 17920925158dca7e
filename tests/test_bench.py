"""The benchmark's arithmetic (FLOPs, limit, table) and a tiny end-to-end run."""

import numpy as np
import pytest

from nnscratch.bench import epoch_flops, format_table, run_benchmark


def test_epoch_flops_counts_forward_weight_and_input_gradients():
    # 784-533-10 on 50,000 images: layer 1 forward + weight gradient (no input gradient),
    # layer 2 forward + weight gradient + input gradient; 2 FLOPs per multiply-add.
    expected = 2 * 50_000 * (784 * 533 * 2 + 533 * 10 * 3)
    assert epoch_flops((784, 533, 10), 50_000) == expected
    assert epoch_flops((4, 3, 2), 1) == 2 * (4 * 3 * 2 + 3 * 2 * 3)


def test_run_benchmark_on_a_tiny_problem():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (640, 784), dtype=np.uint8)
    y = rng.integers(0, 10, 640)
    result = run_benchmark(pixels, y, engines=["numpy-float32", "torch-eager", "sklearn"], batch_sizes=[64], deep=[16],
                           epochs=2, progress=False)
    rows = {(r["engine"], r["arch"]): r for r in result["rows"]}
    assert set(rows) == {(e, a) for e in ("numpy-float32", "torch-eager", "sklearn")
                         for a in ("784-533-10", "784-16-10")}
    for r in rows.values():
        assert len(r["epochs_s"]) == 2 and r["s_per_epoch"] == pytest.approx(np.median(r["epochs_s"]))
        limit = result["limit_s_per_epoch"][f"{r['arch']} float32"]
        assert r["pct_of_peak"] == pytest.approx(100 * limit / r["s_per_epoch"])
        assert 0 < r["pct_of_peak"] < 100  # nothing beats the measured peak
    eager = rows[("torch-eager", "784-533-10")]
    assert eager["ratio_to_torch_eager"] == pytest.approx(1.0)
    table = format_table(result)
    assert "numpy-float32" in table and "GEMM peak" in table
