"""TensorBoard logs (issue 23, item 5): ``--tensorboard DIR`` writes a run per engine, read back
here with TensorBoard's own event reader (``EventAccumulator``), not with the code that wrote it.

The oracles: ``metrics.json``'s numbers (every step loss and rate, every epoch's figures and
gradient norms, as float32, the precision of TensorBoard's scalars); the trained model's weights
(the last weight histograms' count, sum, min and max, and the first-layer image redrawn from
them); the twin (the recorded step's gradients and outputs agree in float64); a run without the
sink (recording the arrays leaves the weights bit for bit the same).
"""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest

from helpers import assert_one_line_error, optional_import, run_python
from nnscratch.training.tensorboard_sink import first_layer_image

HIDDEN = (24,)


def _reader(folder):
    """TensorBoard's own reader of the event files in ``folder``, everything kept."""
    accumulator = optional_import("tensorboard.backend.event_processing.event_accumulator")
    acc = accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0, "images": 0,
                                                                   "tensors": 0})
    acc.Reload()
    return acc


def _values(acc, tag):
    """``(steps, values)`` of a scalar tag."""
    events = acc.Scalars(tag)
    return [e.step for e in events], [e.value for e in events]


def _f32(values):
    return np.asarray(values, dtype=np.float64).astype(np.float32).tolist()


@pytest.fixture(scope="module")
def compared(mnist, tmp_path_factory):
    """A short comparison logged to TensorBoard: 2 epochs of 10 steps, gradient flow on 2 of them."""
    optional_import("tensorboardX")
    optional_import("torch")
    from nnscratch import api

    tmp = tmp_path_factory.mktemp("tensorboard")
    run = api.compare(data=mnist, train_subset=640, epochs=2, hidden=list(HIDDEN), gradient_flow_samples=2,
                      threads=1, tensorboard=str(tmp / "tb"))
    return run, tmp / "tb"


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_the_scalars_are_metrics_json_s_numbers(compared, engine):
    run, logdir = compared
    acc = _reader(logdir / engine)
    history = run.history[engine]
    steps = len(history["step_loss"])
    per_epoch = steps // 2
    assert _values(acc, "train/step_loss") == (list(range(1, steps + 1)), _f32(history["step_loss"]))
    assert _values(acc, "train/lr") == (list(range(1, steps + 1)), _f32(history["step_lr"]))
    ends = [per_epoch, 2 * per_epoch]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_f1"):
        assert _values(acc, f"epoch/{key}") == (ends, _f32([r[key] for r in history["epochs"]])), key
    params = run.history[engine]["epochs"][0]["gradient_flow"]["params"]
    assert set(params) == {k for k in run.models[engine] if k.endswith((".weight", ".bias"))}
    for name in params:
        for stat in ("grad_norm", "update_ratio"):
            want = _f32([r["gradient_flow"]["params"][name][stat] for r in history["epochs"]])
            assert _values(acc, f"{stat}/{name}") == (ends, want), (name, stat)
    dead = [r["gradient_flow"]["layers"]["1"]["dead_fraction"] for r in history["epochs"]]
    assert _values(acc, "dead_fraction/1") == (ends, _f32(dead))


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_histograms_and_images_of_every_epoch(compared, engine):
    run, logdir = compared
    acc = _reader(logdir / engine)
    model = run.models[engine]
    params = sorted(model)  # 784-24-10: every tensor is a parameter
    expected = ({f"weights/{p}" for p in params} | {f"gradients/{p}" for p in params}
                | {"activations/0.dense", "activations/1.relu", "activations/2.dense"})
    assert set(acc.Tags()["histograms"]) == expected
    per_epoch = len(run.history[engine]["step_loss"]) // 2
    for tag in expected:
        assert [h.step for h in acc.Histograms(tag)] == [per_epoch, 2 * per_epoch], tag
    for name, weights in model.items():  # the last epoch's weights are the trained model's
        last = acc.Histograms(f"weights/{name}")[-1].histogram_value
        w = np.asarray(weights, dtype=np.float64)
        assert (last.num, last.min, last.max) == (w.size, w.min(), w.max()), name
        assert last.sum == pytest.approx(w.sum(), rel=1e-12, abs=1e-12)
        assert sum(last.bucket) == w.size
        assert acc.Histograms(f"gradients/{name}")[-1].histogram_value.num == w.size
    batch = 64  # the recorded step is a full batch of 64 (10 steps of 64 per epoch)
    for tag, width in (("activations/0.dense", HIDDEN[0]), ("activations/1.relu", HIDDEN[0]),
                       ("activations/2.dense", 10)):
        assert acc.Histograms(tag)[-1].histogram_value.num == batch * width, tag
    assert acc.Histograms("activations/1.relu")[-1].histogram_value.min >= 0.0
    images = acc.Images("first_layer/weights")
    assert [i.step for i in images] == [per_epoch, 2 * per_epoch]
    from PIL import Image

    drawn = np.asarray(Image.open(io.BytesIO(images[-1].encoded_image_string)).convert("RGB"))
    np.testing.assert_array_equal(drawn, first_layer_image(model["0.weight"], (28, 28, 1)))
    assert drawn.shape[:2] == (images[-1].height, images[-1].width)
    assert "config/text_summary" in acc.Tags()["tensors"]


