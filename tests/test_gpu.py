"""The NumPy engine on a GPU (``--engine numpy --device cuda``, CuPy): the same layer code, the
same numbers. Skipped, with the reason, where there is no GPU or no CuPy; run where both are
(``NNSCRATCH_REQUIRE_OPTIONAL=1`` turns a missing CuPy on a GPU machine into a failure).

* In float64 the CuPy engine's step losses equal the CPU engine's to < 1e-9 relative, for plain
  SGD (the fused update), Adam, dropout (the loop's masks, moved to the device) and batch norm +
  GELU; its weights after the steps too.
* Mixed precision runs on the GPU (the loss stays finite, nothing is skipped on a sane batch).
* The torch twin on the GPU with fp16 autocast and its GradScaler.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from nnscratch.engines import no_cuda_device
from nnscratch.model.registry import initial_state
from nnscratch.model.spec import mlp_spec
from nnscratch.numpy_engine.model import NumpyEngine
from nnscratch.training.streams import init_rng


def _why_no_gpu() -> str | None:
    """None when CuPy sees a GPU, else why these tests cannot run here."""
    if no_cuda_device():
        return "no GPU here: this machine has no NVIDIA driver (/dev/nvidiactl, /proc/driver/nvidia)"
    try:
        import cupy
    except ImportError:
        if os.environ.get("NNSCRATCH_REQUIRE_OPTIONAL", "") not in ("", "0"):
            raise
        return "CuPy is not installed: pip install 'nnscratch[gpu]'"
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            return "CuPy sees no CUDA GPU"
    except Exception as exc:  # CUDARuntimeError without a usable driver
        return f"CuPy cannot reach a GPU: {exc}"
    return None


REASON = _why_no_gpu()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

STEPS, BATCH = 12, 32


def _batches(spec, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((STEPS, BATCH, spec.input_dim))
    y = rng.integers(0, spec.num_classes, (STEPS, BATCH))
    return x, y, rng


def _run(spec, device: str, dtype=np.float64, precision: str = "fp32", **options):
    engine = NumpyEngine(spec, initial_state(spec, init_rng(0)), dtype, device=device, precision=precision,
                         **options)
    x, y, rng = _batches(spec)
    dropout = [i for i, layer in enumerate(spec.layers) if layer.kind == "dropout"]
    widths = {i: d_in for i, _, d_in, _ in spec.walk()}
    masks_rng = np.random.default_rng(7)  # drawn on the host for both, as the training loop draws them
    for s in range(STEPS):
        masks = {i: masks_rng.random((BATCH, widths[i])) >= spec.layers[i].args["p"] for i in dropout}
        engine.train_step(x[s].astype(dtype), y[s], 0.05, masks)
    losses, correct = engine.take_epoch_stats()
    return losses, correct, engine.state_dict()


@pytest.mark.parametrize("case", [
    {"spec": {"hidden": (64, 32)}, "options": {}},
    {"spec": {"hidden": (64,), "dropout": 0.3}, "options": {"optimizer": "adam"}},
    {"spec": {"hidden": (48, 48), "batch_norm": True, "activation": "gelu"},
     "options": {"optimizer": "sgd", "optimizer_options": {"momentum": 0.9}}},
], ids=["sgd-fused", "adam-dropout", "batchnorm-gelu-momentum"])
def test_the_cupy_engine_gives_the_cpu_engines_step_losses_in_float64(case):
    spec = mlp_spec(input_dim=40, num_classes=5, **case["spec"])
    cpu_losses, cpu_correct, cpu_state = _run(spec, "cpu", **case["options"])
    gpu_losses, gpu_correct, gpu_state = _run(spec, "cuda", **case["options"])
    assert isinstance(gpu_losses, np.ndarray) and gpu_losses.shape == (STEPS,)
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-9, atol=0)
    assert gpu_correct == cpu_correct
    for name, value in cpu_state.items():
        assert isinstance(gpu_state[name], np.ndarray)
        np.testing.assert_allclose(gpu_state[name], value, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_runs_on_the_gpu_like_on_the_cpu(precision):
    spec = mlp_spec(input_dim=40, hidden=(64,), num_classes=5)
    cpu_losses, _, _ = _run(spec, "cpu", np.float32, precision)
    gpu_losses, _, _ = _run(spec, "cuda", np.float32, precision)
    assert np.isfinite(gpu_losses).all()
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-2)  # the same rounding, another summation order


def test_the_torch_twin_trains_under_fp16_autocast_on_the_gpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU (a CPU build of torch)")
    from nnscratch.torch_engine import TorchEngine

    spec = mlp_spec(input_dim=40, hidden=(64,), num_classes=5)
    engine = TorchEngine(spec, initial_state(spec, init_rng(0)), np.float32, device="cuda", precision="fp16")
    x, y, _ = _batches(spec)
    for s in range(STEPS):
        engine.train_step(x[s].astype(np.float32), y[s], 0.05)
    losses, _ = engine.take_epoch_stats()
    assert np.isfinite(losses).all()
    assert engine.take_precision_stats() == {"loss_scale": 2.0 ** 16, "skipped_steps": 0}
