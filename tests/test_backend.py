"""The one array backend of the NumPy engine (issue 24, item 1).

* "One place": no module of ``nnscratch.numpy_engine`` but ``backend.py`` imports NumPy or SciPy
  (checked by reading the package's sources), and the layers' products go through the backend's
  ``gemm`` (a counting backend sees every one).
* The CPU backend's ``gemm`` is ``alpha * a @ b + beta * out`` for every memory order; called from
  compiled code, it is SciPy's wrapper bit for bit and lets other threads run during a product.
* ``--device cuda`` without a GPU or without CuPy is one line naming what is missing (exit 2).
* The losses stay backend scalars until the engine's ``take_epoch_stats``.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_one_line_error, run_cli, skip_where_cuda_may_exist
from nnscratch.errors import UsageError
from nnscratch.model.registry import dropout_layers, initial_state
from nnscratch.model.spec import mlp_spec
from nnscratch.numpy_engine import backend as backend_module
from nnscratch.numpy_engine.backend import NUMPY, backend_for, numpy_gemm
from nnscratch.numpy_engine.model import NumpyEngine
from nnscratch.training.streams import init_rng

PACKAGE = Path(backend_module.__file__).parent
IMPORT = re.compile(r"^\s*(import|from)\s+(numpy|scipy|cupy|cupyx)\b", re.MULTILINE)


def test_only_the_backend_imports_numpy_or_scipy():
    importers = sorted(p.name for p in PACKAGE.glob("*.py") if IMPORT.search(p.read_text(encoding="utf-8")))
    assert importers == ["backend.py"]
    assert len(list(PACKAGE.glob("*.py"))) >= 9  # the package was really read


def test_every_product_of_the_layers_goes_through_the_backends_gemm():
    calls = []

    def counting_gemm(a, b, out, alpha=1.0, beta=0.0):
        calls.append((a.shape, b.shape))
        return numpy_gemm(a, b, out, alpha, beta)

    counting = dataclasses.replace(NUMPY, gemm=counting_gemm)
    spec = mlp_spec(input_dim=6, hidden=(5,), num_classes=3)
    initial = initial_state(spec, init_rng(0))
    engine = NumpyEngine(spec, initial, np.float64)
    reference = NumpyEngine(spec, initial, np.float64)
    for layer in engine.model.layers:
        layer.to(counting)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 6)), rng.integers(0, 3, 4)
    engine.train_step(x, y, 0.1)
    reference.train_step(x, y, 0.1)
    # forward: 2 products; backward: dW, db of both layers and dx of the second
    assert len(calls) == 2 + 5
    for name, value in reference.state_dict().items():
        np.testing.assert_array_equal(engine.state_dict()[name], value)


@pytest.mark.parametrize("orders", ["CCC", "FFF", "CFC", "FCF"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_cpu_gemm_is_alpha_a_b_plus_beta_out_in_any_order(orders, dtype):
    rng = np.random.default_rng(1)
    a = np.asarray(rng.standard_normal((5, 7)), dtype=dtype, order=orders[0])
    b = np.asarray(rng.standard_normal((7, 3)), dtype=dtype, order=orders[1])
    out = np.asarray(rng.standard_normal((5, 3)), dtype=dtype, order=orders[2])
    expected = -0.5 * (a.astype(np.float64) @ b) + 2.0 * out
    NUMPY.gemm(a, b, out, alpha=-0.5, beta=2.0)
    np.testing.assert_allclose(out, expected, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.fixture
def gil_free_products(monkeypatch):
    """The backend's products through the compiled call for one test (as after release_gil_in_products)."""
    compiled = backend_module._compile_gemm()
    assert compiled, "numba, a dependency, is missing: the compiled gemm is not tested"
    monkeypatch.setattr(backend_module, "_compiled_gemm", compiled)


def test_products_hold_the_gil_until_a_batch_thread_asks_them_not_to(monkeypatch):
    """The default is SciPy's wrapper (no numba import, no compiled code to load, for runs without
    a thread beside the engine); the augmentation's thread turns the compiled call on."""
    monkeypatch.setattr(backend_module, "_compiled_gemm", False)
    assert NUMPY.gemm is backend_module.cpu_gemm and not backend_module._compiled_gemm
    pixels = np.random.default_rng(0).integers(0, 256, (8, 16), dtype=np.uint8)
    from nnscratch.data.augment import Augmentation
    from nnscratch.training.augmented import AugmentedBatches

    batches = AugmentedBatches(pixels, (4, 4, 1), Augmentation(shift=1), 0, 4, prefetch=2)
    with batches.epoch(0, np.arange(8)) as rows:
        rows(0)
        assert backend_module._compiled_gemm
    assert backend_module.release_gil_in_products()