def test_a_new_run_in_the_same_folder_hides_the_old_one(mnist, tmp_path, capsys):
    """Two fresh runs into one folder: TensorBoard shows the second only, and a note says why."""
    optional_import("tensorboardX")
    from nnscratch import api

    settings = dict(data=mnist, train_subset=320, hidden=[8], epochs=1, gradient_flow_samples=1, threads=1,
                    tensorboard=str(tmp_path / "tb"))
    api.train(seed=1, **settings)
    assert "earlier run" not in capsys.readouterr().err
    second = api.train(seed=2, **settings)
    assert "holds the event files of an earlier run" in capsys.readouterr().err
    acc = _reader(tmp_path / "tb" / "numpy")
    assert _values(acc, "train/step_loss") == (list(range(1, 6)), _f32(second.history["numpy"]["step_loss"]))
    assert len(acc.Histograms("weights/0.weight")) == len(acc.Images("first_layer/weights")) == 1


def test_a_resumed_run_replaces_only_the_steps_after_its_checkpoint(tmp_path):
    """A run logged to step 8, then resumed from its step-5 checkpoint (``RunStart.start_step``):
    TensorBoard reads steps 1-5 of the first and 6-10 of the second, as one curve."""
    optional_import("tensorboardX")
    from nnscratch.model.spec import mlp_spec
    from nnscratch.training.events import EpochEnd, RunEnd, RunStart, StepEnd
    from nnscratch.training.tensorboard_sink import TensorBoardWriter

    def log(start, last, loss):
        writer = TensorBoardWriter(tmp_path / "tb", mlp_spec(4, (3,), 2))
        writer(RunStart("numpy", {}, 2, 5, 8, 40, start // 5, start))
        for k in range(start + 1, last + 1):
            writer(StepEnd("numpy", k, (k - 1) // 5 + 1, loss(k), 0.1, 8))
            if k % 5 == 0:
                writer(EpochEnd("numpy", {"epoch": k // 5, "train_loss": loss(k), "val_loss": 2 * loss(k)}))
        writer(RunEnd("numpy", "interrupted", last // 5, last))

    log(0, 8, lambda k: 1.0 / k)
    log(5, 10, lambda k: 100.0 + k)
    acc = _reader(tmp_path / "tb" / "numpy")
    assert _values(acc, "train/step_loss") == (list(range(1, 11)), _f32([1.0 / k for k in range(1, 6)]
                                                                          + [100.0 + k for k in range(6, 11)]))
    assert _values(acc, "epoch/val_loss") == ([5, 10], _f32([0.4, 220.0]))


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_the_arrays_leave_the_weights_alone_and_reach_only_the_sinks_that_want_them(engine):
    """A trainer with an arrays sink against one without: the same weights bit for bit; the plain
    sink never hears EpochArrays; the gradients handed over are the ones whose norm was recorded."""
    if engine == "torch":
        optional_import("torch")
    from nnscratch.engines import make_engine
    from nnscratch.model.registry import dropout_layers, initial_state
    from nnscratch.model.spec import mlp_spec
    from nnscratch.training.streams import init_rng
    from nnscratch.training.trainer import Trainer

    spec = mlp_spec(12, (10,), 3, "relu", dropout=0.2)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((50, 12)).astype(np.float32), rng.integers(0, 3, 50)

    class Arrays(list):  # a sink that asks for EpochArrays
        wants_arrays = True

        def __call__(self, event):
            self.append(event)

    def trainer(sinks):
        engine_ = make_engine(engine, spec, initial_state(spec, init_rng(3)), np.float32, device="cpu")
        return Trainer(engine_, (x, y), (x[:10], y[:10]), seed=0, epochs=2, batch_size=16, num_classes=3,
                       schedule=0.1, dropout=dropout_layers(spec), sinks=sinks, gradient_flow=1)

    plain_events, arrays = [], Arrays()
    with_arrays = trainer([plain_events.append, arrays])
    with_arrays.run()
    without = trainer([])
    without.run()
    for k, v in without.engine.state().items():
        np.testing.assert_array_equal(with_arrays.engine.state()[k], v, err_msg=k)
    assert "epoch_arrays" not in {e.kind for e in plain_events}
    arrays = [e for e in arrays if e.kind == "epoch_arrays"]
    flows = [e for e in plain_events if e.kind == "gradient_flow"]
    assert [a.epoch for a in arrays] == [1, 2] and [a.step for a in arrays] == [f.steps[-1] for f in flows]
    for event, flow in zip(arrays, flows):
        assert set(event.gradients) == set(flow.params) and list(event.outputs) == ["0", "1", "2", "3"]
        for name, grad in event.gradients.items():
            assert np.linalg.norm(grad.astype(np.float64)) == pytest.approx(flow.params[name]["grad_norm"], rel=1e-5)
        assert event.outputs["3"].shape == (16, 3)
    np.testing.assert_array_equal(arrays[-1].weights["0.weight"], without.engine.state_dict()["0.weight"])


def test_the_twins_hand_over_the_same_arrays_in_float64():
    optional_import("torch")
    from nnscratch.engines import make_engine
    from nnscratch.model.registry import initial_state
    from nnscratch.model.spec import mlp_spec
    from nnscratch.training.streams import init_rng

    spec = mlp_spec(12, (10, 8), 3, "gelu", batch_norm=True)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((20, 12)), rng.integers(0, 3, 20)
    records = [make_engine(name, spec, initial_state(spec, init_rng(2)), np.float64, device="cpu",
                           optimizer="adam").train_step_recorded(x, y, 0.01, None, arrays=True)["arrays"]
               for name in ("numpy", "torch")]
    ours, theirs = records
    assert ours["gradients"].keys() == theirs["gradients"].keys() and ours["outputs"].keys() == theirs["outputs"].keys()
    for part in ("gradients", "outputs"):
        for name, value in theirs[part].items():
            np.testing.assert_allclose(ours[part][name], value, rtol=1e-10, atol=1e-13, err_msg=f"{part} {name}")


def test_the_numpy_engine_logs_where_torch_cannot_be_imported(tmp_path):
    """``nnscratch train --engine numpy --tensorboard D`` in a process where ``import torch`` fails."""
    optional_import("tensorboardX")
    code = ("import sys; sys.modules['torch'] = None\n"
            "from nnscratch.cli.main import main\n"
            "code = main(sys.argv[1:])\n"
            "assert sys.modules['torch'] is None, 'torch was imported'\n"
            "raise SystemExit(code)\n")
    args = ["train", "--engine", "numpy", "--train-subset", "200", "--epochs", "1", "--hidden", "8",
            "--gradient-flow-samples", "1", "--threads", "1", "--quiet", "--out", str(tmp_path / "run"),
            "--tensorboard", str(tmp_path / "tb")]
    proc = run_python(code, args, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "tb" / "torch").exists()
    acc = _reader(tmp_path / "tb" / "numpy")
    assert _values(acc, "train/step_loss")[0] == [1, 2, 3, 4]
    assert len(acc.Histograms("gradients/0.weight")) == 1
    assert not any((tmp_path / "run").rglob("*tfevents*"))  # the logs went to DIR, not the run folder


def test_without_tensorboardx_the_flag_is_one_line_naming_the_extra(monkeypatch, tmp_path, capsys):
    from nnscratch.cli.main import main

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import tensorboardX now raises ImportError
    code = main(["train", "--tensorboard", str(tmp_path / "tb"), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2
    captured = capsys.readouterr()
    line = assert_one_line_error(captured.err, captured.out)
    assert "tensorboardX" in line and "pip install 'nnscratch[tensorboard]'" in line
    assert not (tmp_path / "tb").exists() and not (tmp_path / "run").exists()
