"""The Numba kernels (--jit) compute exactly what the plain NumPy layers and optimizers compute."""

import numpy as np
import pytest

from helpers import optional_import, rel_error
from optimizer_cases import CASES, IDS

optional_import("numba")

from nnscratch.numpy_engine import NumpyEngine, ReLU, SoftmaxCrossEntropy  # noqa: E402
from nnscratch.numpy_engine.layers import BatchNorm1d, GradientSink  # noqa: E402
from nnscratch.model.registry import initial_state  # noqa: E402
from nnscratch.numpy_engine.jit import (JIT_OPTIMIZERS, JitAdam, JitAdamW, JitBatchNorm1d, JitReLU,  # noqa: E402
                                        JitRMSprop, JitSGD, JitSoftmaxCrossEntropy, make_jit_optimizer)
from nnscratch.numpy_engine.optimizers import OPTIMIZERS, make_optimizer  # noqa: E402
from nnscratch.model.spec import mlp_spec  # noqa: E402
from nnscratch.training.trainer import fit  # noqa: E402


@pytest.mark.parametrize("order", ["C", "F"])
def test_jit_relu_equals_relu(order):
    rng = np.random.default_rng(0)
    x = np.asarray(rng.standard_normal((33, 17)), order=order)
    dout = np.asarray(rng.standard_normal((33, 17)), order=order)
    plain, jit = ReLU(np.float64), JitReLU(np.float64)
    y1, y2 = plain.forward(x.copy(order="K")).copy(), jit.forward(x.copy(order="K")).copy()
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(plain.backward(dout.copy(order="K")), jit.backward(dout.copy(order="K")))
    assert (y2 >= 0).all() and np.array_equal(y2 > 0, x > 0)


def test_jit_softmax_cross_entropy_equals_numpy():
    rng = np.random.default_rng(1)
    z = np.asfortranarray(rng.standard_normal((64, 10)) * 30)
    y = rng.integers(0, 10, 64)
    loss1, dz1 = SoftmaxCrossEntropy(np.float64).forward_backward(z, y)
    loss2, dz2 = JitSoftmaxCrossEntropy(np.float64).forward_backward(z, y)
    assert loss2 == pytest.approx(loss1, rel=1e-14)
    np.testing.assert_allclose(dz2, dz1, rtol=1e-12, atol=1e-17)


def _batch_norm_pair(dtype, d):
    rng = np.random.default_rng(20)
    layers = BatchNorm1d(d, dtype, momentum=0.2), JitBatchNorm1d(d, dtype, momentum=0.2)
    gamma, beta = 1 + 0.3 * rng.standard_normal(d), 0.5 * rng.standard_normal(d)
    for layer in layers:
        layer.params["weight"][:], layer.params["bias"][:] = gamma, beta
    return layers


def _run_batch_norm(layer, x, dout, need_dx=True):
    """Two training steps (forward, backward) and an evaluation pass; copies of what comes out."""
    out = {}
    for step in range(2):
        out[f"y{step}"] = layer.forward(x + step, train=True).copy()
        dx = layer.backward(dout * (step + 1), need_dx=need_dx)
        out[f"dx{step}"] = None if dx is None else dx.copy()
        out[f"dgamma{step}"], out[f"dbeta{step}"] = layer.grads["weight"].copy(), layer.grads["bias"].copy()
    out.update({name: np.array(b) for name, b in layer.buffers.items()})
    out["eval"] = layer.forward(x, train=False).copy()
    return out


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-11), (np.float32, 2e-5)])
@pytest.mark.parametrize("order", ["F", "C"])
def test_jit_batch_norm_equals_batch_norm(dtype, rtol, order):
    """The compiled training passes (column-major batches; a row-major one takes the reference)
    give the reference's outputs, input gradients, dgamma, dbeta and running statistics."""
    rng = np.random.default_rng(21)
    x = np.asarray((3 + 2 * rng.standard_normal((48, 37))).astype(dtype), order=order)
    dout = np.asarray(rng.standard_normal((48, 37)).astype(dtype), order=order)
    plain, jit = _batch_norm_pair(dtype, 37)
    expected, got = _run_batch_norm(plain, x, dout), _run_batch_norm(jit, x, dout)
    for name, value in expected.items():
        assert got[name].dtype == value.dtype, name
        scale = np.abs(value).max() if value.ndim else 1.0
        np.testing.assert_allclose(got[name], value, rtol=rtol, atol=rtol * scale, err_msg=name)
    assert got["num_batches_tracked"] == 2
    if order == "C":  # the reference's own code path: the same bits
        for name, value in expected.items():
            np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_jit_batch_norm_input_gradient_matches_finite_differences():
    """An oracle of its own for the compiled backward: central differences of sum(y * w)."""
    rng = np.random.default_rng(22)
    x, w = np.asfortranarray(rng.standard_normal((6, 4))), np.asfortranarray(rng.standard_normal((6, 4)))
    _, layer = _batch_norm_pair(np.float64, 4)

    def loss(xs):
        return float((layer.forward(np.asfortranarray(xs), train=True) * w).sum())

    loss(x)
    dx = layer.backward(w).copy()
    numeric, h = np.zeros_like(x), 1e-6
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        numeric[idx] = (loss(xp) - loss(xm)) / (2 * h)
    np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=1e-8)


