"""The gradient check (``nnscratch.analysis.gradcheck``, ``nnscratch gradcheck``) and ``nnscratch step``.

What is proved here:

* every built-in layer kind passes :func:`check_layer`, and a network with every option (batch
  norm in training mode, dropout with a fixed mask, label smoothing, L1, L2) passes the CLI;
* the check is not blind: a ReLU whose backward forgets its mask, written to a file as a student
  would, fails ``--layer`` (exit 1, naming it), and the same mistake inside a network is named at
  the layer that has it (the first failing ``dx`` from the output);
* ``--layer`` on a correct Swish passes and is compared with ``torch.nn.SiLU``;
* ``step``'s numbers (read back from ``--json``) are the engine's own (they equal
  ``NumpyEngine.train_step``'s new weights) and torch autograd's, computed here independently;
  its formulas are word for word those of the docstrings;
* bad input is one line, exit 2.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from helpers import assert_one_line_error, optional_import, rel_error, run_cli
from nnscratch.analysis import gradcheck as gc
from nnscratch.analysis import step
from nnscratch.model.registry import LAYER_KINDS
from nnscratch.model.spec import LayerSpec, ModelSpec, mlp_spec

BROKEN_RELU = '''
from nnscratch.numpy_engine.layers import ReLU

TORCH_MODULE = "torch.nn.ReLU"


class ForgetfulReLU(ReLU):
    """ReLU whose backward forgets the mask: dx = dout (wrong where x <= 0)."""

    def backward(self, dout, need_dx=True):
        return dout
'''


@pytest.mark.parametrize("kind", sorted(LAYER_KINDS))
def test_every_built_in_layer_kind_passes_check_layer(kind):
    rng = np.random.default_rng(1)
    entry = LAYER_KINDS[kind]
    args = {**entry.defaults, **({"out_features": 5} if kind == "dense" else {})}
    layer = entry.numpy_class(6, dtype=np.float64, **args)
    for p in layer.params.values():
        p[...] = rng.normal(size=p.shape)
    x = rng.normal(size=(7, 6))
    x = np.where(np.abs(x) < 1e-3, 0.1, x)  # ReLU-like kinks: no entry within h of 0
    if kind == "dropout":
        layer.set_keep(rng.random(x.shape) >= 0.5)
    checks = gc.check_layer(layer, x, rng=rng, name=kind)
    assert [c.name for c in checks] == ["dx", *layer.params]
    for c in checks:
        assert c.passed(), gc.format_table(checks)


def test_check_layer_sees_a_gradient_the_backward_never_gives():
    from nnscratch.numpy_engine.layers import Dense

    class NoBias(Dense):
        def backward(self, dout, need_dx=True):
            dx = dout @ self.params["weight"]
            self.sink.put("weight", dout.T @ self._x)
            return dx

    rng = np.random.default_rng(2)
    layer = NoBias(4, dtype=np.float64, out_features=3)
    layer.params["weight"][...] = rng.normal(size=(3, 4))
    checks = {c.name: c for c in gc.check_layer(layer, rng.normal(size=(5, 4)), rng=rng)}
    assert checks["dx"].passed() and checks["weight"].passed()
    assert not checks["bias"].passed() and "not finite" in checks["bias"].note


def test_a_network_with_every_option_passes_and_a_broken_layer_is_named(monkeypatch):
    rng = np.random.default_rng(3)
    spec = mlp_spec(6, (5, 4), 3, "gelu", 0.3, True)
    x, y = rng.normal(size=(6, 6)), rng.integers(0, 3, size=6)
    checks = gc.check_network(spec, x, y, label_smoothing=0.1, l1=1e-3, l2=1e-2, rng=np.random.default_rng(0))
    kinds = {c.layer.split()[-1] for c in checks}
    assert {"loss", "dense", "batch_norm", "gelu", "dropout"} <= kinds
    assert all(c.passed() for c in checks), gc.format_table(checks)
    # the same network with the first GELU's backward forgetting its slope: named at that layer
    from nnscratch.numpy_engine import layers

    monkeypatch.setattr(layers._Elementwise, "backward", lambda self, dout, need_dx=True: dout)
    checks = gc.check_network(spec, x, y, label_smoothing=0.1, l1=1e-3, l2=1e-2, rng=np.random.default_rng(0))
    first_failing_dx = next(c for c in checks if c.name == "dx" and not c.passed())
    assert first_failing_dx.layer == "6 gelu"


def test_a_large_tensor_is_checked_on_a_random_sample_of_its_entries(monkeypatch):
    """``max_entries``: a tensor with more entries is checked on that many, drawn at random; the
    sampled row's worst entry is an index of the whole tensor, and a wrong gradient still fails."""
    rng = np.random.default_rng(5)
    spec = mlp_spec(10, (30,), 3)
    x, y = rng.normal(size=(4, 10)), rng.integers(0, 3, size=4)
    full = {(c.layer, c.name): c for c in gc.check_network(spec, x, y, rng=np.random.default_rng(0))}
    sampled = gc.check_network(spec, x, y, rng=np.random.default_rng(0), max_entries=30)
    assert [(c.layer, c.name) for c in sampled] == list(full)
    weight = next(c for c in sampled if c.name == "weight" and c.layer == "0 dense")
    assert weight.note == "30 of 300 entries, at random" and weight.shape == (30, 10) and weight.passed()
    assert len(weight.worst) == 2 and weight.worst[0] < 30 and weight.worst[1] < 10  # (row, column) of W
    bias = next(c for c in sampled if c.name == "bias" and c.layer == "0 dense")
    assert bias.note == "" and bias.error == full[("0 dense", "bias")].error  # 30 entries: all of them
    # a dense backward whose weight gradient is off by 1 %: caught on the sample too
    from nnscratch.numpy_engine import layers

    original = layers.Dense.backward

    def off(self, dout, need_dx=True):
        dx = original(self, dout, need_dx)
        self.grads["weight"] *= 1.01
        return dx
    monkeypatch.setattr(layers.Dense, "backward", off)
    broken = gc.check_network(spec, x, y, rng=np.random.default_rng(0), max_entries=30)
    assert not next(c for c in broken if c.name == "weight" and c.layer == "0 dense").passed()


