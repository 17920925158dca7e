"""The benchmark's arithmetic (FLOPs, limit, table) and a tiny end-to-end run."""

import numpy as np
import pytest

from nnscratch.run.benchmark import PeakProbe, epoch_flops, format_table, gemm_peak, run_benchmark


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
                           epochs=2, progress=False, settle_s=0.0, peak_size=1024)
    assert result["settle_s"] == 0.0
    rows = {(r["engine"], r["arch"]): r for r in result["rows"]}
    assert set(rows) == {(e, a) for e in ("numpy-float32", "torch-eager", "sklearn")
                         for a in ("784-533-10", "784-16-10")}
    for r in rows.values():
        assert len(r["epochs_s"]) == 2 and r["s_per_epoch"] == pytest.approx(np.median(r["epochs_s"]))
        # % of peak: per round, the limit at that round's peak over that round's epoch time; median
        assert len(r["round_peak_gflops"]) == 2
        flops = epoch_flops(tuple(int(d) for d in r["arch"].split("-")), 640)
        per_round = [100 * flops / (p * 1e9) / t for p, t in zip(r["round_peak_gflops"], r["epochs_s"])]
        assert r["pct_of_peak"] == pytest.approx(np.median(per_round))
        assert 0 < r["pct_of_peak"] < 100  # nothing beats the measured peak
        assert r["pct_of_start_peak"] == pytest.approx(
            100 * result["limit_s_per_epoch"][f"{r['arch']} float32"] / r["s_per_epoch"])
    eager = rows[("torch-eager", "784-533-10")]
    assert eager["ratio_to_torch_eager"] == pytest.approx(1.0)
    for arch in ("784-533-10", "784-16-10"):  # torch-eager is the only peer measured here: the best one
        ours, peer = rows[("numpy-float32", arch)], rows[("torch-eager", arch)]
        assert ours["ratio_to_best_peer"] == pytest.approx(peer["s_per_epoch"] / ours["s_per_epoch"])
        assert peer["ratio_to_best_peer"] == pytest.approx(1.0)
    table = format_table(result)
    assert "numpy-float32" in table and "GEMM peak" in table


def test_every_timed_epoch_and_peak_measurement_starts_after_a_pause(monkeypatch):
    import nnscratch.run.benchmark as bench

    events = []
    monkeypatch.setattr(bench.time, "sleep", lambda seconds: events.append(("sleep", seconds)))

    def fake_probe(self, dtype, n=4096):  # products that only record that they ran
        self.n, self.products = 1, {lib: (lambda: events.append(("product",))) for lib in ("numpy", "scipy")}
    monkeypatch.setattr(bench.PeakProbe, "__init__", fake_probe)
    monkeypatch.setattr(bench, "make_runner",
                        lambda engine, *args: ((lambda: events.append(("epoch", engine)) or 1.0), ""))
    result = run_benchmark(np.zeros((64, 784), np.uint8), np.zeros(64, np.int64), batch_sizes=[64], deep=[],
                           epochs=3, engines=["numpy-float32", "numpy-float64", "sklearn"], progress=False,
                           settle_s=0.25)
    assert result["settle_s"] == 0.25
    kinds = "".join({"sleep": "s", "product": "p", "epoch": "e"}[e[0]] for e in events)
    # at the start, per dtype and library: a pause, a warm-up product and the best of 3;
    # then each round: a pause and one product per dtype, a pause and one epoch per engine
    assert kinds == "spppp" * 4 + ("sp" * 2 + "se" * 3) * 3
    assert all(e == ("sleep", 0.25) for e in events if e[0] == "sleep")


def test_run_benchmark_refuses_a_negative_pause():
    with pytest.raises(ValueError, match="settle_s"):
        run_benchmark(np.zeros((64, 784), np.uint8), np.zeros(64, np.int64), batch_sizes=[64], deep=[], epochs=1,
                      engines=["numpy-float32"], progress=False, settle_s=-1.0)


