"""Every layer kind of the registry, by hand against two oracles, in float64:

* central finite differences of ``L = sum(y * g)`` for the input and every parameter;
* torch's own module (the registry's twin) with the same parameters: outputs and gradients, in
  training and in evaluation mode, and batch norm's running statistics after several steps.

Plus the loss with label smoothing, dropout's formula against ``nn.Dropout``, the initialisers
and the registry's names against torch's ``state_dict()``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import numerical_gradient, rel_error
from nnscratch.numpy_engine import layers as np_layers
from nnscratch.numpy_engine.losses import SoftmaxCrossEntropy
from nnscratch.model.registry import INITIALIZERS, LAYER_KINDS, init_dense, initial_state, state_shapes
from nnscratch.model.spec import LayerSpec, ModelSpec, mlp_spec

FD_TOL = 1e-6
TORCH_TOL = 1e-10
N, D = 7, 5

# kind, arguments: every kind with non-default arguments too
CASES = [
    ("dense", {"out_features": 4}),
    ("relu", {}),
    ("leaky_relu", {}),
    ("leaky_relu", {"negative_slope": 0.2}),
    ("elu", {}),
    ("elu", {"alpha": 0.5}),
    ("gelu", {"approximate": "none"}),
    ("gelu", {"approximate": "tanh"}),
    ("tanh", {}),
    ("sigmoid", {}),
    ("dropout", {"p": 0.3}),
    ("batch_norm", {}),
    ("batch_norm", {"eps": 1e-3, "momentum": 0.3}),
]
IDS = [f"{k}-{'-'.join(f'{a}{v}' for a, v in args.items())}" if args else k for k, args in CASES]


def _layers(kind: str, args: dict, rng: np.random.Generator):
    """The NumPy layer and torch's twin module with the same (random, non-trivial) parameters."""
    from nnscratch.model.registry import complete_args

    full = complete_args(kind, args)
    entry = LAYER_KINDS[kind]
    ours = entry.numpy_class(D, dtype=np.float64, **full)
    twin = entry.torch_module(full, D).double()
    for name, p in ours.params.items():
        p[...] = rng.normal(scale=0.7, size=p.shape) + (1.0 if name == "weight" and kind == "batch_norm" else 0.0)
    twin.load_state_dict({**{k: torch.from_numpy(v.copy()) for k, v in ours.params.items()},
                          **{k: torch.from_numpy(np.array(v)) for k, v in ours.buffers.items()}})
    return ours, twin


def _input(rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(scale=1.5, size=(N, D))
    x[np.abs(x) < 1e-3] = 0.5  # keep clear of kinks (ReLU family at 0)
    return x


def _keep(rng: np.random.Generator, p: float) -> np.ndarray:
    return rng.random((N, D)) >= p


@pytest.mark.parametrize("kind,args", CASES, ids=IDS)
def test_layer_backward_matches_finite_differences(kind, args):
    rng = np.random.default_rng(1)
    layer, _ = _layers(kind, args, rng)
    x = _input(rng)
    keep = _keep(rng, args.get("p", 0.0)) if kind == "dropout" else None
    d_out = layer.forward(x.copy(), train=False).shape[1]
    g = rng.normal(size=(N, d_out))
    saved_buffers = {k: np.array(v) for k, v in layer.buffers.items()}

    def loss() -> float:
        if keep is not None:
            layer.set_keep(keep)
        value = float(np.sum(layer.forward(x.copy(), train=True) * g))
        for k, v in saved_buffers.items():  # running statistics must not drift between evaluations
            layer.buffers[k][...] = v
        return value

    if keep is not None:
        layer.set_keep(keep)
    layer.forward(x.copy(), train=True)
    dx = layer.backward(g.copy(), need_dx=True).copy()
    grads = {k: v.copy() for k, v in layer.grads.items()}
    for k, v in saved_buffers.items():
        layer.buffers[k][...] = v

    xp = x.copy()
    assert rel_error(dx, numerical_gradient(lambda: _loss_at(layer, xp, g, keep, saved_buffers), xp)) < FD_TOL
    for name, p in layer.params.items():
        num = numerical_gradient(loss, p)
        assert rel_error(grads[name], num) < FD_TOL, name
        assert np.any(grads[name] != 0), name


def _loss_at(layer, x, g, keep, saved_buffers) -> float:
    if keep is not None:
        layer.set_keep(keep)
    value = float(np.sum(layer.forward(x.copy(), train=True) * g))
    for k, v in saved_buffers.items():
        layer.buffers[k][...] = v
    return value


@pytest.mark.parametrize("kind,args", CASES, ids=IDS)
def test_layer_equals_torch_module_in_train_and_eval_mode(kind, args):
    rng = np.random.default_rng(2)
    ours, twin = _layers(kind, args, rng)
    for step in range(3):  # several steps: batch norm's running statistics accumulate
        x = _input(rng)
        keep = _keep(rng, args["p"]) if kind == "dropout" else None
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        twin.train()
        if keep is not None:  # torch's module with the same units dropped (its own formula, see below)
            yt = xt * (torch.from_numpy(keep).double() / (1 - args["p"]))
            ours.set_keep(keep)
        else:
            yt = twin(xt)
        y = ours.forward(x.copy(), train=True).copy()
        assert rel_error(y, yt.detach().numpy()) < TORCH_TOL, f"step {step}: forward"
        g = rng.normal(size=y.shape)
        twin.zero_grad()
        yt.backward(torch.from_numpy(g))
        dx = ours.backward(g.copy(), need_dx=True)
        assert rel_error(dx, xt.grad.numpy()) < TORCH_TOL, f"step {step}: dx"
        for name, p in twin.named_parameters():
            assert rel_error(ours.grads[name], p.grad.numpy()) < TORCH_TOL, f"step {step}: d{name}"
        for name, b in twin.named_buffers():
            if b.dtype == torch.int64:
                assert int(ours.buffers[name]) == int(b) == step + 1
            else:
                assert rel_error(ours.buffers[name], b.numpy()) < TORCH_TOL, f"step {step}: {name}"
    # evaluation mode: running statistics, no dropout
    twin.eval()
    x = _input(rng)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x.copy())).numpy()
    assert rel_error(ours.forward(x.copy(), train=False), expected) < TORCH_TOL