def test_cli_network_with_every_option_passes(tmp_path):
    config = tmp_path / "net.toml"
    config.write_text("hidden = [16, 8]\nactivation = 'tanh'\nl2 = 0.01\n")
    proc = run_cli(["gradcheck", "--config", str(config), "--batch-norm", "--dropout", "0.2",
                    "--label-smoothing", "0.1", "--l1", "0.001", "--input-dropout", "0.3"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "12-16-8-4 (input dropout 0.3, batch norm, tanh, dropout 0.2)" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.endswith(" ok")]
    assert {r.split()[1] for r in rows} >= {"dense", "batch_norm", "tanh", "dropout"}
    assert any(r.split()[:3] == ["0", "dropout", "dx"] for r in rows)  # the input dropout's own backward
    assert "FAIL" not in proc.stdout and "all 19 gradients within --tol 1e-06" in proc.stdout


def test_cli_layer_fails_on_a_backward_that_forgets_the_mask(tmp_path):
    (tmp_path / "my_relu.py").write_text(BROKEN_RELU)
    proc = run_cli(["gradcheck", "--layer", "my_relu.py:ForgetfulReLU"], cwd=tmp_path)
    assert proc.returncode == 1
    line = assert_one_line_error(proc.stderr, proc.stdout)
    assert "gradient check failed: ForgetfulReLU dx" in line and "> --tol 1e-06" in line
    assert re.search(r"^ForgetfulReLU\s+dx\s+8x12\s+\S+.*FAIL$", proc.stdout, re.M), proc.stdout


def test_cli_layer_passes_swish_and_compares_with_torch(tmp_path):
    optional_import("torch")
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "swish_layer.py"
    proc = run_cli(["gradcheck", "--layer", f"{example}:Swish"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "against torch autograd (torch.nn.modules.activation.SiLU)" in proc.stdout
    torch_rows = [line for line in proc.stdout.splitlines() if line.startswith("Swish vs torch")]
    assert [r.split()[3] for r in torch_rows] == ["y", "dx"]
    assert all(float(r.split()[5]) < 1e-12 and r.endswith("ok") for r in torch_rows)


@pytest.mark.parametrize("args,needle", [
    (["--layer", "missing.py:Swish"], "missing.py does not exist"),
    (["--layer", "mine.py:Nope"], "mine.py has no class 'Nope'"),
    (["--layer", "mine.py:np"], "mine.py has no class 'np'"),
    (["--layer", "mine.py:NotALayer"], "is not a subclass of nnscratch.numpy_engine.layers.Layer"),
    (["--layer", "broken.py:X"], "broken.py could not be imported: ZeroDivisionError: division by zero (broken.py, line 2)"),
    (["--layer", "mine.py"], "--layer takes FILE.py:CLASS"),
    (["--layer", "mine.py:Boom"], "Boom raised RuntimeError: no (mine.py, line"),
    (["--layer", "mine.py:Boom", "--hidden", "4"], "drop --hidden"),
    (["--tol", "0"], "--tol must be a number > 0"),
    (["--batch-norm", "--batch", "1"], "--batch-norm needs batches of at least 2"),
])
def test_gradcheck_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    (tmp_path / "mine.py").write_text("from nnscratch.numpy_engine.layers import ReLU\n\nclass NotALayer:\n    pass\n\n"
                                      "class Boom(ReLU):\n    def forward(self, x, train=True):\n"
                                      "        raise RuntimeError('no')\n")
    (tmp_path / "broken.py").write_text("x = 1\ny = 1 / 0\n")
    proc = run_cli(["gradcheck", *args], cwd=tmp_path)
    assert proc.returncode == 2
    assert needle in assert_one_line_error(proc.stderr, proc.stdout)


# ----------------------------------------------------------------------------- step


def _normalised(text: str) -> str:
    return " ".join(text.split())


def test_step_formulas_are_the_docstrings_own():
    from nnscratch.numpy_engine import layers, losses, optimizers

    classes = {"dense": layers.Dense, "relu": layers.ReLU, "leaky_relu": layers.LeakyReLU, "elu": layers.ELU,
               "gelu": layers.GELU, "gelu_tanh": layers.GELU, "tanh": layers.Tanh, "sigmoid": layers.Sigmoid}
    assert set(step.FORWARD) == set(step.BACKWARD) == set(classes)
    for kind, cls in classes.items():
        doc = _normalised(cls.__doc__)
        assert _normalised(step.FORWARD[kind]) in doc, kind
        assert _normalised(step.BACKWARD[kind]) in doc, kind
        for _, formula in step.PARAMETER_GRADIENTS.get(kind, {}).values():
            assert _normalised(formula) in doc
    loss_doc = _normalised(losses.SoftmaxCrossEntropy.__doc__)
    assert _normalised(step.LOSS) in loss_doc and _normalised(step.LOSS_GRADIENT) in loss_doc
    for name, formula in step.UPDATE.items():
        doc = _normalised(optimizers.OPTIMIZERS[name].__doc__)
        assert all(_normalised(part) in doc for part in formula.split("; ")), name


@pytest.mark.parametrize("optimizer,activation", [("sgd", "relu"), ("adam", "tanh")])
def test_step_numbers_are_the_engines_and_torch_autograds(tmp_path, optimizer, activation):
    torch = optional_import("torch")
    from nnscratch.numpy_engine import NumpyEngine
    from nnscratch.torch_engine import build_twin

    md = tmp_path / "step.md"
    proc = run_cli(["step", "--json", "--markdown", str(md), "--optimizer", optimizer, "--activation", activation,
                    "--seed", "3"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    trace = json.loads(proc.stdout)
    spec = ModelSpec(4, (LayerSpec("dense", {"out_features": 3}), LayerSpec(activation),
                         LayerSpec("dense", {"out_features": 2})))
    assert trace["model"] == spec.describe()
    x, y = np.array(trace["x"]), np.array(trace["y"])
    state = {f"{r['layer']}.{k}": np.array(v) for r in trace["forward"] for k, v in r["params"].items()}

    # the engine's own step from the same weights gives the same new weights
    engine = NumpyEngine(spec, state, np.float64, optimizer=optimizer)
    engine.train_step(x, y, trace["lr"])
    for name, p in engine.model.named_params().items():
        np.testing.assert_array_equal(np.array(trace["update"]["params"][name]["after"]), p)

    # torch autograd, computed here on its own
    twin = build_twin(spec).to(torch.float64)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    xt = torch.from_numpy(x).requires_grad_(True)
    hidden = twin[0](xt)
    hidden.retain_grad()
    logits = twin[2](twin[1](hidden))
    logits.retain_grad()
    loss = torch.nn.CrossEntropyLoss()(logits, torch.from_numpy(y))
    loss.backward()
    assert trace["loss"]["value"] == pytest.approx(loss.item(), rel=1e-14)
    blocks = {b["layer"]: {e["name"]: np.array(e["value"]) for e in b["entries"]} for b in trace["backward"]}
    expected = {("loss", "dL/dz"): logits.grad, (2, "dW"): twin[2].weight.grad, (2, "db"): twin[2].bias.grad,
                (0, "dout"): hidden.grad, (0, "dW"): twin[0].weight.grad, (0, "db"): twin[0].bias.grad,
                (0, "dx"): xt.grad}
    for (layer, name), value in expected.items():
        assert rel_error(blocks[layer][name], value.numpy()) < 1e-12, (layer, name)
    assert all(e["max_diff"] < 1e-12 for b in trace["backward"] for e in b["entries"])

    text = md.read_text(encoding="utf-8")
    assert text.startswith(f"# One training step of {spec.describe()}: {optimizer}")
    assert "`dW = dout.T @ x`" in text and "`y = x @ W.T + b`" in text and "✗" not in text and "✓" in text


def test_step_prints_every_formula_and_the_torch_column(tmp_path):
    optional_import("torch")
    proc = run_cli(["step"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for formula in ("y = x @ W.T + b", "dW = dout.T @ x", "db = dout.sum(0)", "dx = dout @ W", "dx = dout * (x > 0)",
                    step.LOSS, step.LOSS_GRADIENT, step.UPDATE["sgd"]):
        assert formula in proc.stdout
    assert proc.stdout.count("| torch: ") >= 10 and "✗" not in proc.stdout


@pytest.mark.parametrize("args,needle", [
    (["--hidden", "0"], "--hidden takes positive layer sizes"),
    (["--classes", "1"], "--classes must be an integer >= 2"),
    (["--lr", "nan"], "--lr must be a number > 0"),
    (["--markdown", "."], "--markdown . is a folder"),
    (["--inputs", "1000", "--hidden", "1000"], "step prints every number"),
])
def test_step_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    proc = run_cli(["step", *args], cwd=tmp_path)
    assert proc.returncode == 2
    assert needle in assert_one_line_error(proc.stderr, proc.stdout)
    assert not list(tmp_path.iterdir())
