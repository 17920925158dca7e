"""Mixed precision (issue 24, item 2): ``--precision fp16|bf16``.

* The NumPy engine's loss scaling (:class:`~nnscratch.numpy_engine.precision.LossScaler`) makes
  the scale and skip decisions of ``torch.amp.GradScaler`` step for step, on scripted sequences
  of finite and overflowing gradients (torch is the oracle).
* bfloat16 rounding by bit manipulation, and float16 rounding, equal torch's casts.
* The low-precision products equal torch's float16 / bfloat16 matrix products to their rounding,
  and overflow where they overflow.
* Both engines skip a step whose gradient overflows (weights untouched, scale halved).
* fp16 and bf16 runs on 2,000 MNIST images end within 1 % accuracy of fp32, in both engines, and
  log the loss scale and the skipped steps in every epoch's record.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers import optional_import
from nnscratch.engines import make_engine
from nnscratch.errors import UsageError
from nnscratch.model.registry import initial_state
from nnscratch.model.spec import mlp_spec
from nnscratch.numpy_engine.backend import NUMPY
from nnscratch.numpy_engine.precision import LossScaler, LowPrecisionProducts, round_to_bf16, round_to_fp16
from nnscratch.training.streams import init_rng

torch = optional_import("torch")

# F: a finite gradient, I: one entry +inf, N: one entry NaN, B: float32's largest finite value (not skipped)
SCRIPT = "FFFFIFFFNFFFFFFFIIFFFFFFFFFFFFFFFBFFFF"


def _gradient(kind: str, scale: float) -> np.ndarray:
    g = np.array([0.5, -0.25, 1e-3], dtype=np.float32) * np.float32(scale)  # the scaled gradient backward gives
    if kind == "I":
        g[1] = np.inf
    elif kind == "N":
        g[2] = np.nan
    elif kind == "B":
        g[0] = np.finfo(np.float32).max
    return g


def _torch_decisions(script: str, **options) -> list[tuple[float, bool]]:
    """(scale after the step, step skipped) per step, by torch's GradScaler on the CPU."""
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([p], lr=1.0)
    scaler = torch.amp.GradScaler("cpu", **options)
    out = []
    for kind in script:
        scaler.scale(torch.zeros(()))  # starts the scale, as a scaled loss does
        p.grad = torch.from_numpy(_gradient(kind, scaler.get_scale()))
        before = p.detach().clone()
        scaler.step(opt)
        scaler.update()
        out.append((scaler.get_scale(), bool(torch.equal(before, p.detach()))))
    return out


def _our_decisions(script: str, **options) -> list[tuple[float, bool]]:
    scaler = LossScaler(**options)
    out = []
    for kind in script:
        grads = {"p": _gradient(kind, float(scaler.scale))}
        found_inf = scaler.unscale_and_check(grads, np)
        scaler.update(found_inf)
        out.append((float(scaler.scale), found_inf))
    return out


@pytest.mark.parametrize("options", [{"growth_interval": 3}, {"growth_interval": 1, "init_scale": 2.0 ** 126},
                                     {"growth_interval": 4, "growth_factor": 3.0, "backoff_factor": 0.25}],
                         ids=["grow-every-3", "capped-at-float32-max", "other-factors"])
def test_loss_scaler_decides_as_torch_grad_scaler_step_for_step(options):
    ours, theirs = _our_decisions(SCRIPT, **options), _torch_decisions(SCRIPT, **options)
    assert ours == theirs
    assert any(skipped for _, skipped in ours) and not all(skipped for _, skipped in ours)
    assert len({scale for scale, _ in ours}) > 2  # it grew and fell


def test_loss_scaler_defaults_are_grad_scalers_and_grow_after_2000_clean_steps():
    script = "F" * 2001 + "I" + "F" * 3
    assert _our_decisions(script) == _torch_decisions(script)
    scaler = LossScaler()
    assert (float(scaler.scale), scaler.growth_factor, scaler.backoff_factor, scaler.growth_interval) == \
        (2.0 ** 16, 2.0, 0.5, 2000)


def test_bf16_rounding_by_bits_equals_torchs_cast():
    rng = np.random.default_rng(0)
    a = np.concatenate([(rng.standard_normal(5000) * 10.0 ** rng.integers(-40, 37, 5000)).astype(np.float32),
                        np.array([0.0, -0.0, 1.0, 3.4e38, -3.4e38, np.inf, -np.inf, 1e-45], np.float32)])
    bits = rng.integers(0, 2 ** 16, 200, dtype=np.uint32) << 16 | np.uint32(0x8000)  # exact ties
    ties = bits.view(np.float32)
    a = np.concatenate([a, ties[np.isfinite(ties)]])
    expected = torch.from_numpy(a).to(torch.bfloat16).to(torch.float32).numpy()
    ours = round_to_bf16(a)
    np.testing.assert_array_equal(ours, expected)
    assert (ours.view(np.uint32) & 0xFFFF).max() == 0   # the low 16 bits are gone
    assert np.isnan(round_to_bf16(np.array([np.nan, -np.nan], np.float32))).all()
    wrap = np.array([0xFFFFFFFF], np.uint32).view(np.float32)  # a NaN the + 0x7FFF would wrap to 0
    assert np.isnan(round_to_bf16(wrap)).all()


def test_fp16_rounding_equals_torchs_cast_and_overflows_past_65504():
    a = np.array([1.0, 1 + 2 ** -11, 65504.0, 65520.0, 1e-8, -7.3e4, 0.1], np.float32)
    expected = torch.from_numpy(a).to(torch.float16).to(torch.float32).numpy()
    np.testing.assert_array_equal(round_to_fp16(a), expected)
    assert np.isinf(round_to_fp16(a)[[3, 5]]).all()