def test_the_compiled_gemm_is_scipys_wrapper_bit_for_bit(gil_free_products):
    """The backend's product (BLAS called from compiled code) against SciPy's f2py wrapper of the
    same BLAS: every memory order, both dtypes, shapes down to one row, K = 1 and K = 0, beta 0 over NaN."""
    assert NUMPY.gemm is backend_module.cpu_gemm
    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.float64):
        for m, k, n in ((64, 784, 533), (1, 9, 4), (6, 1, 5), (3, 4, 1), (130, 70, 257), (4, 0, 3)):
            for orders in ("CCC", "FFF", "CFC", "FCF", "CCF", "FFC", "CFF", "FCC"):
                for alpha, beta in ((1.0, 0.0), (-0.05, 1.0), (0.5, -2.0)):
                    a = np.asarray(rng.standard_normal((m, k)), dtype, order=orders[0])
                    b = np.asarray(rng.standard_normal((k, n)), dtype, order=orders[1])
                    out = np.asarray(rng.standard_normal((m, n)), dtype, order=orders[2])
                    if beta == 0.0:
                        out[...] = np.nan                 # ignored, as BLAS specifies
                    reference = out.copy(order="A")
                    assert NUMPY.gemm(a, b, out, alpha, beta) is out
                    numpy_gemm(a, b, reference, alpha, beta)
                    np.testing.assert_array_equal(out, reference, err_msg=f"{dtype} {m, k, n} {orders}")
    with pytest.raises(ValueError, match="shapes"):
        NUMPY.gemm(np.ones((3, 4)), np.ones((5, 2)), np.empty((3, 2)))
    with pytest.raises(ValueError, match="strided"):
        NUMPY.gemm(np.ones((3, 8))[:, ::2], np.ones((4, 2)), np.empty((3, 2)))
    with pytest.raises(ValueError, match="dtype"):
        NUMPY.gemm(np.ones((3, 4), np.float32), np.ones((4, 2)), np.empty((3, 2)))


def test_without_numba_the_cpu_gemm_is_scipys_wrapper(monkeypatch):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((5, 7)), np.asfortranarray(rng.standard_normal((7, 3)))
    out = rng.standard_normal((5, 3))
    reference = out.copy()
    monkeypatch.setattr(backend_module, "_compiled_gemm", False)  # the default; and where numba is missing
    assert backend_module.cpu_gemm(a, b, out, 0.5, 1.0) is out
    np.testing.assert_allclose(out, 0.5 * (a @ b) + reference, rtol=1e-12, atol=1e-12)


def test_the_compiled_gemm_lets_other_threads_run_during_a_product(gil_free_products):
    """SciPy's wrapper holds the GIL for the whole product; the backend's call does not. A thread
    makes one product of ~0.1 s (one BLAS thread) while this one records the time in a loop:
    beside SciPy's wrapper it cannot run in the product's middle, beside ours it runs there."""
    import threading

    from threadpoolctl import threadpool_limits

    a = np.asfortranarray(np.random.default_rng(0).standard_normal((1000, 1000)))
    out = np.empty_like(a)

    def ticks_inside(gemm) -> int:
        span, done = [], threading.Event()

        def product():
            span.append(time.perf_counter())
            gemm(a, a, out)
            span.append(time.perf_counter())
            done.set()

        ticks = []
        worker = threading.Thread(target=product)
        worker.start()
        while not done.is_set():
            ticks.append(time.perf_counter())
        worker.join()
        start, end = span
        middle = (start + 0.2 * (end - start), end - 0.2 * (end - start))
        return sum(middle[0] < t < middle[1] for t in ticks)

    with threadpool_limits(1):
        NUMPY.gemm(a, a, out)
        # the control, that the test can tell the two apart (SciPy 1.17's f2py wrapper holds the GIL;
        # should a later SciPy release it, this line fails and the compiled call may no longer be needed)
        assert ticks_inside(numpy_gemm) == 0
        assert ticks_inside(NUMPY.gemm) > 100     # ours: this thread kept running beside it


def test_the_cpu_erf_is_scipys_in_float64_and_within_5e_7_of_it_in_float32():
    """float32 erf is a compiled rational approximation (numpy_erf): checked against SciPy's
    float64 erf (the oracle) on a dense grid, in place, in Fortran order; float64 and strided
    float32 arrays take SciPy itself."""
    import scipy.special

    x = np.linspace(-7, 7, 1_400_001)
    exact = scipy.special.erf(x)
    ours = NUMPY.erf(x.astype(np.float32))
    assert ours.dtype == np.float32
    assert np.abs(ours - exact).max() < 5e-7
    assert np.all(np.abs(ours) <= 1) and ours[0] == -1 and ours[-1] == 1 and NUMPY.erf(np.float32([0]))[0] == 0
    assert np.array_equal(ours, -NUMPY.erf(-x.astype(np.float32)))          # odd, exactly
    assert np.array_equal(NUMPY.erf(x), exact)                             # float64: SciPy's, bit for bit
    f = np.asfortranarray(x[:1_400_000].astype(np.float32).reshape(1000, 1400))
    expected = NUMPY.erf(np.ascontiguousarray(f))
    assert NUMPY.erf(f, out=f) is f and np.array_equal(f, expected)        # in place, any order
    strided = x.astype(np.float32)[::3]
    assert np.array_equal(NUMPY.erf(strided), scipy.special.erf(strided))