def test_jit_batch_norm_without_dx_and_through_a_scaling_sink():
    """``need_dx=False`` returns nothing and still hands over dgamma and dbeta; a sink with
    ``alpha``/``beta`` (the fused update's) receives what the reference's does."""
    rng = np.random.default_rng(23)
    x = np.asfortranarray(rng.standard_normal((16, 5)))
    dout = np.asfortranarray(rng.standard_normal((16, 5)))
    plain, jit = _batch_norm_pair(np.float64, 5)
    targets = []
    for layer in (plain, jit):
        target = {name: np.full_like(p, 0.5) for name, p in layer.params.items()}
        layer.sink = GradientSink(target, alpha=-0.1, beta=0.9)
        layer.forward(x, train=True)
        assert layer.backward(dout, need_dx=False) is None
        targets.append(target)
    for name in ("weight", "bias"):
        np.testing.assert_allclose(targets[1][name], targets[0][name], rtol=1e-12)
        assert not np.allclose(targets[1][name], 0.5)


def test_jit_batch_norm_refuses_a_batch_of_one_as_the_reference_does():
    _, jit = _batch_norm_pair(np.float64, 3)
    with pytest.raises(ValueError, match="at least 2 samples"):
        jit.forward(np.asfortranarray(np.ones((1, 3))), train=True)


def test_engine_builds_the_compiled_batch_norm_by_default():
    spec = mlp_spec(input_dim=12, hidden=(8,), num_classes=3, batch_norm=True)
    initial = initial_state(spec, np.random.default_rng(24))
    kinds = [{type(layer) for layer in NumpyEngine(spec, initial, np.float64, compiled_layers=compiled).model.layers}
             for compiled in (True, False)]
    assert JitBatchNorm1d in kinds[0] and BatchNorm1d not in kinds[0]
    assert BatchNorm1d in kinds[1] and JitBatchNorm1d not in kinds[1]


def test_jit_engine_trains_like_the_plain_engine():
    rng = np.random.default_rng(2)
    x, y = rng.random((700, 30)), rng.integers(0, 10, 700)
    spec = mlp_spec(input_dim=30, hidden=(20,), num_classes=10)
    initial = initial_state(spec, np.random.default_rng(3))
    orders = [np.random.default_rng(4).permutation(700) for _ in range(2)]
    runs = [fit(NumpyEngine(spec, initial, np.float64, jit=jit), (x, y), None, orders=orders, batch_size=64,
                num_classes=10, lr=0.05) for jit in (False, True)]
    np.testing.assert_allclose(runs[1].step_loss, runs[0].step_loss, rtol=ENGINE_RTOL)
    assert runs[0].step_loss[-1] < runs[0].step_loss[0]


# -- optimizers ------------------------------------------------------------------------------------

OPT_SHAPES = {"0.weight": (37, 29), "0.bias": (37,), "1.weight": (3, 37), "1.bias": (3,)}
OPT_CASES, OPT_IDS = CASES, IDS  # the table tests/test_optimizers.py checks against torch
#: The whole --jit engine against the plain one, in float64: the loss kernel sums in another order,
#: so they agree to rounding, not bit for bit (the optimizers alone are bit-equal).
ENGINE_RTOL = 1e-13


def _params(seed, dtype):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in OPT_SHAPES.items()}


def _grads(seed, steps, dtype):
    rng = np.random.default_rng(seed + 1000)
    return [{name: rng.standard_normal(shape).astype(dtype) for name, shape in OPT_SHAPES.items()}
            for _ in range(steps)]


def _lrs(steps):
    return [0.05 * (1.0 + 0.5 * np.sin(t)) for t in range(steps)]


def _run(opt, grads, lrs):
    for g, lr in zip(grads, lrs):
        opt.step({k: v.copy() for k, v in g.items()}, lr)
    return opt


