"""Gradient flow (issue 22, item 2): per-layer gradient, update and activation statistics on a few
sampled steps of every epoch.

The oracles: torch's autograd and its own tensor operations, computed here from a hand-built
``nn.Sequential`` (not the twin's code); the twin itself, number for number in float64; the plain
step (a recorded step must leave bit-identical weights); the uninterrupted run (a resumed one must
end with the same gradient flow).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import optional_import
from nnscratch.engines import make_engine
from nnscratch.files.checkpoint import position_problem
from nnscratch.model.registry import dropout_layers, initial_state
from nnscratch.model.spec import mlp_spec
from nnscratch.training.gradient_flow import LAYER_STATS, PARAMETER_STATS, mean_of_samples, sampled_positions
from nnscratch.training.streams import dropout_keeps, init_rng
from nnscratch.training.trainer import Trainer

N, D, C = 24, 20, 5


def _batch(seed=0, n=N):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, D)), rng.integers(0, C, n).astype(np.int64)


def _close(ours: float, theirs: float, what: str, rtol=1e-10, atol=1e-13) -> None:
    if np.isinf(theirs):  # the update ratio of a parameter that starts at 0 (a bias at step 1)
        assert ours == theirs, f"{what}: {ours!r} vs {theirs!r}"
        return
    assert abs(ours - theirs) <= rtol * abs(theirs) + atol, f"{what}: {ours!r} vs {theirs!r}"


# ----------------------------------------------------------------------------------- sampling


def test_sampled_positions_are_the_middles_of_equal_parts():
    # the seed run's 782 steps: (2j + 1) * 782 // 8
    assert sorted(sampled_positions(782, 4)) == [97, 293, 488, 684]
    assert sorted(sampled_positions(10, 4)) == [1, 3, 6, 8]
    assert sorted(sampled_positions(3, 4)) == [0, 1, 2]          # a short epoch: every step
    assert sampled_positions(782, 0) == frozenset()


def test_the_epoch_figure_is_the_mean_of_its_samples():
    samples = [{"step": k, "params": {"0.weight": {"grad_norm": v, "update_ratio": 2 * v}},
                "layers": {"1": {"kind": "relu", "mean": v, "std": 1.0, "dead_fraction": v / 10}}}
               for k, v in ((3, 1.0), (7, 2.0), (9, 6.0))]
    flow = mean_of_samples(samples)
    assert flow["steps"] == [3, 7, 9]
    assert flow["params"]["0.weight"] == {"grad_norm": 3.0, "update_ratio": 6.0}
    assert flow["layers"]["1"] == {"kind": "relu", "mean": 3.0, "std": 1.0, "dead_fraction": 0.3}


# ------------------------------------------------------------------------- the same step, measured

SPECS = {
    "relu-dropout": mlp_spec(D, (16, 12), C, "relu", dropout=0.25),
    "leaky-batch-norm": mlp_spec(D, (16, 12), C, "leaky_relu", dropout=0.2, batch_norm=True),
}
#: optimizer settings (the first is plain SGD: the fused path, which never forms dW)
SETTINGS = {
    "sgd": dict(optimizer="sgd"),
    "sgd-momentum": dict(optimizer="sgd", optimizer_options={"momentum": 0.9, "nesterov": True}),
    "adam-l2-clip": dict(optimizer="adam", optimizer_options={}, l2=1e-3, clip_grad_norm=0.5),
}


def _masks(spec, step, n=N):
    layers = dropout_layers(spec)
    return dropout_keeps(11, 0, step, layers, n) if layers else None


def _initial(spec, kill=True):
    """The spec's initial state, with units made dead: 3 units of the first ReLU-family layer get
    an input far below 0 for every sample (through the first dense bias, or batch norm's beta)."""
    state = initial_state(spec, init_rng(1))
    if kill:
        key = "1.bias" if spec.layers[1].kind == "batch_norm" else "0.bias"
        state[key][:3] = -40.0
    return state


@pytest.mark.parametrize("engine", ["numpy", "torch", "jit"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_a_recorded_step_leaves_bit_identical_weights(engine, setting):
    """Steps 0..3 plain, against the same with step 1 recorded: every weight, buffer, optimizer
    state and loss is the same, bit for bit (the fused SGD path included: it keeps dW besides)."""
    if engine == "torch":
        optional_import("torch")
    if engine == "jit":
        optional_import("numba")
    spec = SPECS["leaky-batch-norm"] if setting == "adam-l2-clip" else SPECS["relu-dropout"]
    options = dict(SETTINGS[setting], **({"jit": True} if engine == "jit" else {}))
    name = "torch" if engine == "torch" else "numpy"
    plain, recorded = (make_engine(name, spec, _initial(spec), np.float32, device="cpu", **options) for _ in range(2))
    if name == "numpy" and setting == "sgd":
        assert recorded.fused  # the path that never stores dW
    for s in range(4):
        x, y = _batch(s)
        x = x.astype(np.float32)
        plain.train_step(x, y, 0.05, _masks(spec, s))
        if s == 1:
            record = recorded.train_step_recorded(x, y, 0.05, _masks(spec, s))
            assert set(record["params"]) == {n for n in plain.state_dict() if n.endswith((".weight", ".bias"))}
        else:
            recorded.train_step(x, y, 0.05, _masks(spec, s))
    a, b = plain.state(), recorded.state()
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)
    assert plain.take_epoch_stats()[0].tolist() == recorded.take_epoch_stats()[0].tolist()


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("spec_name", list(SPECS))
def test_the_twins_statistics_agree_in_float64(spec_name, setting):
    """The NumPy engine and the torch twin, from the same weights, batches and masks: after two
    plain steps (so momentum and Adam have state), a recorded one; every number agrees to 1e-10."""
    optional_import("torch")
    spec = SPECS[spec_name]
    engines = [make_engine(e, spec, _initial(spec), np.float64, device="cpu", **SETTINGS[setting])
               for e in ("numpy", "torch")]
    records = []
    for engine in engines:
        for s in range(2):
            engine.train_step(*_batch(s), 0.05, _masks(spec, s))
        records.append(engine.train_step_recorded(*_batch(2), 0.05, _masks(spec, 2)))
    ours, theirs = records
    assert ours.keys() == theirs.keys() and ours["params"].keys() == theirs["params"].keys()
    assert list(ours["layers"]) == [str(i) for i in range(len(spec.layers))] == list(theirs["layers"])
    for name, stats in theirs["params"].items():
        assert tuple(stats) == PARAMETER_STATS
        for stat, value in stats.items():
            _close(ours["params"][name][stat], value, f"{name} {stat}")
    for name, stats in theirs["layers"].items():
        assert ours["layers"][name]["kind"] == stats["kind"] == spec.layers[int(name)].kind
        assert ("dead_fraction" in stats) == (stats["kind"] in ("relu", "leaky_relu"))
        for stat in LAYER_STATS:
            if stat in stats:
                _close(ours["layers"][name][stat], stats[stat], f"layer {name} {stat}")


def test_frozen_layers_have_no_gradient_flow_but_their_outputs_are_measured():
    """``freeze=1``: the first dense layer gets no statistics of its own (no gradient, no update),
    in both twins alike; every layer's output is measured, and the twins agree in float64."""
    optional_import("torch")
    spec = SPECS["relu-dropout"]
    records = []
    for name in ("numpy", "torch"):
        engine = make_engine(name, spec, _initial(spec), np.float64, device="cpu", optimizer="sgd", freeze=1)
        records.append(engine.train_step_recorded(*_batch(0), 0.05, _masks(spec, 0)))
    ours, theirs = records
    assert list(ours["params"]) == list(theirs["params"]) == ["3.weight", "3.bias", "6.weight", "6.bias"]
    assert list(ours["layers"]) == [str(i) for i in range(len(spec.layers))]
    for name, stats in theirs["params"].items():
        for stat, value in stats.items():
            _close(ours["params"][name][stat], value, f"{name} {stat}")
    assert ours["params"]["3.bias"]["update_ratio"] == np.inf  # a bias that starts at 0 moved
    assert ours["layers"]["1"]["dead_fraction"] == theirs["layers"]["1"]["dead_fraction"] == 3 / 16


def _oracle_model(torch, spec, state):
    """A plain ``nn.Sequential`` for ``spec``, built here by hand, loaded with ``state``."""
    nn = torch.nn

    class MaskDropout(nn.Module):  # dropout with the loop's mask: x * keep / (1 - p)
        def __init__(self, p):
            super().__init__()
            self.p, self.keep = p, None

        def forward(self, x):
            return x * self.keep / (1 - self.p)

    modules, width = [], spec.input_dim
    for layer in spec.layers:
        a = layer.args
        if layer.kind == "dense":
            modules.append(nn.Linear(width, a["out_features"], bias=a["bias"]))
            width = a["out_features"]
        else:
            modules.append({"relu": lambda: nn.ReLU(), "leaky_relu": lambda: nn.LeakyReLU(a.get("negative_slope")),
                            "batch_norm": lambda: nn.BatchNorm1d(width),
                            "dropout": lambda: MaskDropout(a.get("p"))}[layer.kind]())
    model = nn.Sequential(*modules).double()
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return model


def _oracle_step(torch, model, opt, spec, x, y, masks, l2=0.0, clip=None, record=False):
    """One step of the hand-built model, and (``record``) the statistics straight from torch."""
    for i, keep in (masks or {}).items():
        model[i].keep = torch.from_numpy(keep).double()
    h, layers = torch.from_numpy(x), {}
    for i, module in enumerate(model):
        dead = (h <= 0).all(dim=0).double().mean().item() if spec.layers[i].kind in ("relu", "leaky_relu") else None
        h = module(h)
        layers[str(i)] = {"mean": h.mean().item(), "std": h.std(correction=0).item(),
                          **({} if dead is None else {"dead_fraction": dead})}
    loss = torch.nn.functional.cross_entropy(h, torch.from_numpy(y))
    if l2:
        loss = loss + l2 * sum(p.pow(2).sum() for p in model.parameters())
    opt.zero_grad()
    loss.backward()
    norm = torch.linalg.vector_norm
    params = {n: {"grad_norm": norm(p.grad).item(), "grad_mean_abs": p.grad.abs().mean().item(),
                  "grad_max_abs": p.grad.abs().max().item()} for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    for n, p in model.named_parameters():
        update = norm(p.detach() - before[n]) / norm(before[n])
        params[n].update(weight_norm=norm(before[n]).item(), update_ratio=update.item())
    return {"params": params, "layers": layers} if record else None


@pytest.mark.parametrize("case", [("relu-dropout", "sgd"), ("leaky-batch-norm", "adam-l2-clip")])
def test_the_statistics_equal_torch_autograds_own(case):
    """The NumPy engine's recorded statistics against torch computing each quantity itself, from
    autograd's ``.grad``, the modules' outputs and ``torch.optim``'s update (float64): plain SGD
    (the fused path) with dropout, and Adam with an L2 penalty, active clipping and batch norm.
    Dead units are made (3 of 16 in the first ReLU-family layer) so that the fraction is not 0."""
    torch = optional_import("torch")
    spec_name, setting = case
    spec, options = SPECS[spec_name], SETTINGS[setting]
    state = _initial(spec)
    ours = make_engine("numpy", spec, state, np.float64, **options)
    model = _oracle_model(torch, spec, state)
    opt = (torch.optim.Adam(model.parameters(), lr=0.05) if options["optimizer"] == "adam"
           else torch.optim.SGD(model.parameters(), lr=0.05))
    extra = {"l2": options.get("l2", 0.0), "clip": options.get("clip_grad_norm")}
    for s in range(2):
        ours.train_step(*_batch(s), 0.05, _masks(spec, s))
        _oracle_step(torch, model, opt, spec, *_batch(s), _masks(spec, s), **extra)
    record = ours.train_step_recorded(*_batch(2), 0.05, _masks(spec, 2))
    oracle = _oracle_step(torch, model, opt, spec, *_batch(2), _masks(spec, 2), record=True, **extra)
    if setting == "adam-l2-clip":  # clipping was active: the recorded gradient is the one before it
        assert np.sqrt(sum(v["grad_norm"] ** 2 for v in oracle["params"].values())) > 0.5
    assert record["params"].keys() == oracle["params"].keys()
    for name, stats in oracle["params"].items():
        for stat, value in stats.items():
            _close(record["params"][name][stat], value, f"{name} {stat}")
    first_dead = str(next(i for i, layer in enumerate(spec.layers) if layer.kind in ("relu", "leaky_relu")))
    assert record["layers"][first_dead]["dead_fraction"] == oracle["layers"][first_dead]["dead_fraction"] >= 3 / 16
    for name, stats in oracle["layers"].items():
        assert record["layers"][name].keys() - {"kind"} == stats.keys()
        for stat, value in stats.items():
            _close(record["layers"][name][stat], value, f"layer {name} {stat}")


# ------------------------------------------------------------------------------ the trainer


def _trainer_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((260, D)).astype(np.float32)
    y = x[:, :C].argmax(axis=1).astype(np.int64)
    return (x[:200], y[:200]), (x[200:], y[200:])


def _trainer(engine_name, sinks=(), **kw):
    spec = SPECS["relu-dropout"]
    engine = make_engine(engine_name, spec, _initial(spec, kill=False), np.float32, device="cpu",
                         optimizer="sgd", optimizer_options={"momentum": 0.9})
    train, val = _trainer_data()
    return Trainer(engine, train, val, seed=5, epochs=3, batch_size=32, num_classes=C, schedule=0.05,
                   dropout=dropout_layers(spec), sinks=sinks, gradient_flow=4, **kw)


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_a_run_stopped_mid_epoch_and_resumed_ends_with_the_same_gradient_flow(engine):
    """7 steps per epoch, sampled at 0, 2, 4, 6; stopped after step 10 (the 3rd of epoch 2: two of
    its samples taken), its state through JSON as a checkpoint carries it, resumed: the same
    gradient flow in every epoch and the same weights as the run never stopped."""
    if engine == "torch":
        optional_import("torch")
    from nnscratch.errors import RunInterrupted

    events = []
    full = _trainer(engine, [events.append])
    full.run()
    flows = [e for e in events if e.kind == "gradient_flow"]
    assert [f.steps for f in flows] == [[1, 3, 5, 7], [8, 10, 12, 14], [15, 17, 19, 21]]
    kinds = [e.kind for e in events]
    assert kinds.index("gradient_flow") < kinds.index("evaluation") < kinds.index("epoch_end")

    first = _trainer(engine, loss_block=1)
    first.sinks.append(lambda e: e.kind == "step_end" and e.step == 10 and first.request_stop(2))
    with pytest.raises(RunInterrupted):
        first.run()
    tensors, meta = first.state()
    assert [s["step"] for s in meta["gradient_flow"]] == [8, 10]
    second = _trainer(engine)
    second.load_state(tensors, json.loads(json.dumps(meta)))
    second.run()
    records = [r.gradient_flow for r in second.history.epochs]
    assert records == [r.gradient_flow for r in full.history.epochs]
    assert [r["steps"] for r in records] == [f.steps for f in flows]
    for k, v in full.engine.state().items():
        np.testing.assert_array_equal(second.engine.state()[k], v, err_msg=k)


def test_older_checkpoints_without_gradient_flow_still_fit():
    record = {"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5,
              "val_f1": 0.5, "time_s": 1.0}
    trainer = {"epoch": 1, "step_in_epoch": 0, "step": 4, "epochs": 2, "steps_per_epoch": 4, "batch_size": 8,
               "train_size": 32, "epoch_correct": 0, "finished": None, "history": {"epochs": [record]}}
    entries = {k: np.zeros(4) for k in ("trainer.step_loss", "trainer.step_lr")} | {"engine.steps": np.array(4)}
    assert position_problem(trainer, entries) is None                      # written before gradient flow
    with_flow = {**trainer, "history": {"epochs": [{**record, "gradient_flow": {"steps": [2]}}]}, "gradient_flow": []}
    assert position_problem(with_flow, entries) is None
    assert "epoch records" in position_problem({**trainer, "history": {"epochs": [{**record, "other": 1}]}}, entries)
    from nnscratch.training.loop import EpochRecord, record_dict

    assert EpochRecord(**record).gradient_flow is None and record_dict(EpochRecord(**record)) == record


# ------------------------------------------------------------------------ the run and its files


@pytest.mark.parametrize("on", [True, False])
def test_metrics_jsonl_and_the_figure_hold_the_gradient_flow_of_every_epoch(mnist, tmp_path, on):
    """On (the default): every epoch's gradient flow in metrics.json, metrics.jsonl, the figure and
    report.md; off (``gradient_flow=False``): none of it anywhere."""
    from nnscratch import api
    from nnscratch.training.sinks import read_jsonl

    out = tmp_path / "run"
    run = api.train(engine="numpy", out=out, data=mnist, train_subset=640, val_size=200, epochs=2 if on else 1,
                    hidden=[16], **({} if on else {"gradient_flow": False}))
    history = json.loads((out / "metrics.json").read_text())["engines"]["numpy"]["history"]
    lines = [e for e in read_jsonl(out / "metrics.jsonl") if e["kind"] == "gradient_flow"]
    report, figure = (out / "report.md").read_text(), out / "numpy_gradient_flow.png"
    if not on:
        assert all("gradient_flow" not in h for h in history) and not figure.exists()
        assert not lines and "gradient_flow.png" not in report
        return
    # 10 steps per epoch, sampled at positions 1, 3, 6, 8
    assert [h["gradient_flow"]["steps"] for h in history] == [[2, 4, 7, 9], [12, 14, 17, 19]]
    for h in history:
        flow = h["gradient_flow"]
        assert list(flow["params"]) == ["0.weight", "0.bias", "2.weight", "2.bias"]
        assert {n: e["kind"] for n, e in flow["layers"].items()} == {"0": "dense", "1": "relu", "2": "dense"}
        assert 0.0 <= flow["layers"]["1"]["dead_fraction"] < 1.0 and flow["params"]["0.weight"]["grad_norm"] > 0
    assert [{k: e[k] for k in ("epoch", "steps", "params", "layers")} for e in lines] == \
        [{"epoch": h["epoch"], **h["gradient_flow"]} for h in history]
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "](numpy_gradient_flow.png)" in report
    assert run.history["numpy"]["epochs"] == history


def test_a_comparison_gives_both_twins_the_same_gradient_flow_in_float64(mnist):
    """Through a whole run (two epochs, the loop's batches and the run's settings), in memory."""
    optional_import("torch")
    from nnscratch import api

    run = api.compare(data=mnist, train_subset=640, val_size=200, epochs=2, hidden=[16], dtype="float64")
    for ours, theirs in zip(*(run.history[e]["epochs"] for e in ("numpy", "torch")), strict=True):
        a, b = ours["gradient_flow"], theirs["gradient_flow"]
        assert a["steps"] == b["steps"] and a["params"].keys() == b["params"].keys()
        for name, stats in b["params"].items():
            for stat, value in stats.items():
                _close(a["params"][name][stat], value, f"{name} {stat}", rtol=1e-9)
        for name, stats in b["layers"].items():
            for stat in LAYER_STATS:
                if stat in stats:
                    _close(a["layers"][name][stat], stats[stat], f"layer {name} {stat}", rtol=1e-9, atol=1e-12)


def test_the_figure_of_a_net_without_relu_an_epoch_without_samples_and_a_diverged_run(tmp_path):
    """Drawn without a warning (a warning would reach the user as a line on stderr), also for a
    single epoch whose figures are all one number, a diverged run (no finite value: the log axes
    used to fail the whole report) and norms from 1e-300 to 1e300."""
    import warnings

    from nnscratch.report.plots import plot_gradient_flow

    def flow(v):
        return {"steps": [1, 2], "params": {f"{i}.weight": {"grad_norm": v * 10 ** -i, "update_ratio": 1e-3}
                                            for i in (0, 2, 4)},
                "layers": {str(i): {"kind": "dense" if i % 2 == 0 else "sigmoid", "mean": 0.5, "std": 0.1 * v}
                           for i in range(5)}}

    history = [{"epoch": 1, "gradient_flow": flow(1.0)}, {"epoch": 2}, {"epoch": 3, "gradient_flow": flow(2.0)}]
    single = {"0.weight": {"grad_norm": 1.0, "update_ratio": 1e-3}}  # every figure one number
    one = [{"epoch": 1, "gradient_flow": {**flow(1.0), "params": single}}]
    # a diverged run (--lr 1e30): every norm NaN or infinite, or spanning the whole float range
    diverged = [{"epoch": e, "gradient_flow": {**flow(float("nan")), "params": {
        "0.weight": {"grad_norm": float("nan"), "update_ratio": None},
        "2.weight": {"grad_norm": float("inf"), "update_ratio": float("nan")}}}} for e in (1, 2)]
    extreme = [{"epoch": 1, "gradient_flow": {**flow(1.0), "params": {
        "0.weight": {"grad_norm": 1e-300, "update_ratio": 1e300}, "2.weight": {"grad_norm": 1e300, "update_ratio": 0.0}}}}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for k, h in enumerate((history, one, diverged, extreme)):
            path = plot_gradient_flow(h, tmp_path / f"gf{k}.png", "numpy", dataset="MNIST")
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_flags_switch_it_off_and_set_the_samples():
    from nnscratch.cli.main import _config_from, build_parser

    args = build_parser().parse_args(["train", "--no-gradient-flow", "--gradient-flow-samples", "2"])
    cfg = _config_from(args, ("numpy",))
    assert cfg.gradient_flow is False and cfg.gradient_flow_samples == 2
    assert _config_from(build_parser().parse_args(["train"]), ("numpy",)).gradient_flow is True
