"""Mixed precision by hand (``--precision fp16|bf16``): low-precision products, float32 master
weights, dynamic loss scaling.

What torch's ``autocast`` + ``GradScaler`` do, written out so that each part can be read:

1. **Master weights stay float32.** The parameters, the optimizer state and the update are
   float32 exactly as in an fp32 run; only the matrix products see low-precision numbers.
2. **Products in float16 / bfloat16** (:class:`LowPrecisionProducts`): the operands of every
   product of a dense layer (``x @ W.T``, ``dout @ W``, ``dout.T @ x``, the bias sums) are rounded
   to the low format, multiplied with float32 accumulation, and the result is rounded to the low
   format again. That is what a GPU's tensor cores do with fp16/bf16 operands (fp32 accumulation)
   and what autocast's fp16 ``linear`` returns; the rest (activations, softmax, the loss) stays
   float32, as autocast keeps softmax and cross-entropy in float32.

   This is an *emulation* on both backends: the rounded values are held in float32 arrays and
   the product is the ordinary float32 gemm. Exact, because a float16 or bfloat16 number is a
   float32 number, and the product of two of them (11 or 8 significant bits each) fits float32's
   24 bits; only the accumulation order differs from a real fp16 kernel. NumPy has no float16
   BLAS (its float16 ``matmul`` is a slow loop) and neither NumPy nor CuPy has a bfloat16 dtype,
   so this costs a few extra passes and is never faster than fp32: it shows the *numerics* (the
   rounding, the overflow past 65504 in fp16, why loss scaling is needed), not the speed
   (docs/precision.md says where mixed precision is faster: the torch twin on a GPU).

   bfloat16 rounding (:func:`round_to_bf16`), by bit manipulation on the float32 pattern: a
   bfloat16 is the top 16 bits of a float32 (sign, 8 exponent bits, 7 mantissa bits), so with
   ``u`` the 32 bits, round to nearest, ties to even, is::

       u' = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000

   (add just under half of the dropped part, plus one if the kept part is odd, then cut). Values
   beyond bfloat16's largest finite number round to infinity, as they should; a NaN stays a NaN
   or becomes an infinity (either way not finite, which is all the overflow check needs).

3. **Dynamic loss scaling** (:class:`LossScaler`, fp16 only, as torch uses ``GradScaler`` with
   fp16 and not with bf16, whose range is float32's): the loss gradient is multiplied by ``S``
   before the backward pass so that small gradients do not flush to zero in fp16, the parameter
   gradients are divided by ``S`` again, and a step whose gradients are not all finite is skipped.
"""

from __future__ import annotations

from nnscratch.numpy_engine.backend import Backend, np

PRECISIONS = ("fp32", "fp16", "bf16")


def round_to_bf16(a, out=None):
    """Round float32 ``a`` to the nearest bfloat16 (ties to even), kept as float32; into ``out``
    (may be ``a``) or a new array. The bit formula is in the module docstring."""
    xp = _xp(a)
    if a.dtype != np.float32:
        raise ValueError(f"bfloat16 rounding works on float32 arrays, got {a.dtype}")
    if out is None:
        out = a.copy()
    elif out is not a:
        xp.copyto(out, a)
    nan = xp.isnan(out)                 # a NaN near 0xFFFFFFFF would wrap around to 0: keep NaNs aside
    u = out.view(np.uint32)
    odd = (u >> 16) & 1                 # the lowest kept bit: ties go to the even neighbour
    u += np.uint32(0x7FFF)
    u += odd
    u &= np.uint32(0xFFFF0000)
    out[nan] = np.nan
    return out


def round_to_fp16(a, out=None, half=None):
    """Round float32 ``a`` to the nearest float16 (NumPy's/CuPy's cast, ties to even), kept as
    float32; beyond 65504 it becomes infinity. ``half``: an optional float16 scratch array."""
    xp = _xp(a)
    if out is None:
        out = a.copy()
    with np.errstate(over="ignore"):  # overflow to infinity is the point (the loss scaler looks for it)
        if half is None:
            half = a.astype(np.float16)
        else:
            xp.copyto(half, a, casting="unsafe")
    xp.copyto(out, half)
    return out


def _xp(a):
    from nnscratch.numpy_engine.backend import xp_of

    return xp_of(a)