def _assert_same(params_a, state_a, params_b, state_b, rtol=None):
    """The same parameters and state: bit for bit, or to ``rtol`` (per array) where given."""
    def same(b, a, k):
        if rtol is None:
            np.testing.assert_array_equal(b, a, err_msg=k)
        else:  # relative to the array's largest entry (helpers.rel_error), not entry by entry
            assert rel_error(b, a) < rtol, (k, rel_error(b, a))

    for k in params_a:
        assert params_b[k].dtype == params_a[k].dtype
        same(params_b[k], params_a[k], k)
    assert state_b.keys() == state_a.keys()
    for k, v in state_a.items():
        assert state_b[k].dtype == v.dtype and state_b[k].shape == v.shape, k
        same(state_b[k], v, k)


def test_jit_optimizers_are_chosen_by_make_optimizer():
    params = _params(0, np.float32)
    assert set(JIT_OPTIMIZERS) == set(OPTIMIZERS)
    for name, cls in {"sgd": JitSGD, "adam": JitAdam, "adamw": JitAdamW, "rmsprop": JitRMSprop}.items():
        opt = make_jit_optimizer(name, params)
        assert type(opt) is cls and isinstance(opt, OPTIMIZERS[name])
        assert type(make_optimizer(name, params)) is OPTIMIZERS[name]
    assert make_jit_optimizer("adamw", params).weight_decay == 1e-2  # AdamW's own default
    assert make_jit_optimizer("sgd", params).fused  # plain SGD stays inside the backward pass


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, hp", OPT_CASES, ids=OPT_IDS)
def test_jit_optimizer_equals_numpy(name, hp, dtype):
    """50 steps with a changing learning rate: parameters and every state array as the NumPy class."""
    params, grads, lrs = _params(0, dtype), _grads(0, 50, dtype), _lrs(50)
    plain = {k: v.copy() for k, v in params.items()}
    jit = {k: v.copy() for k, v in params.items()}
    plain_opt = _run(make_optimizer(name, plain, **hp), grads, lrs)
    jit_opt = make_jit_optimizer(name, jit, **hp)
    for g, lr in zip(grads, lrs):
        scratch = {k: v.copy() for k, v in g.items()}
        jit_opt.step(scratch, lr)
        # the compiled loops only read the gradients (the NumPy code uses them as scratch): this
        # also shows that the compiled path ran, not the NumPy fallback
        assert all(np.array_equal(scratch[k], g[k]) for k in g)
    assert all(not np.array_equal(jit[k], params[k]) for k in params), "the parameters did not move"
    _assert_same(plain, plain_opt.state(), jit, jit_opt.state())  # bit for bit, float32 and float64


@pytest.mark.parametrize("name, hp", OPT_CASES, ids=OPT_IDS)
def test_jit_optimizer_state_round_trips_both_ways(name, hp):
    """A state saved by either class resumes in the other: checkpoints are interchangeable."""
    params, grads, lrs = _params(1, np.float64), _grads(1, 50, np.float64), _lrs(50)
    whole = {k: v.copy() for k, v in params.items()}
    whole_state = _run(make_optimizer(name, whole, **hp), grads, lrs).state()
    for save_jit in (False, True):
        first = {k: v.copy() for k, v in params.items()}
        build_first, build_then = (make_jit_optimizer, make_optimizer) if save_jit else (make_optimizer, make_jit_optimizer)
        saved = _run(build_first(name, first, **hp), grads[:25], lrs[:25]).state()
        resumed = dict(first)
        opt = build_then(name, resumed, **hp)
        opt.load_state(saved)
        _run(opt, grads[25:], lrs[25:])
        _assert_same(whole, whole_state, resumed, opt.state())
        opt.load_state({})
        assert opt.steps == 0 and opt.state() == {}


@pytest.mark.parametrize("name, hp", [("sgd", {"momentum": 0.9, "nesterov": True}), ("adam", {"amsgrad": True}),
                                      ("rmsprop", {"centered": True, "momentum": 0.5})])
def test_jit_optimizer_takes_the_numpy_path_for_mixed_layouts(name, hp):
    """A parameter whose gradient has another memory layout (or is not contiguous) is updated by the
    NumPy code, not by a compiled loop over mismatched flat views."""
    rng = np.random.default_rng(5)
    w, v = rng.standard_normal((6, 4)), rng.standard_normal((8, 6))
    grads = [{"w": rng.standard_normal((6, 4)), "v": rng.standard_normal((8, 3))} for _ in range(5)]
    # w in Fortran order against C-ordered gradients; v a strided view (state arrays are contiguous)
    plain, jit = ({"w": np.asfortranarray(w), "v": v.copy()[:, ::2]} for _ in range(2))
    plain_opt, jit_opt = make_optimizer(name, plain, **hp), make_jit_optimizer(name, jit, **hp)
    for g, lr in zip(grads, _lrs(5)):
        plain_opt.step({k: v.copy() for k, v in g.items()}, lr)
        jit_opt.step({k: v.copy() for k, v in g.items()}, lr)
    _assert_same(plain, plain_opt.state(), jit, jit_opt.state())