def test_bench_command_passes_its_pause_to_the_benchmark(monkeypatch):
    import nnscratch.cli.bench as bench
    import nnscratch.data
    from nnscratch.cli.main import main

    class FakeData:
        train_images, train_labels = np.zeros((64, 28, 28), np.uint8), np.zeros(64, np.uint8)
    seen = {}

    def fake_run_benchmark(pixels, y, **kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt  # stop here: only the hand-over is under test
    monkeypatch.setattr(nnscratch.data, "load_dataset", lambda *args, **kwargs: FakeData())
    monkeypatch.setattr(bench, "run_benchmark", fake_run_benchmark)
    assert main(["bench", "--settle", "0.05", "--epochs", "1"]) == 130
    assert seen["settle_s"] == 0.05 and seen["epochs"] == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_peak_probe_products_are_the_matmul_in_both_libraries(dtype):
    probe = PeakProbe(dtype, n=64)
    rng = np.random.default_rng(0)  # the probe's a and b, rebuilt
    a, b = rng.random((64, 64)).astype(dtype), rng.random((64, 64)).astype(dtype)
    for name in ("numpy", "scipy"):
        np.testing.assert_allclose(probe.products[name](), a @ b, rtol=1e-5)
    peak = gemm_peak(probe, repeats=1)
    assert peak["peak"] == max(peak["numpy"], peak["scipy"]) > 0 and peak["library"] in ("numpy", "scipy")


def test_command_line_records_the_settings_not_the_output_paths():
    from nnscratch.cli.bench import command_line
    from nnscratch.cli.main import build_parser

    args = build_parser().parse_args(["bench", "--epochs", "5", "--jit", "--deep", "--json", "/tmp/x.json",
                                      "--engines", "numpy-float32", "sklearn"])
    cmd = command_line(args)
    assert cmd == "nnscratch bench --epochs 5 --batch-sizes 64 256 1024 --deep --engines numpy-float32 sklearn --jit"
    assert command_line(build_parser().parse_args(cmd.split()[1:])) == cmd  # it runs as printed
    cmd = command_line(build_parser().parse_args(["bench", "--settle", "0"]))
    assert "--settle 0" in cmd  # a pause other than the default is part of the settings
    assert command_line(build_parser().parse_args(cmd.split()[1:])) == cmd


def test_run_benchmark_measures_a_config_with_its_training_options(monkeypatch):
    """``--config``: the config's network at its batch size, each engine built with its optimizer and
    options (ours drawing dropout masks, torch with its own nn.Dropout); scikit-learn is left out."""
    import nnscratch.run.benchmark as bench
    from nnscratch.run.config import RunConfig

    built = []
    real_make_engine = __import__("nnscratch.engines", fromlist=["make_engine"]).make_engine

    def recording_make_engine(name, spec, initial, dtype, **options):
        built.append((name, spec.describe(), options))
        return real_make_engine(name, spec, initial, dtype, **options)

    monkeypatch.setattr("nnscratch.engines.make_engine", recording_make_engine)
    cfg = RunConfig(hidden=(16,), dropout=0.25, batch_norm=True, optimizer="adamw", weight_decay=0.01, lr=1e-3,
                    batch_size=32)
    rng = np.random.default_rng(0)
    pixels, y = rng.integers(0, 256, (256, 784), dtype=np.uint8), rng.integers(0, 10, 256)
    result = run_benchmark(pixels, y, engines=["numpy-float32", "torch-eager", "sklearn"], batch_sizes=[64], deep=[],
                           epochs=1, progress=False, settle_s=0.0, configs=[("best.toml", cfg)],
                           peak_size=64)
    rows = [r for r in result["rows"] if r["arch"].startswith("best.toml")]
    assert [r["engine"] for r in rows] == ["numpy-float32", "torch-eager", "sklearn"]
    assert all(r["batch_size"] == 32 for r in rows)
    assert rows[0]["arch"] == "best.toml: 784-16-10 (batch norm, relu, dropout 0.25)"
    assert rows[0]["s_per_epoch"] > 0 and rows[1]["s_per_epoch"] > 0
    assert rows[2]["s_per_epoch"] is None and rows[2]["note"].startswith("not measured")
    config_builds = [b for b in built if b[1].startswith("784-16-10")]
    assert {b[0] for b in config_builds} == {"numpy", "torch"}
    for name, _, options in config_builds:
        assert options["optimizer"] == "adamw" and options["optimizer_options"] == {"weight_decay": 0.01}
    assert next(o for n, _, o in config_builds if n == "torch")["shared_masks"] is False
    assert "best.toml" in bench.format_table(result)