def test_dropout_formula_gives_exactly_nn_dropout_output():
    """Given the units ``nn.Dropout`` kept, ``x * keep / (1 - p)`` is its output bit for bit,
    in both float types: the formula our Dropout and the twin's shared-mask dropout use."""
    from nnscratch.torch_engine.model import SharedMaskDropout

    for dtype, tdtype in ((np.float32, torch.float32), (np.float64, torch.float64)):
        for p in (0.1, 0.2, 0.5, 0.8):
            torch.manual_seed(0)
            x = torch.randn(64, 300, dtype=tdtype) + 3.0  # no exact zeros in x
            y = torch.nn.Dropout(p).train()(x)
            keep = (y != 0).numpy()
            assert 0 < keep.mean() < 1
            layer = np_layers.Dropout(300, dtype=dtype, p=p)
            layer.set_keep(keep)
            ours = layer.forward(x.numpy().copy(), train=True)
            np.testing.assert_array_equal(ours, y.numpy())
            shared = SharedMaskDropout(p).train()
            shared.set_keep(torch.from_numpy(keep), tdtype)
            np.testing.assert_array_equal(shared(x).numpy(), y.numpy())
            np.testing.assert_array_equal(layer.forward(x.numpy().copy(), train=False), x.numpy())


def test_batch_norm_needs_two_samples_in_training():
    layer = np_layers.BatchNorm1d(3, dtype=np.float64)
    with pytest.raises(ValueError, match="at least 2 samples"):
        layer.forward(np.ones((1, 3)), train=True)
    assert layer.forward(np.ones((1, 3)), train=False).shape == (1, 3)  # evaluation is fine


# --------------------------------------------------------------------------- the loss


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.35])
def test_loss_with_label_smoothing_matches_finite_differences_and_torch(eps):
    rng = np.random.default_rng(3)
    z = rng.normal(scale=3.0, size=(9, 6))
    y = rng.integers(0, 6, size=9)
    loss_fn = SoftmaxCrossEntropy(np.float64, label_smoothing=eps)
    loss, dz = loss_fn.forward_backward(z, y)
    dz = dz.copy()
    assert rel_error(dz, numerical_gradient(lambda: loss_fn.forward_backward(z, y)[0], z)) < FD_TOL
    zt = torch.from_numpy(z.copy()).requires_grad_(True)
    lt = torch.nn.CrossEntropyLoss(label_smoothing=eps)(zt, torch.from_numpy(y))
    lt.backward()
    assert loss == pytest.approx(lt.item(), rel=1e-13)
    assert rel_error(dz, zt.grad.numpy()) < TORCH_TOL
    # hand-computed: target (1 - eps) onehot + eps / C against log softmax
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    target = np.full(z.shape, eps / 6) + (1 - eps) * np.eye(6)[y]
    assert loss == pytest.approx(float(-(target * logp).sum(1).mean()), rel=1e-13)


