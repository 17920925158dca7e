"""The Numba kernels (--jit) compute exactly what the plain NumPy layers compute."""

import numpy as np
import pytest

from helpers import optional_import

optional_import("numba")

from nnscratch.numpy_engine import NumpyEngine, ReLU, SoftmaxCrossEntropy  # noqa: E402
from nnscratch.registry import initial_state  # noqa: E402
from nnscratch.numpy_engine.jit import JitReLU, JitSoftmaxCrossEntropy  # noqa: E402
from nnscratch.spec import mlp_spec  # noqa: E402
from nnscratch.train import batch_orders, fit  # noqa: E402


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


def test_jit_engine_trains_like_the_plain_engine():
    rng = np.random.default_rng(2)
    x, y = rng.random((700, 30)), rng.integers(0, 10, 700)
    spec = mlp_spec(input_dim=30, hidden=(20,), num_classes=10)
    initial = initial_state(spec, np.random.default_rng(3))
    orders = batch_orders(np.random.default_rng(4), 700, 2)
    runs = [fit(NumpyEngine(spec, initial, np.float64, jit=jit), (x, y), None, orders, 64, 10, lr=0.05,
                progress=False) for jit in (False, True)]
    np.testing.assert_allclose(runs[1].step_loss, runs[0].step_loss, rtol=1e-12)
    assert runs[0].step_loss[-1] < runs[0].step_loss[0]
