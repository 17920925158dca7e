"""Issue 25, item 3: PyTorch at its best beside the twin (``torch_engine/plain_loop.py``).

Oracle: the twin itself. The plain loop must do the twin's work, so one of its steps, from the
same state on the same rows, must give the twin's weights and optimizer state bit for bit (float64,
no dropout: the plain loop draws torch's own masks, the twin takes the run's), for every option the
loop passes through: momentum, weight decay, an L2 penalty, clipping, max-norm, label smoothing,
frozen layers, batch norm, Adam.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import optional_import
from nnscratch.model.registry import initial_state
from nnscratch.model.spec import mlp_spec
from nnscratch.report.markdown import render_report

torch = optional_import("torch")

from nnscratch.torch_engine.model import TorchEngine  # noqa: E402
from nnscratch.torch_engine.plain_loop import PlainLoop, time_plain_loop  # noqa: E402

N, D, C = 40, 12, 4

CASES = {
    "sgd": (mlp_spec(D, (9,), C), dict(optimizer="sgd")),
    "nesterov, decay, l2, clipping, max-norm, smoothing": (
        mlp_spec(D, (9, 7), C),
        dict(optimizer="sgd", optimizer_options={"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
             l2=1e-3, clip_grad_norm=0.5, max_norm=1.0, label_smoothing=0.1)),
    "adam, batch norm, frozen first layer": (mlp_spec(D, (9, 7), C, activation="gelu", batch_norm=True),
                                            dict(optimizer="adam", freeze=1)),
    "adamw, l1": (mlp_spec(D, (9,), C), dict(optimizer="adamw", l1=1e-3)),
}
#: float32 under autocast (float16 with torch's GradScaler, bfloat16 without)
PRECISION_CASES = {"fp16": dict(precision="fp16", l2=1e-3), "bf16": dict(precision="bf16", clip_grad_norm=0.5)}


@pytest.mark.parametrize("case", [*CASES, *PRECISION_CASES])
def test_a_plain_step_is_the_twins_step_bit_for_bit(case):
    spec, options = CASES[case] if case in CASES else (mlp_spec(D, (9,), C), PRECISION_CASES[case])
    dtype = np.float64 if case in CASES else np.float32
    rng = np.random.default_rng(3)
    rows, labels = rng.standard_normal((N, D)).astype(dtype), rng.integers(0, C, N)
    initial = initial_state(spec, np.random.default_rng(0))
    plain = PlainLoop(spec, initial, rows, labels, lr=0.05, dtype=dtype, **options)
    twin = TorchEngine(spec, initial, dtype, **options)
    twin.train()
    for idx in (np.arange(0, 16), np.arange(16, 32), rng.permutation(N)[:16]):
        plain.step(torch.from_numpy(idx))
        twin.train_step(rows[idx], labels[idx], 0.05)
    a, b = plain.engine.state(), twin.state()
    assert a.keys() == b.keys()
    del a["engine.steps"], b["engine.steps"]   # the twin's step counter (the plain loop keeps none)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    losses, _ = twin.take_epoch_stats()
    assert float(plain.total) == pytest.approx(float(np.sum(losses)), rel=1e-15)


def test_the_timing_keeps_to_its_limits():
    spec = mlp_spec(D, (9,), C)
    rng = np.random.default_rng(0)
    rows, labels = rng.random((N, D), dtype=np.float32), rng.integers(0, C, N)
    figure = time_plain_loop(spec, initial_state(spec, np.random.default_rng(0)), rows, labels,
                             batch_size=64, lr=0.01, max_steps=3, budget_s=float("inf"))
    assert figure["batch_size"] == N           # never a batch larger than the rows
    assert figure["steps"] == 3
    assert 0 < figure["step_s"] < 10
    figure = time_plain_loop(spec, initial_state(spec, np.random.default_rng(0)), rows, labels,
                             batch_size=8, lr=0.01, max_steps=10 ** 6, budget_s=0.0)
    assert figure["steps"] == 1                # the time budget spent: one step measured, then stop


def test_a_comparison_reports_pytorchs_own_loop(mnist):
    from nnscratch import api
    from nnscratch.report.results_table import results_table

    run = api.compare(epochs=1, train_subset=640, batch_size=64, data=mnist)
    plain = run.metrics["engines"]["torch"]["plain_torch"]
    assert "plain_torch" not in run.metrics["engines"]["numpy"]
    steps = len(run.history["torch"]["step_loss"])
    assert plain["twin_steps"] == steps == 10 and plain["steps"] <= steps
    assert plain["recorded_steps"] == 4          # gradient flow: 4 sampled steps an epoch, 1 epoch
    assert plain["twin_step_s"] == pytest.approx(run.history["torch"]["train_time_s"] / steps)
    assert plain["estimated_train_time_s"] == pytest.approx(plain["step_s"] * steps)
    report = render_report(run.metrics, [])
    assert "| Training time, PyTorch's own loop (estimate, see below) | — |" in report
    assert f"{plain['step_s'] * 1e3:.2f} ms a step" in report
    assert "4 of its steps also recording the gradient flow" in report
    assert "dropout masks" not in report           # this network has no dropout
    assert "its epochs in turn with the NumPy engine's" in report
    assert "PyTorch's own loop (est.)" in results_table(run.metrics)


def test_every_kind_of_network_gets_the_figure(mnist):
    """Input and hidden dropout, batch norm, GELU, momentum, smoothing, clipping and max-norm in
    float64, in one run: the figure is there (a failure inside the timing would only leave it out)."""
    from nnscratch import api

    run = api.train(engine="torch", epochs=1, train_subset=256, data=mnist, hidden=[32, 16],
                    dropout=0.2, input_dropout=0.1, batch_norm=True, activation="gelu", optimizer="sgd",
                    momentum=0.9, label_smoothing=0.1, clip_grad_norm=1.0, max_norm=3.0, dtype="float64",
                    gradient_flow=False)
    plain = run.metrics["engines"]["torch"]["plain_torch"]
    assert plain["steps"] == plain["twin_steps"] == 4 and plain["recorded_steps"] == 0
    report = render_report(run.metrics, [])
    note = next(line for line in report.splitlines() if line.startswith("PyTorch's own loop:"))
    assert "the run's dropout masks applied" in note and "gradient flow" not in note
    assert "in turn" not in note                   # the twin trained alone


@pytest.mark.parametrize("why", ["augmented", "resumed"])
def test_runs_whose_time_is_not_comparable_get_no_figure(mnist, tmp_path, monkeypatch, why):
    from nnscratch import api
    from nnscratch.torch_engine import plain_loop

    first = api.train(engine="torch", epochs=1, train_subset=256, data=mnist,
                      out=tmp_path / "first" if why == "resumed" else None,
                      augment="shift=1" if why == "augmented" else "none")
    assert ("plain_torch" in first.metrics["engines"]["torch"]) == (why == "resumed")
    if why == "augmented":
        reason = first.metrics["engines"]["torch"]["plain_torch_skipped"]
        assert reason == "an augmented run (the plain loop does not augment)"
        assert f"PyTorch's own loop was not timed beside the twin: {reason}." in render_report(first.metrics, [])
    if why == "resumed":  # the first run's figure is in its metrics.json; the resumed run gets none
        saved = json.loads((tmp_path / "first" / "metrics.json").read_text())
        assert saved["engines"]["torch"]["plain_torch"] == first.metrics["engines"]["torch"]["plain_torch"]
        calls = []
        monkeypatch.setattr(plain_loop, "time_plain_loop", lambda *a, **k: calls.append(1))
        again = api.train(engine="torch", epochs=2, data=mnist, resume=tmp_path / "first", out=tmp_path / "again")
        assert calls == [] and "plain_torch" not in again.metrics["engines"]["torch"]
        assert again.metrics["engines"]["torch"]["plain_torch_skipped"] == "a resumed run (its time spans sessions)"


def test_a_numpy_run_never_times_pytorch(mnist, monkeypatch):
    from nnscratch import api
    from nnscratch.torch_engine import plain_loop

    calls = []
    monkeypatch.setattr(plain_loop, "time_plain_loop", lambda *a, **k: calls.append(1))
    run = api.train(engine="numpy", epochs=1, train_subset=256, data=mnist)
    assert calls == [] and list(run.metrics["engines"]) == ["numpy"]


@pytest.mark.parametrize("stop", [MemoryError("no room for the rows"), KeyboardInterrupt()])
def test_a_failed_or_stopped_timing_never_loses_the_run(mnist, tmp_path, monkeypatch, capsys, stop):
    from nnscratch import api
    from nnscratch.torch_engine import plain_loop

    def fail(*args, **kwargs):
        raise stop

    monkeypatch.setattr(plain_loop, "time_plain_loop", fail)
    run = api.train(engine="torch", epochs=1, train_subset=256, data=mnist, out=tmp_path / "run")
    assert "plain_torch" not in run.metrics["engines"]["torch"]
    assert (tmp_path / "run" / "report.md").exists() and (tmp_path / "run" / "torch_model.safetensors").exists()
    assert "plain_torch" not in json.loads((tmp_path / "run" / "metrics.json").read_text())["engines"]["torch"]
    assert not (tmp_path / "run" / "INTERRUPTED.md").exists()
    err = capsys.readouterr().err
    assert ("could not be timed beside the twin (MemoryError: no room for the rows)" in err
            if isinstance(stop, MemoryError) else "stopped while timing PyTorch's own loop" in err)
