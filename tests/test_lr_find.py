"""``nnscratch lr-find`` and :mod:`nnscratch.analysis.lr_find`: the suggestion on a hand-made curve,
NaN kept out of it, the sweep's stop at divergence, the suggestion on MNIST inside the stable
range of plain SGD, the CLI's files and lines, the train it suggests, and the untouched initial state."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import assert_one_line_error, run_cli  # noqa: E402

from nnscratch.analysis.lr_find import lr_sweep, smooth, suggest, sweep_lrs, training_batches  # noqa: E402
from nnscratch.errors import ParameterError  # noqa: E402


def test_suggest_on_a_hand_made_curve():
    # lrs 1e-4 .. 1e0, one decade apart: log10 steps of 1, so the central gradient at i is (s[i+1] - s[i-1]) / 2;
    # ends are one-sided: s[1] - s[0] and s[4] - s[3]
    lrs = [1e-4, 1e-3, 1e-2, 1e-1, 1e0]
    curve = [2.0, 1.9, 1.0, 0.5, 3.0]
    # gradients: -0.1, (1.0 - 2.0) / 2 = -0.5, (0.5 - 1.9) / 2 = -0.7, (3.0 - 1.0) / 2 = 1.0, 2.5
    tips = suggest(lrs, curve, skip_start=0)
    assert tips["steepest"] == pytest.approx(1e-2)
    assert tips["minimum"] == pytest.approx(1e-1)
    assert tips["min_over_10"] == pytest.approx(1e-2)
    # the first points are skipped (fastai's 10), and the climb after the minimum is never the answer
    lrs = np.logspace(-6, 1, 15)
    curve = np.r_[5.0, 1.0, np.linspace(0.99, 0.9, 9), 0.6, 0.3, 0.1, -9.0 + 9.5]  # min at index 13
    tips = suggest(lrs, curve)
    slope = np.gradient(curve, np.log10(lrs))
    assert tips["steepest"] == pytest.approx(lrs[10 + np.argmin(slope[10:14])]) and tips["minimum"] == lrs[13]


def test_nan_and_inf_never_enter_the_suggestion():
    lrs = [1e-4, 1e-3, 1e-2, 1e-1, 1e0, 1e1]
    # a NaN where a naive argmin/gradient would be poisoned, an inf at the end
    tips = suggest(lrs, [2.0, 1.9, 1.0, float("nan"), 0.5, float("inf")], skip_start=0)
    assert all(math.isfinite(v) for v in tips.values())
    assert tips["minimum"] == pytest.approx(1e0)
    assert suggest([1e-3, 1e-2], [float("nan"), float("nan")]) == {"steepest": None, "min_over_10": None,
                                                                    "minimum": None}


def test_smoothing_is_the_bias_corrected_ema():
    # beta 0.5: avg 0.5, 1.25 -> corrected 0.5 / 0.5 = 1, 1.25 / 0.75; a constant stays itself
    assert smooth([1.0, 2.0], beta=0.5) == pytest.approx([1.0, 1.25 / 0.75])
    assert smooth([3.0] * 5) == pytest.approx([3.0] * 5)
    assert sweep_lrs(1e-3, 1e1, 5) == pytest.approx([1e-3, 1e-2, 1e-1, 1e0, 1e1])


class _Quadratic:
    """A one-parameter 'engine': loss w^2 at the step, then w -= lr * 2w (diverges for lr > 1)."""

    name, training, steps = "toy", True, 0

    def __init__(self, w=1.0):
        self.w, self._losses = w, []

    def train_step(self, x, y, lr, masks=None):
        self._losses.append(self.w ** 2)
        self.w -= lr * 2 * self.w
        self.steps += 1

    def take_epoch_stats(self):
        losses, self._losses = np.array(self._losses), []
        return losses, 0


def _toy_batches():
    while True:
        yield None, None, None


def test_sweep_stops_at_divergence_and_at_nan():
    sweep = lr_sweep(_Quadratic(), _toy_batches(), 1e-4, 1e6, 200)
    assert sweep["stop_reason"] == "diverged"
    assert sweep["stopped_at"] < 199 and len(sweep["lrs"]) == sweep["stopped_at"] + 1
    assert sweep["smoothed"][-1] > 4 * sweep["best"]
    assert 1e-2 < sweep["suggestions"]["steepest"] < 1.0 + 1e-9  # w^2 falls fastest just below lr 1/2..1

    class NanAt(_Quadratic):
        def train_step(self, x, y, lr, masks=None):
            super().train_step(x, y, lr)
            if self.steps == 30:
                self._losses[-1] = float("nan")

    sweep = lr_sweep(NanAt(), _toy_batches(), 1e-6, 1e-3, 100)
    assert sweep["stop_reason"] == "nan" and sweep["stopped_at"] == 29
    assert len(sweep["losses"]) == 29 and all(math.isfinite(v) for v in sweep["smoothed"])
    assert all(math.isfinite(v) for v in sweep["suggestions"].values())


@pytest.mark.parametrize("kwargs, name", [(dict(start_lr=0.0), "start_lr"), (dict(end_lr=1e-8), "end_lr"),
                                          (dict(steps=1), "steps")])
def test_library_names_its_parameters(kwargs, name):
    args = {"start_lr": 1e-7, "end_lr": 10.0, "steps": 10, **kwargs}
    with pytest.raises(ParameterError) as info:
        lr_sweep(_Quadratic(), _toy_batches(), **args)
    assert info.value.parameter == name


def _mnist_plan(mnist, **settings):
    from nnscratch.run.config import RunConfig
    from nnscratch.run.experiment import plan_run, prepare_arrays

    cfg = RunConfig(**{"hidden": (32,), "train_subset": 2000, **settings})
    arrays = prepare_arrays(mnist, cfg)
    return cfg, arrays, plan_run(cfg, len(arrays.y_train), arrays.x_train.shape[1], mnist.num_classes)


def test_mnist_suggestion_is_inside_sgds_stable_range_and_the_initial_state_is_untouched(mnist):
    from nnscratch.model.registry import dropout_layers
    from nnscratch.run.experiment import RunPlan, build_engines

    cfg, arrays, plan = _mnist_plan(mnist)
    before = {k: v.copy() for k, v in plan.initial.items()}
    copy = RunPlan(plan.spec, {k: v.copy() for k, v in plan.initial.items()})
    engine = build_engines(cfg, copy)["numpy"]
    batches = training_batches(arrays.x_train, arrays.y_train, cfg.batch_size, seed=cfg.seed,
                               dropout=dropout_layers(plan.spec), dtype=cfg.np_dtype)
    sweep = lr_sweep(engine, batches, 1e-7, 10.0, 100)
    tips = sweep["suggestions"]
    assert 1e-3 <= tips["steepest"] <= 1.0 and 1e-3 <= tips["min_over_10"] <= 1.0
    assert sweep["best"] < sweep["smoothed"][0]
    # the sweep trained its own copy; the plan's arrays and a fresh plan_run are what they were
    assert any(not np.array_equal(v, before[k]) for k, v in engine.state_dict().items())
    for k, v in before.items():
        np.testing.assert_array_equal(plan.initial[k], v)
        np.testing.assert_array_equal(_mnist_plan(mnist)[2].initial[k], v)


def test_with_augment_the_sweep_sees_the_augmented_batches_training_would():
    from nnscratch.data.augment import parse_augment
    from nnscratch.training.augmented import AugmentedBatches
    from nnscratch.training.loop import BatchGatherer
    from nnscratch.training.streams import EpochOrders

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (100, 64), dtype=np.uint8), rng.integers(0, 10, 100)
    augment = AugmentedBatches(x, (8, 8), parse_augment("rotate=20,shift=1"), 3, 32)
    sweep = training_batches(x, y, 32, seed=3, augment=augment)
    plain = training_batches(x, y, 32, seed=3)
    orders, gather = EpochOrders(3, 100), BatchGatherer(x, y, 32, np.float32)
    for k in range(6):  # 4 batches an epoch (the last of 4 images): into the second epoch
        e, s = divmod(k, 4)
        idx = orders.order(e)[s * 32:(s + 1) * 32]
        xb, yb, _ = next(sweep)
        expected, labels = gather.prepared(augment.batch(e, s, idx), idx)
        np.testing.assert_array_equal(xb, expected)
        np.testing.assert_array_equal(yb, labels)
        assert not np.array_equal(xb, next(plain)[0])  # augmented, not the plain rows


def test_cli_writes_both_files_prints_the_line_and_its_train_runs(tmp_path, mnist):
    out = tmp_path / "lrf"
    proc = run_cli(["lr-find", "--train-subset", "1000", "--hidden", "32", "--steps", "60", "--out", str(out)],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = re.search(r"^suggested: --lr (\S+) \(steepest\); min/10: (\S+)$", proc.stdout, re.M)
    assert line, proc.stdout
    lr = float(line.group(1))
    command = next(t for t in proc.stdout.splitlines() if t.startswith("nnscratch train "))
    assert f"--lr {lr:g}" in command and "--train-subset 1000" in command and "--hidden 32" in command
    assert (out / "lr_find.png").stat().st_size > 10_000
    record = json.loads((out / "lr_find.json").read_text())
    assert record["suggestions"]["steepest"] == pytest.approx(lr, rel=5e-3)
    assert len(record["lrs"]) == len(record["losses"]) == len(record["smoothed"]) <= 60
    assert record["train_command"] == command
    # the suggested train runs with that lr (one short epoch, in-process)
    from nnscratch import api

    run = api.train(hidden=(32,), train_subset=1000, epochs=1, lr=lr, data=mnist, checkpoints=False)
    assert set(run.history["numpy"]["step_lr"]) == {lr}
    assert math.isfinite(run.history["numpy"]["step_loss"][-1])
    # the folder is a finished run of ours: replaced with --overwrite only
    again = run_cli(["lr-find", "--train-subset", "1000", "--hidden", "32", "--steps", "5", "--out", str(out)],
                    cwd=tmp_path)
    assert again.returncode == 2 and "--overwrite" in assert_one_line_error(again.stderr, again.stdout)


@pytest.mark.parametrize("args, needle", [
    (["--start-lr", "0"], "--start-lr must be a finite number > 0"),
    (["--start-lr", "1", "--end-lr", "1"], "--end-lr must be a finite number above --start-lr 1"),
    (["--steps", "1"], "--steps must be an integer >= 2"),
    (["--resume", "x"], "drop --resume"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    proc = run_cli(["lr-find", *args, "--out", str(tmp_path / "o")], cwd=tmp_path)
    assert proc.returncode == 2
    assert needle in assert_one_line_error(proc.stderr, proc.stdout)
    assert not (tmp_path / "o").exists()