def test_the_cpu_backend_keeps_host_arrays_as_they_are():
    a = np.arange(6.0).reshape(2, 3)
    assert NUMPY.to_device(a) is a and NUMPY.to_host(a) is a
    assert NUMPY.order_for(64) == "F" and NUMPY.order_for(1024) == "C"
    assert backend_for("cpu") is NUMPY and backend_for("auto") is NUMPY
    assert not NUMPY.is_gpu


def test_the_loss_stays_a_backend_scalar_until_the_epoch_is_drained():
    spec = mlp_spec(input_dim=6, hidden=(5,), num_classes=3)
    engine = NumpyEngine(spec, initial_state(spec, init_rng(0)), np.float32)
    rng = np.random.default_rng(2)
    for _ in range(3):
        engine.train_step(rng.standard_normal((4, 6)).astype(np.float32), rng.integers(0, 3, 4), 0.1)
    assert all(isinstance(loss, np.float64) for loss in engine._losses)  # a 0-d CuPy array on the GPU
    losses, correct = engine.take_epoch_stats()
    assert losses.dtype == np.float64 and losses.shape == (3,) and 0 <= correct <= 12
    assert engine._losses == [] and engine._correct == []


def test_cuda_without_cupy_is_one_line_with_the_install_hint(monkeypatch):
    monkeypatch.setattr(backend_module, "_CUPY", None)
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    with pytest.raises(UsageError) as exc:
        backend_for("cuda")
    message = str(exc.value)
    assert "needs CuPy" in message and "nnscratch[gpu]" in message and "\n" not in message


def test_the_cli_refuses_the_numpy_engine_on_a_missing_gpu(tmp_path):
    skip_where_cuda_may_exist()
    proc = run_cli(["train", "--engine", "numpy", "--device", "cuda", "--out", str(tmp_path / "run"), "--quiet"],
                   cwd=tmp_path)
    assert proc.returncode == 2
    assert "--engine numpy --device cuda" in assert_one_line_error(proc.stderr, proc.stdout)
    assert not (tmp_path / "run").exists()


#: NumPy dressed as a device: the GPU code paths of the engine (moving the loop's arrays, losses
#: kept as backend scalars and stacked once per epoch, row-major buffers, host copies for the
#: statistics) run on the CPU, so they are tested here even where no GPU is (tests/test_gpu.py
#: runs them on a real one).
PRETEND_DEVICE = dataclasses.replace(NUMPY, name="cuda", column_major_rows=0, is_gpu=True)


def test_options_whose_code_is_cpu_only_are_refused_on_the_gpu(monkeypatch):
    monkeypatch.setattr("nnscratch.numpy_engine.model.backend_for", lambda device: PRETEND_DEVICE)
    spec = mlp_spec(input_dim=6, hidden=(5,), num_classes=3)
    with pytest.raises(UsageError, match="--device cuda runs without --jit, --l1"):
        NumpyEngine(spec, initial_state(spec, init_rng(0)), np.float32, device="cuda", l2=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_the_device_code_paths_give_the_cpu_numbers(monkeypatch, precision):
    from nnscratch.training.streams import EpochOrders
    from nnscratch.training.trainer import fit

    spec = mlp_spec(input_dim=30, hidden=(24, 16), num_classes=4, dropout=0.2, batch_norm=True)
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((96, 30)).astype(np.float32), rng.integers(0, 4, 96)
    results = []
    for device in ("cpu", "cuda"):
        monkeypatch.setattr("nnscratch.numpy_engine.model.backend_for",
                            lambda d: PRETEND_DEVICE if d == "cuda" else NUMPY)
        engine = NumpyEngine(spec, initial_state(spec, init_rng(0)), np.float32, device=device,
                             precision=precision, optimizer="adam")
        history = fit(engine, (x, y), (x[:40], y[:40]), orders=[EpochOrders(0, 96).order(e) for e in range(2)],
                      batch_size=16, num_classes=4, lr=0.01, epochs=2, gradient_flow=2,
                      dropout=dropout_layers(spec))
        results.append((history, engine.state_dict(), engine.predict_logits(x[:10])))
    (cpu, cpu_state, cpu_logits), (dev, dev_state, dev_logits) = results
    # row- against column-major buffers: another summation order, which fp16's rounding magnifies
    rtol = 1e-5 if precision == "fp32" else 2e-3
    np.testing.assert_allclose(dev.step_loss, cpu.step_loss, rtol=rtol)
    np.testing.assert_allclose([e.train_accuracy for e in dev.epochs], [e.train_accuracy for e in cpu.epochs],
                               atol=0 if precision == "fp32" else 2 / 96)  # fp16: a near tie may flip
    assert dev.epochs[-1].gradient_flow is not None
    assert (dev.epochs[-1].loss_scale, dev.epochs[-1].skipped_steps) == \
        (cpu.epochs[-1].loss_scale, cpu.epochs[-1].skipped_steps)
    np.testing.assert_allclose(dev_logits, cpu_logits, rtol=20 * rtol, atol=20 * rtol)
    for name, value in cpu_state.items():
        np.testing.assert_allclose(dev_state[name], value, rtol=20 * rtol, atol=20 * rtol, err_msg=name)