@pytest.mark.parametrize("precision,tdtype", [("fp16", "float16"), ("bf16", "bfloat16")])
def test_low_precision_products_equal_torchs_to_their_rounding(precision, tdtype):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((16, 40)).astype(np.float32)
    b = np.asfortranarray(rng.standard_normal((40, 24)).astype(np.float32))
    out = np.empty((16, 24), np.float32, order="F")
    LowPrecisionProducts(NUMPY, precision)(a, b, out)
    dt = getattr(torch, tdtype)
    expected = (torch.from_numpy(a).to(dt) @ torch.from_numpy(np.ascontiguousarray(b)).to(dt)).float().numpy()
    eps = 2.0 ** -10 if precision == "fp16" else 2.0 ** -7   # one unit of the format's last place, relative
    np.testing.assert_allclose(out, expected, rtol=2 * eps, atol=1e-6)
    assert not np.array_equal(out, a @ b)                     # it really rounded
    if precision == "fp16":                                  # 300 * 300 * 40 > 65504: infinity, as torch
        big = np.full((2, 40), 300.0, np.float32)
        res = np.empty((2, 24), np.float32)
        LowPrecisionProducts(NUMPY, "fp16")(big, np.abs(b) * 0 + 300.0, res)
        assert np.isinf(res).all()


def _engines(precision: str):
    spec = mlp_spec(input_dim=20, hidden=(16,), num_classes=4)
    initial = initial_state(spec, init_rng(3))
    return [make_engine(name, spec, initial, np.float32, device="cpu", precision=precision)
            for name in ("numpy", "torch")]


def test_both_engines_skip_an_overflowing_step_and_halve_the_scale():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((8, 20)).astype(np.float32), rng.integers(0, 4, 8)
    huge = x * np.float32(1e5)                     # the first product overflows float16
    for engine in _engines("fp16"):
        engine.train_step(x, y, 0.1)
        before = engine.state_dict()
        engine.train_step(huge, y, 0.1)
        after = engine.state_dict()
        assert all(np.array_equal(before[k], after[k]) for k in before), engine.name
        engine.train_step(x, y, 0.1)
        assert engine.take_precision_stats() == {"loss_scale": 2.0 ** 15, "skipped_steps": 1}, engine.name
        state = engine.state()
        assert float(state["engine.loss_scale"]) == 2.0 ** 15 and int(state["engine.growth_tracker"]) == 1


def test_loss_scale_state_resumes():
    engine, twin = _engines("fp16")
    for e in (engine, twin):
        e.load_state({**e.state(), "engine.loss_scale": np.float32(1024.0), "engine.growth_tracker": np.int64(7)})
        state = e.state()
        assert (float(state["engine.loss_scale"]), int(state["engine.growth_tracker"])) == (1024.0, 7), e.name


def test_mixed_precision_needs_float32_master_weights():
    spec = mlp_spec(input_dim=4, hidden=(3,), num_classes=2)
    for name in ("numpy", "torch"):
        with pytest.raises(UsageError, match="--dtype float32"):
            make_engine(name, spec, initial_state(spec, init_rng(0)), np.float64, device="cpu", precision="bf16")


@pytest.fixture(scope="module")
def mnist_runs(mnist):
    """One epoch on 2,000 MNIST images (lr 0.1), per engine and precision: the last epoch's record."""
    from nnscratch.data.preprocess import to_features
    from nnscratch.training.streams import EpochOrders
    from nnscratch.training.trainer import fit

    n, spec = 2000, mlp_spec()
    x, y = to_features(mnist.train_images[:n], np.float32), mnist.train_labels[:n].astype(np.int64)
    xv, yv = to_features(mnist.val_images[:2000], np.float32), mnist.val_labels[:2000].astype(np.int64)
    runs = {}
    for name in ("numpy", "torch"):
        for precision in ("fp32", "fp16", "bf16"):
            engine = make_engine(name, spec, initial_state(spec, init_rng(0)), np.float32, device="cpu",
                                 precision=precision)
            history = fit(engine, (x, y), (xv, yv), orders=[EpochOrders(0, n).order(0)], batch_size=64,
                          num_classes=10, lr=0.1, gradient_flow=2)  # recorded steps see low-precision values
            runs[name, precision] = history.epochs[-1]
    return runs


@pytest.mark.parametrize("engine", ["numpy", "torch"])
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_on_mnist_ends_within_1_percent_of_fp32(mnist_runs, engine, precision):
    fp32, low = mnist_runs[engine, "fp32"], mnist_runs[engine, precision]
    assert fp32.val_accuracy > 0.8
    assert abs(low.val_accuracy - fp32.val_accuracy) < 0.01
    assert low.train_loss != fp32.train_loss                 # it did compute in another precision
    assert (fp32.loss_scale, fp32.skipped_steps) == (None, None)
    expected_scale = 2.0 ** 16 if precision == "fp16" else 1.0
    assert (low.loss_scale, low.skipped_steps) == (expected_scale, 0)
    assert set(low.gradient_flow["params"]) == set(fp32.gradient_flow["params"])


def test_the_twins_agree_in_mixed_precision_to_its_rounding(mnist_runs):
    """The hand-written emulation and torch's autocast round at the same places: their mean
    training losses agree far better than either agrees with fp32."""
    for precision in ("fp16", "bf16"):
        ours, theirs, fp32 = (mnist_runs[e, p].train_loss for e, p in
                              (("numpy", precision), ("torch", precision), ("numpy", "fp32")))
        assert abs(ours - theirs) < abs(ours - fp32), precision
