"""The hand-written gradients of the NumPy engine, checked three ways, all in float64:

* against central finite differences, layer by layer and for the whole network;
* the fused-SGD step against gradients + ``SGD.step`` (float32 and float64, shallow and deep,
  batches on both sides of the buffer memory-order switch);
* against PyTorch autograd on the twin with the same weights and batch.

Finite differences and relative errors are the package's own gradient check
(:mod:`nnscratch.analysis.gradcheck`, also ``nnscratch gradcheck``); relative errors are norm-based:
``max|a - b| / max(max|a|, max|b|, tiny)`` per tensor.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers import optional_import
from nnscratch.analysis.gradcheck import numerical_gradient, rel_error
from nnscratch.numpy_engine import Dense, NumpyEngine, ReLU, Sequential, SoftmaxCrossEntropy
from nnscratch.numpy_engine.backend import numpy_gemm as gemm
from nnscratch.model.registry import initial_state
from nnscratch.model.spec import ModelSpec, mlp_spec

FD_TOL = 1e-6
SMALL_SPEC = mlp_spec(input_dim=12, hidden=(7, 5), num_classes=4)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- finite differences


def test_dense_backward_matches_finite_differences():
    rng = _rng(1)
    n, d_in, d_out = 5, 6, 4
    layer = Dense(d_in, dtype=np.float64, out_features=d_out)
    layer.params["weight"][...] = rng.normal(size=(d_out, d_in))
    layer.params["bias"][...] = rng.normal(size=d_out)
    x = rng.normal(size=(n, d_in))
    g = rng.normal(size=(n, d_out))  # L = sum(y * g), so dL/dy = g

    def loss() -> float:
        return float(np.sum(layer.forward(x.copy(), train=False) * g))

    num_dx = numerical_gradient(loss, x)
    num_dw = numerical_gradient(loss, layer.params["weight"])
    num_db = numerical_gradient(loss, layer.params["bias"])

    layer.forward(x, train=True)
    dx = layer.backward(g.copy(), need_dx=True).copy()
    assert dx.shape == x.shape
    assert rel_error(dx, num_dx) < FD_TOL
    assert rel_error(layer.grads["weight"], num_dw) < FD_TOL
    assert rel_error(layer.grads["bias"], num_db) < FD_TOL
    # and the closed forms the docstring states
    np.testing.assert_allclose(dx, g @ layer.params["weight"], rtol=1e-13)
    np.testing.assert_allclose(layer.grads["weight"], g.T @ x, rtol=1e-13)
    np.testing.assert_allclose(layer.grads["bias"], g.sum(axis=0), rtol=1e-13)


def test_dense_forward_is_x_wt_plus_b():
    rng = _rng(2)
    layer = Dense(6, dtype=np.float64, out_features=3)
    layer.params["weight"][...] = rng.normal(size=(3, 6))
    layer.params["bias"][...] = rng.normal(size=3)
    x = rng.normal(size=(4, 6))
    y = layer.forward(x, train=False)
    np.testing.assert_allclose(y, x @ layer.params["weight"].T + layer.params["bias"], rtol=1e-13)


def test_relu_backward_matches_finite_differences():
    rng = _rng(3)
    x = rng.normal(size=(6, 5))
    x = np.where(np.abs(x) < 0.1, np.sign(x) * 0.1 + x, x)  # keep away from the kink at 0
    assert np.min(np.abs(x)) >= 0.1
    assert (x > 0).any() and (x < 0).any()
    g = rng.normal(size=x.shape)
    relu = ReLU(dtype=np.float64)

    def loss() -> float:
        return float(np.sum(relu.forward(x.copy(), train=False) * g))  # forward works in place

    num_dx = numerical_gradient(loss, x)
    relu.forward(x.copy(), train=True)
    dx = relu.backward(g.copy()).copy()
    assert rel_error(dx, num_dx) < FD_TOL
    np.testing.assert_array_equal(dx, g * (x > 0))


def test_relu_forward_is_max_x_0():
    x = np.array([[-2.0, -0.0, 0.0, 1.5], [3.0, -1e-300, 1e-300, -7.0]])
    y = ReLU(dtype=np.float64).forward(x.copy())
    np.testing.assert_array_equal(y, np.maximum(x, 0))


def test_softmax_cross_entropy_gradient_matches_finite_differences():
    rng = _rng(4)
    n, c = 7, 5
    z = rng.normal(scale=3.0, size=(n, c))
    y = rng.integers(0, c, size=n)
    loss_fn = SoftmaxCrossEntropy(dtype=np.float64)
    z_before = z.copy()
    loss, dz = loss_fn.forward_backward(z, y)
    dz = dz.copy()
    np.testing.assert_array_equal(z, z_before)  # the logits are left untouched

    num_dz = numerical_gradient(lambda: loss_fn.forward_backward(z, y)[0], z)
    assert rel_error(dz, num_dz) < FD_TOL

    # the loss itself: mean of -log softmax at the label
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert loss == pytest.approx(float(np.mean(-np.log(p[np.arange(n), y]))), rel=1e-13)
    np.testing.assert_allclose(dz.sum(axis=1), 0.0, atol=1e-15)  # softmax - onehot sums to 0


def _pre_activations(spec: ModelSpec, state: dict[str, np.ndarray], x: np.ndarray) -> list[np.ndarray]:
    """The inputs of every ReLU, computed independently of the engine."""
    out, h = [], x
    dense = [i for i, layer, _, _ in spec.walk() if layer.kind == "dense"]
    for k, i in enumerate(dense):
        h = h @ state[f"{i}.weight"].T + state[f"{i}.bias"]
        if k < len(dense) - 1:
            out.append(h)
            h = np.maximum(h, 0)
    return out


def test_whole_network_gradient_matches_finite_differences_for_every_parameter():
    rng = _rng(5)
    spec = SMALL_SPEC
    state = initial_state(spec, rng)
    for name in state:
        if name.endswith("bias"):
            state[name] = rng.normal(scale=0.5, size=state[name].shape)  # non-zero biases
    x = rng.normal(size=(6, spec.input_dim))
    y = rng.integers(0, spec.num_classes, size=6)
    # no ReLU input may be within reach of a perturbation of size h of the kink
    assert min(float(np.min(np.abs(a))) for a in _pre_activations(spec, state, x)) > 1e-4

    model = Sequential(spec, dtype=np.float64)
    model.load_state_dict(state)
    loss_fn = SoftmaxCrossEntropy(dtype=np.float64)

    def loss() -> float:
        return loss_fn.forward_backward(model.forward(x.copy(), train=False), y)[0]

    loss0, dlogits = loss_fn.forward_backward(model.forward(x.copy(), train=True), y)
    model.backward(dlogits)
    grads = {k: v.copy() for k, v in model.named_grads().items()}
    assert sorted(grads) == sorted(state) == ["0.bias", "0.weight", "2.bias", "2.weight", "4.bias", "4.weight"]

    params = model.named_params()
    n_checked = 0
    for name, p in params.items():
        num = numerical_gradient(loss, p)
        n_checked += p.size
        err = rel_error(grads[name], num)
        assert err < FD_TOL, f"{name}: relative error {err:.3g}"
        assert np.any(grads[name] != 0), name
    assert n_checked == 12 * 7 + 7 + 7 * 5 + 5 + 5 * 4 + 4
    assert loss() == pytest.approx(loss0, rel=1e-15)  # parameters restored


# --------------------------------------------------------------------------- fused SGD


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("hidden,batch", [((533,), 64), ((533,), 300), ((48, 32, 16), 64), ((48, 32, 16), 513)],
                         ids=["seed-b64", "seed-b300", "deep-b64", "deep-b513"])
def test_fused_sgd_equals_grads_plus_sgd_step(dtype, hidden, batch):
    """Plain SGD fused into the gradient products (GradientSink alpha=-lr, beta=1) against the same
    step done as gradients + ``SGD.step``, for three steps with a changing learning rate. Batches
    of 300 and 513 rows use row-major activation buffers, 64 column-major (see buffers.py)."""
    from nnscratch.numpy_engine.buffers import COLUMN_MAJOR_MAX_ROWS

    assert (batch <= COLUMN_MAJOR_MAX_ROWS) == (batch == 64)
    rng = _rng(6)
    spec = mlp_spec(hidden=hidden)
    state = initial_state(spec, rng)
    state = {k: v + (rng.normal(scale=0.1, size=v.shape) if k.endswith("bias") else 0) for k, v in state.items()}
    fused = NumpyEngine(spec, state, dtype, fuse=True)
    plain = NumpyEngine(spec, state, dtype, fuse=False)
    assert fused.fused and not plain.fused
    for lr in (0.05, 0.02, 0.1):
        x = rng.uniform(0, 1, size=(batch, 784)).astype(dtype)
        y = rng.integers(0, 10, size=batch)
        fused.train_step(x, y, lr)
        plain.train_step(x, y, lr)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    losses_a, losses_b = fused.take_epoch_stats()[0], plain.take_epoch_stats()[0]
    np.testing.assert_allclose(losses_a, losses_b, rtol=tol)
    for name in state:
        new_a, new_b = fused.model.named_params()[name], plain.model.named_params()[name]
        assert new_a.dtype == dtype
        assert rel_error(new_a, new_b) < tol, name
        assert rel_error(new_a, state[name]) > 1e-4, f"{name} did not move"
    # the fused step never stored a gradient
    assert all(not np.any(g) for g in fused.model.named_grads().values())


# --------------------------------------------------------------------------- against torch autograd


@pytest.fixture
def torch():
    return optional_import("torch")


def _torch_grads(torch, spec: ModelSpec, state: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray):
    from nnscratch.torch_engine import build_twin

    twin = build_twin(spec).to(torch.float64)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    loss = torch.nn.CrossEntropyLoss()(twin(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    return loss.item(), {k: p.grad.numpy().copy() for k, p in twin.named_parameters()}


def _numpy_grads(spec: ModelSpec, state: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray):
    model = Sequential(spec, np.float64)
    model.load_state_dict(state)
    loss, dz = SoftmaxCrossEntropy(np.float64).forward_backward(model.forward(np.asfortranarray(x)), y)
    model.backward(dz)
    return loss, {k: v.copy() for k, v in model.named_grads().items()}


@pytest.mark.parametrize("hidden", [(533,), (64, 32)], ids=["seed-784-533-10", "deep-784-64-32-10"])
def test_gradients_equal_torch_autograd(torch, hidden):
    rng = _rng(7)
    spec = mlp_spec(hidden=hidden)
    state = initial_state(spec, rng)
    state = {k: (v + rng.normal(scale=0.1, size=v.shape)) if k.endswith("bias") else v for k, v in state.items()}
    x = rng.uniform(0, 1, size=(64, 784))
    y = rng.integers(0, 10, size=64)

    loss_np, grads_np = _numpy_grads(spec, state, x, y)
    loss_t, grads_t = _torch_grads(torch, spec, state, x, y)
    assert loss_np == pytest.approx(loss_t, rel=1e-13)
    assert sorted(grads_np) == sorted(grads_t)
    for name in grads_t:
        err = rel_error(grads_np[name], grads_t[name])
        assert err < 1e-10, f"{name}: relative error {err:.3g}"


def test_loss_is_stable_for_huge_logits(torch):
    z = np.array([[1e4, -1e4, 0.0, 3.0],
                  [-1e4, 1e4, 5.0, -1e4],
                  [1e4, 1e4, -1e4, 0.0],
                  [-1e4, -1e4, -1e4, -1e4]])
    y = np.array([1, 1, 0, 2])
    loss, dz = SoftmaxCrossEntropy(np.float64).forward_backward(z.copy(), y)
    dz = dz.copy()
    assert np.isfinite(loss) and np.all(np.isfinite(dz))
    # exact values: rows 0..3 lose 2e4, 0, log 2, log 4; mean over 4 rows
    assert loss == pytest.approx((2e4 + 0.0 + np.log(2) + np.log(4)) / 4, rel=1e-14)

    zt = torch.from_numpy(z).requires_grad_(True)
    lt = torch.nn.CrossEntropyLoss()(zt, torch.from_numpy(y))
    lt.backward()
    assert loss == pytest.approx(lt.item(), rel=1e-14)
    np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=0, atol=1e-15)

    # float32 too: finite, and equal to torch's
    loss32, dz32 = SoftmaxCrossEntropy(np.float32).forward_backward(z.astype(np.float32), y)
    assert np.isfinite(loss32) and np.all(np.isfinite(dz32))
    zt32 = torch.from_numpy(z.astype(np.float32)).requires_grad_(True)
    lt32 = torch.nn.CrossEntropyLoss()(zt32, torch.from_numpy(y))
    lt32.backward()
    assert loss32 == pytest.approx(lt32.item(), rel=1e-6)
    np.testing.assert_allclose(dz32, zt32.grad.numpy(), rtol=0, atol=1e-7)


# --------------------------------------------------------------------------- BLAS gemm


def _ordered(a: np.ndarray, order: str) -> np.ndarray:
    out = np.asfortranarray(a) if order == "F" else np.ascontiguousarray(a)
    assert out.flags.f_contiguous if order == "F" else out.flags.c_contiguous
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order_a", ["C", "F"])
@pytest.mark.parametrize("order_b", ["C", "F"])
@pytest.mark.parametrize("order_out", ["C", "F"])
def test_gemm_all_memory_orders(dtype, order_a, order_b, order_out):
    rng = _rng(8)
    m, k, n = 5, 7, 3
    a64, b64 = rng.normal(size=(m, k)), rng.normal(size=(k, n))
    a, b = _ordered(a64.astype(dtype), order_a), _ordered(b64.astype(dtype), order_b)
    a_copy, b_copy = a.copy(), b.copy()
    tol = 1e-5 if dtype == np.float32 else 1e-13
    expected = a.astype(np.float64) @ b.astype(np.float64)

    out = _ordered(np.full((m, n), np.nan, dtype=dtype), order_out)  # beta = 0 ignores old content
    address = out.__array_interface__["data"][0]
    result = gemm(a, b, out)
    assert result is out
    assert out.__array_interface__["data"][0] == address
    assert out.flags.f_contiguous if order_out == "F" else out.flags.c_contiguous
    assert out.dtype == dtype
    assert rel_error(out, expected) < tol
    np.testing.assert_array_equal(a, a_copy)
    np.testing.assert_array_equal(b, b_copy)

    # alpha and beta: out = alpha * a @ b + beta * out, accumulated in place
    c0 = rng.normal(size=(m, n))
    out2 = _ordered(c0.astype(dtype), order_out)
    view = out2[...]
    gemm(a, b, out2, alpha=-0.5, beta=1.0)
    assert rel_error(out2, c0.astype(dtype).astype(np.float64) - 0.5 * expected) < tol
    assert np.shares_memory(view, out2)
    np.testing.assert_array_equal(view, out2)
    out3 = _ordered(c0.astype(dtype), order_out)
    gemm(a, b, out3, alpha=2.0, beta=0.25)
    assert rel_error(out3, 0.25 * c0.astype(dtype).astype(np.float64) + 2.0 * expected) < tol
    # accumulating twice adds twice
    out4 = _ordered(np.zeros((m, n), dtype=dtype), order_out)
    gemm(a, b, out4, beta=1.0)
    gemm(a, b, out4, beta=1.0)
    assert rel_error(out4, 2 * expected) < tol


def test_gemm_writes_into_row_and_column_slices():
    """The bias gradient goes into ``grads['bias'][None, :]``: a (1, n) view of a 1-D array."""
    rng = _rng(9)
    dout = np.asfortranarray(rng.normal(size=(8, 4)))
    ones = np.ones((1, 8))
    bias = np.zeros(4)
    gemm(ones, dout, out=bias[None, :])
    np.testing.assert_allclose(bias, dout.sum(axis=0), rtol=1e-14)
    gemm(ones, dout, out=bias[None, :], alpha=-0.1, beta=1.0)
    np.testing.assert_allclose(bias, 0.9 * dout.sum(axis=0), rtol=1e-14)


def test_gemm_rejects_strided_views():
    a = np.ones((6, 6))[::2, ::2]
    with pytest.raises(ValueError):
        gemm(a, np.ones((3, 3)), np.empty((3, 3)))
    with pytest.raises(ValueError):
        gemm(np.ones((3, 3)), np.ones((3, 3)), np.empty((6, 6))[::2, ::2])