@pytest.mark.parametrize("optimizer, options", [("adam", {"weight_decay": 1e-3}),
                                                ("sgd", {"momentum": 0.9, "nesterov": True})])
def test_jit_engine_with_an_optimizer_trains_like_the_plain_engine(optimizer, options):
    rng = np.random.default_rng(6)
    x, y = rng.random((700, 30)), rng.integers(0, 10, 700)
    spec = mlp_spec(input_dim=30, hidden=(20, 16), num_classes=10)
    initial = initial_state(spec, np.random.default_rng(7))
    orders = [np.random.default_rng(8).permutation(700) for _ in range(2)]
    engines = [NumpyEngine(spec, initial, np.float64, optimizer=optimizer, optimizer_options=options, jit=jit,
                           compiled_updates=jit) for jit in (False, True)]
    assert type(engines[0].optimizer) is OPTIMIZERS[optimizer]   # the NumPy reference
    assert type(engines[1].optimizer) is JIT_OPTIMIZERS[optimizer]
    runs = [fit(engine, (x, y), None, orders=orders, batch_size=64, num_classes=10, lr=0.01) for engine in engines]
    np.testing.assert_allclose(runs[1].step_loss, runs[0].step_loss, rtol=ENGINE_RTOL)
    assert runs[0].step_loss[-1] < runs[0].step_loss[0]
    _assert_same(engines[0].model.named_params(), engines[0].optimizer.state(),
                 engines[1].model.named_params(), engines[1].optimizer.state(), ENGINE_RTOL)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("optimizer, options", [("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}),
                                                ("sgd", {"momentum": 0.9}), ("sgd", {"weight_decay": 1e-3}),
                                                ("adamw", {"weight_decay": 1e-2}), ("rmsprop", {"momentum": 0.5})])
def test_default_engine_compiles_the_update_and_keeps_the_numpy_numbers(optimizer, options, dtype):
    """Without ``--jit`` the engine still makes a non-fused update in one compiled pass
    (``compiled_updates``, the default): its whole run, weights and state, equals the NumPy
    reference's bit for bit, in float32 as in float64; plain SGD keeps the fused path."""
    rng = np.random.default_rng(10)
    x, y = rng.random((500, 30)).astype(dtype), rng.integers(0, 10, 500)
    spec = mlp_spec(input_dim=30, hidden=(24, 12), num_classes=10)
    initial = initial_state(spec, np.random.default_rng(11))
    orders = [np.random.default_rng(12).permutation(500) for _ in range(2)]
    engines = [NumpyEngine(spec, initial, dtype, optimizer=optimizer, optimizer_options=options,
                           compiled_updates=compiled) for compiled in (False, True)]
    assert type(engines[0].optimizer) is OPTIMIZERS[optimizer]
    assert type(engines[1].optimizer) is JIT_OPTIMIZERS[optimizer]
    runs = [fit(engine, (x, y), None, orders=orders, batch_size=64, num_classes=10, lr=0.05, seed=3)
            for engine in engines]
    np.testing.assert_array_equal(runs[1].step_loss, runs[0].step_loss)
    _assert_same(engines[0].model.named_params(), engines[0].optimizer.state(),
                 engines[1].model.named_params(), engines[1].optimizer.state())
    plain = NumpyEngine(spec, initial, dtype)
    assert plain.fused and type(plain.optimizer) is OPTIMIZERS["sgd"]


def test_jit_engine_with_label_smoothing_keeps_the_smoothing_loss():
    """The compiled loss knows no label smoothing; ``--jit --label-smoothing`` must train as the plain
    engine with smoothing does (one ``if`` in NumpyEngine keeps the compiled loss out)."""
    rng = np.random.default_rng(9)
    x, y = rng.random((300, 12)), rng.integers(0, 4, 300)
    spec = mlp_spec(input_dim=12, hidden=(10,), num_classes=4)
    initial = initial_state(spec, np.random.default_rng(10))
    orders = [np.random.default_rng(11).permutation(300)]
    engines = [NumpyEngine(spec, initial, np.float64, label_smoothing=0.2, jit=jit) for jit in (False, True)]
    runs = [fit(engine, (x, y), None, orders=orders, batch_size=32, num_classes=4, lr=0.05) for engine in engines]
    np.testing.assert_allclose(runs[1].step_loss, runs[0].step_loss, rtol=ENGINE_RTOL)
    unsmoothed = fit(NumpyEngine(spec, initial, np.float64, jit=True), (x, y), None, orders=orders, batch_size=32,
                     num_classes=4, lr=0.05)
    assert abs(unsmoothed.step_loss[0] - runs[0].step_loss[0]) > 1e-3  # smoothing shows in the loss