class LowPrecisionProducts:
    """A drop-in ``gemm(a, b, out, alpha, beta)`` that computes in ``fp16`` or ``bf16``:

    ``out = round(alpha * (round(a) @ round(b)) + beta * out)`` with ``round`` to the low format
    and the product and sum accumulated in float32 (see the module docstring). The rounded
    operands go into scratch arrays of the same shape and memory order, reused every step.
    """

    def __init__(self, backend: Backend, precision: str) -> None:
        if precision not in ("fp16", "bf16"):
            raise ValueError(f"low-precision products are fp16 or bf16, got {precision!r}")
        self.backend, self.precision = backend, precision
        self._scratch: dict[tuple, object] = {}

    def _buffer(self, slot: str, like, dtype):
        order = "F" if (like.flags.f_contiguous and not like.flags.c_contiguous) else "C"
        key = (slot, like.shape, order, np.dtype(dtype))
        buf = self._scratch.get(key)
        if buf is None:
            buf = self._scratch[key] = self.backend.empty(like.shape, dtype, order)
        return buf

    def round(self, a, out):
        """``out`` = ``a`` rounded to the low format (``out`` may be ``a``)."""
        if self.precision == "bf16":
            return round_to_bf16(a, out)
        return round_to_fp16(a, out, self._buffer("half", a, np.float16))

    def __call__(self, a, b, out, alpha: float = 1.0, beta: float = 0.0):
        ra = self.round(a, self._buffer("a", a, a.dtype))
        rb = self.round(b, self._buffer("b", b, b.dtype))
        self.backend.gemm(ra, rb, out, alpha, beta)
        return self.round(out, out)


class LossScaler:
    """Dynamic loss scaling, the rule of ``torch.amp.GradScaler`` step for step.

    ``GradScaler(init_scale=2**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000)``
    keeps a scale ``S`` (a float32) and a count ``g`` of consecutive clean steps. Every step::

        backward of S * loss                       (here: dL/dlogits times S)
        found_inf <- any gradient not finite       (torch checks each value as it unscales it)
        grads <- grads * (1 / S)                   unscale (torch: inv_scale = float32(1 / float64 S))
        if not found_inf: optimizer.step()         otherwise the step is skipped, weights untouched
        update (torch._amp_update_scale_):
            if found_inf:  S <- S * backoff_factor;  g <- 0
            else:          g <- g + 1
                           if g == growth_interval:
                               if isfinite(S * growth_factor): S <- S * growth_factor
                               g <- 0

    ``tests/test_precision.py`` replays a scripted sequence of finite and overflowing gradients
    through this class and through torch's ``GradScaler`` and checks the scale and the skip
    decisions agree at every step.
    """

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000) -> None:
        self.scale = np.float32(init_scale)
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self.growth_tracker = 0
        self.skipped_steps = 0   # since the last take_skipped()

    def unscale_and_check(self, grads: dict, xp) -> bool:
        """Return True when a gradient is not finite; divide every gradient by the scale, in place.
        (One read from the device for all the gradients: the checks are stacked first.)"""
        inv_scale = np.float32(1.0 / float(self.scale))
        finite = [xp.isfinite(g).all() for g in grads.values()]
        for g in grads.values():
            g *= inv_scale
        return not bool(xp.stack(finite).all())

    def update(self, found_inf: bool) -> None:
        """The scale update after a step (the rule in the class docstring)."""
        if found_inf:
            self.scale = np.float32(self.scale * np.float32(self.backoff_factor))
            self.growth_tracker = 0
            self.skipped_steps += 1
            return
        self.growth_tracker += 1
        if self.growth_tracker == self.growth_interval:
            with np.errstate(over="ignore"):  # past float32's range: infinity, and the scale stays
                grown = np.float32(self.scale * np.float32(self.growth_factor))
            if np.isfinite(grown):
                self.scale = grown
            self.growth_tracker = 0

    def take_skipped(self) -> int:
        """The steps skipped since the last call."""
        skipped, self.skipped_steps = self.skipped_steps, 0
        return skipped

    def state(self) -> dict:
        """``engine.loss_scale`` and ``engine.growth_tracker`` (what a resumed run needs)."""
        return {"engine.loss_scale": np.array(self.scale, dtype=np.float32),
                "engine.growth_tracker": np.array(self.growth_tracker, dtype=np.int64)}

    def load_state(self, state: dict) -> None:
        if "engine.loss_scale" in state:
            self.scale = np.float32(np.asarray(state["engine.loss_scale"]))
            self.growth_tracker = int(np.asarray(state["engine.growth_tracker"]))