def test_evaluation_cross_entropy_equals_torch_and_hand_value():
    from nnscratch.training.metrics import cross_entropy

    rng = np.random.default_rng(4)
    z = rng.normal(scale=4.0, size=(50, 10)).astype(np.float32)
    y = rng.integers(0, 10, size=50)
    for eps in (0.0, 0.2):
        expected = torch.nn.CrossEntropyLoss(label_smoothing=eps)(torch.from_numpy(z.astype(np.float64)),
                                                                  torch.from_numpy(y)).item()
        assert cross_entropy(z, y, eps) == pytest.approx(expected, rel=1e-12)
    # two samples by hand: logits (0, log 3) -> p = (1/4, 3/4)
    two = np.array([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    assert cross_entropy(two, np.array([1, 0])) == pytest.approx((math.log(4 / 3) + math.log(4)) / 2, rel=1e-14)


# --------------------------------------------------------------------------- initialisers and registry


def test_initialisers_follow_their_laws():
    """Empirical moments/bounds of each scheme against the formula torch.nn.init uses."""
    rng = np.random.default_rng(5)
    fan_in, fan_out, g2 = 400, 300, 2.0
    for scheme in INITIALIZERS:
        p = init_dense(rng, fan_in, fan_out, scheme, g2)
        w, b = p["weight"], p["bias"]
        assert w.shape == (fan_out, fan_in) and b.shape == (fan_out,)
        if scheme == "he_normal":
            assert w.std() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.01)
        elif scheme == "he_uniform":
            bound = math.sqrt(2.0) * math.sqrt(3.0 / fan_in)  # torch.nn.init.kaiming_uniform_
            assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
        elif scheme == "xavier_normal":
            assert w.std() == pytest.approx(math.sqrt(2.0) * math.sqrt(2.0 / (fan_in + fan_out)), rel=0.01)
        elif scheme == "xavier_uniform":
            bound = math.sqrt(2.0) * math.sqrt(6.0 / (fan_in + fan_out))
            assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
        else:  # torch_default: nn.Linear's own reset_parameters
            bound = 1 / math.sqrt(fan_in)
            ref = torch.nn.Linear(fan_in, fan_out)
            assert float(ref.weight.detach().abs().max()) <= bound and np.abs(w).max() <= bound
            assert np.abs(b).max() <= bound and np.abs(b).max() > 0.9 * bound
        if scheme != "torch_default":
            assert not np.any(b)
        assert abs(w.mean()) < 0.01 * w.std() * 10


def test_activation_gain_used_by_he_init():
    """The He std follows the activation after the layer (tanh: 5/3), as calculate_gain gives."""
    rng = np.random.default_rng(6)
    spec = mlp_spec(input_dim=500, hidden=(400,), num_classes=10, activation="tanh")
    w = initial_state(spec, rng, "he_normal")["0.weight"]
    assert w.std() == pytest.approx(torch.nn.init.calculate_gain("tanh") / math.sqrt(500), rel=0.01)


def test_seed_initialisation_is_unchanged():
    """He normal for ReLU draws exactly what the reference set-up drew: Normal(0, 2 / fan_in), biases 0."""
    spec = mlp_spec()
    state = initial_state(spec, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(state["0.weight"], rng.normal(0.0, np.sqrt(2.0 / 784), size=(533, 784)))
    np.testing.assert_array_equal(state["2.weight"], rng.normal(0.0, np.sqrt(2.0 / 533), size=(10, 533)))


def test_registry_names_and_shapes_are_torchs():
    from nnscratch.torch_engine import build_twin

    spec = ModelSpec(30, (LayerSpec("dense", {"out_features": 16}), LayerSpec("batch_norm"), LayerSpec("elu"),
                          LayerSpec("dropout", {"p": 0.25}), LayerSpec("dense", {"out_features": 8}),
                          LayerSpec("leaky_relu"), LayerSpec("dense", {"out_features": 3})))
    twin = build_twin(spec)
    expected = {k: tuple(v.shape) for k, v in twin.state_dict().items()}
    assert state_shapes(spec) == expected
    assert {k: v.shape for k, v in initial_state(spec, np.random.default_rng(0)).items()} == expected
    assert spec.describe() == "30-16-8-3 (batch norm, elu, dropout 0.25, leaky_relu)"
    assert ModelSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize("kind,args,message", [
    ("dense", {"out_features": 0}, "out_features"),
    ("dropout", {"p": 1.0}, "dropout p must be"),
    ("dropout", {"p": float("nan")}, "dropout p must be"),
    ("leaky_relu", {"negative_slope": -1}, "negative_slope"),
    ("batch_norm", {"momentum": 2.0}, "momentum"),
    ("gelu", {"approximate": "erf"}, "approximate"),
    ("relu", {"inplace": True}, "unknown argument"),
    ("conv2d", {}, "unknown layer kind"),
])
def test_bad_layer_arguments_are_usage_errors(kind, args, message):
    from nnscratch.errors import UsageError

    with pytest.raises(UsageError, match=message):
        ModelSpec(10, (LayerSpec(kind, args), LayerSpec("dense", {"out_features": 2})))


def test_every_built_in_kind_meets_the_layer_contract():
    """Each registry entry's class against :class:`~nnscratch.numpy_engine.layers.Layer`: a subclass,
    with ``params``/``grads``/``buffers`` dicts whose keys and shapes are the registry's, a forward
    ``(N, D_in) -> (N, D_out)``, and a backward that returns ``dx (N, D_in)`` (or None without
    ``need_dx``) and fills every ``grads`` key. Every built-in kind is a CASES kind, so none is left out."""
    from nnscratch.model.registry import BUILT_IN_KINDS, complete_args

    assert {kind for kind, _ in CASES} == set(BUILT_IN_KINDS) == set(LAYER_KINDS) - _registered_elsewhere()
    rng = np.random.default_rng(7)
    for kind, args in CASES:
        full = complete_args(kind, args)
        entry = LAYER_KINDS[kind]
        assert issubclass(entry.numpy_class, np_layers.Layer), kind
        layer = entry.numpy_class(D, dtype=np.float64, **full)
        d_out = entry.out_features(full, D)
        for attr in ("params", "grads", "buffers"):
            assert isinstance(getattr(layer, attr), dict), (kind, attr)
        assert {k: v.shape for k, v in layer.params.items()} == entry.param_shapes(full, D), kind
        assert {k: v.shape for k, v in layer.grads.items()} == entry.param_shapes(full, D), kind
        assert {k: v.shape for k, v in layer.buffers.items()} == entry.buffer_shapes(full, D), kind
        assert all(p.dtype == np.float64 for p in layer.params.values()), kind
        if kind == "dropout":
            layer.set_keep(_keep(rng, full["p"]))
        y = layer.forward(_input(rng), train=True)
        assert y.shape == (N, d_out), kind
        for g in layer.grads.values():
            g.fill(np.nan)
        dx = layer.backward(rng.normal(size=(N, d_out)), need_dx=True)
        assert dx is not None and dx.shape == (N, D), kind
        for name, g in layer.grads.items():
            assert np.all(np.isfinite(g)), f"{kind}: backward left grads[{name!r}] unfilled"
        layer.forward(_input(rng), train=True)
        dx = layer.backward(rng.normal(size=(N, d_out)), need_dx=False)  # the first layer: dx may be skipped
        assert dx is None or dx.shape == (N, D), kind


def _registered_elsewhere() -> set[str]:
    """Kinds some other test of this process registered (the registry is process-wide)."""
    from nnscratch.model.registry import BUILT_IN_KINDS

    return set(LAYER_KINDS) - set(BUILT_IN_KINDS)


def test_register_layer_refuses_what_would_not_work():
    from nnscratch.errors import UsageError
    from nnscratch.model.registry import register_layer

    with pytest.raises(UsageError, match="built-in"):
        register_layer("relu", np_layers.ReLU, lambda a, d: torch.nn.ReLU())
    with pytest.raises(UsageError, match="subclass of nnscratch.numpy_engine.layers.Layer"):
        register_layer("mine", object, lambda a, d: torch.nn.ReLU())
    with pytest.raises(UsageError, match="initial="):
        register_layer("mine", np_layers.Dense, lambda a, d: torch.nn.Linear(d, 3),
                       param_shapes=lambda a, d: {"weight": (3, d)})
    assert "mine" not in LAYER_KINDS
    with pytest.raises(UsageError, match="register_layer"):
        ModelSpec(3, (LayerSpec("mine"), LayerSpec("dense", {"out_features": 2})))
