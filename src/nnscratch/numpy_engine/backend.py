"""The one place the NumPy engine gets its arrays from: NumPy + SciPy's BLAS, or CuPy + cuBLAS.

Every other module of :mod:`nnscratch.numpy_engine` takes its array module, its matrix product,
``erf``, its allocations and its host transfers from a :class:`Backend`, never from ``numpy`` or
``scipy`` directly (``tests/test_backend.py`` greps the package for that). The layer code is
written once against ``xp`` (``xp.multiply(x, mask, out=x)``, ``xp.exp``...): NumPy and CuPy
spell those the same, so ``--engine numpy --device cuda`` runs the very same layers on a GPU.

What differs between the two, and so lives here:

* ``gemm(a, b, out, alpha, beta)``: ``out = alpha * (a @ b) + beta * out`` in place. On the CPU
  it is SciPy's BLAS ``?gemm`` (why not ``a @ b``: see :func:`numpy_gemm`); on the GPU
  ``cupy.matmul`` (cuBLAS).
* ``erf``: :func:`numpy_erf` (SciPy's in float64, a compiled rational approximation in float32) /
  ``cupyx.scipy.special.erf`` (GELU).
* ``order_for(rows)``: the memory order of an activation buffer. OpenBLAS is faster with
  column-major results for small batches (:mod:`buffers`); cuBLAS does not care, so CuPy gets C.
* ``to_host`` / ``to_device``: NumPy arrays are on the host already (no copy); CuPy copies.

Random numbers (dropout masks, batch order) are *not* drawn here: the training loop draws them
on the host with NumPy, for both twins (CuPy's generators do not give NumPy's numbers), and the
engine moves them with ``to_device``.

``cupy_backend()`` imports CuPy only when asked; without CuPy, or without a GPU, it raises a
:class:`~nnscratch.errors.UsageError` of one line saying which is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
import threading
from typing import Any, Callable

import numpy
import scipy.special
from scipy.linalg import blas as _scipy_blas

from nnscratch.errors import INSTALL_CUPY, UsageError

#: The host's array module. Modules of the engine use it for what is host-side by nature
#: (dtypes, the per-epoch statistics, arrays handed back to the caller), never for the step's work.
np = numpy

# Batches up to this many rows get column-major activation buffers on the CPU, larger ones row-major (buffers.py).
COLUMN_MAJOR_MAX_ROWS = 256


@dataclass(frozen=True)
class Backend:
    """An array module and the few functions that differ between CPU and GPU.

    Attributes
    ----------
    name : ``"cpu"`` or ``"cuda"``.
    xp : the array module, ``numpy`` or ``cupy`` (same function names, same ``out=`` arguments).
    gemm : ``gemm(a, b, out, alpha=1.0, beta=0.0) -> out``, ``out = alpha * (a @ b) + beta * out``.
    erf : the error function, element-wise, ``erf(x, out=x)``.
    column_major_rows : batches of at most this many rows get column-major (Fortran) activation
        buffers, larger ones row-major; ``0``: always row-major.
    is_gpu : whether the arrays live on a device (the engine then moves the loop's host arrays
        there, and reads the losses back once per epoch).
    """

    name: str
    xp: Any
    gemm: Callable
    erf: Callable
    column_major_rows: int = 0
    is_gpu: bool = False

    def order_for(self, rows: int) -> str:
        """``"F"`` or ``"C"``: the memory order of an activation buffer of ``rows`` rows."""
        return "F" if rows <= self.column_major_rows else "C"

    def empty(self, shape, dtype, order: str = "C"):
        """An uninitialised device array."""
        return self.xp.empty(shape, dtype=dtype, order=order)

    def zeros(self, shape, dtype, order: str = "C"):
        """A device array of zeros."""
        return self.xp.zeros(shape, dtype=dtype, order=order)

    def to_device(self, a):
        """``a`` (a NumPy array, or anything array-like) as an array of this backend (no copy on the CPU)."""
        return self.xp.asarray(a)

    def to_host(self, a) -> numpy.ndarray:
        """``a`` (an array of this backend, or a scalar) as a NumPy array (no copy on the CPU)."""
        if self.xp is numpy:
            return numpy.asarray(a)
        return self.xp.asnumpy(a)


# -- the CPU: NumPy arrays, SciPy's BLAS

_SCIPY_GEMM = {numpy.dtype(numpy.float32): _scipy_blas.sgemm, numpy.dtype(numpy.float64): _scipy_blas.dgemm}


def _as_fortran(a: numpy.ndarray) -> tuple[numpy.ndarray, bool]:
    """Return ``(f, transposed)`` with ``f`` Fortran-ordered and ``a == (f.T if transposed else f)``.

    No copy is made: a C-ordered ``a`` is returned as its transpose view ``a.T``.
    """
    if a.flags.f_contiguous:
        return a, False
    if a.flags.c_contiguous:
        return a.T, True
    raise ValueError("gemm operands must be C- or Fortran-contiguous (got a strided view)")


def numpy_gemm(a: numpy.ndarray, b: numpy.ndarray, out: numpy.ndarray, alpha: float = 1.0,
               beta: float = 0.0) -> numpy.ndarray:
    """Compute ``out = alpha * (a @ b) + beta * out`` in place with SciPy's BLAS and return ``out``.

    Why not just ``a @ b``? Three measured reasons (2-core AMD EPYC, float32, 784-533-10, batch 64):

    1. **The SGD update can ride inside the weight-gradient product.** BLAS ``gemm`` computes
       ``C = alpha * A @ B + beta * C`` in place. With ``C = W``, ``alpha = -lr`` and ``beta = 1`` it
       does ``W -= lr * dW`` without ever storing ``dW`` (a full pass over the 1.7 MB weight matrix
       saved, twice per step). NumPy's ``matmul`` has no ``beta``; SciPy exposes BLAS ``?gemm``.
    2. **One BLAS, not two.** The NumPy and SciPy wheels each bundle their own OpenBLAS with its own
       thread pool. Calling both in the training loop makes the two pools fight over the cores
       (measured: up to 10x slower per epoch). So every product of the engine goes through *this*
       function, i.e. through SciPy's BLAS.
    3. **Memory order matters for small products.** SciPy's wrappers silently copy any operand that
       is not Fortran-ordered. We never let that happen: a C-ordered matrix is handed over as its
       (Fortran-ordered) transpose with the ``trans`` flag set, which costs nothing.
    4. **The GIL, when another thread needs it.** SciPy's Python wrapper holds it for the whole
       product, so a thread preparing batches beside the engine waited for every product. Once
       that thread starts, the backend calls the same BLAS function from compiled code without
       the GIL instead (:func:`release_gil_in_products`, :func:`cpu_gemm`).

    Parameters
    ----------
    a : (M, K) array, C- or Fortran-contiguous.
    b : (K, N) array, C- or Fortran-contiguous, same dtype as ``a``.
    out : (M, N) array, C- or Fortran-contiguous, float32 or float64. It is overwritten
        (``beta = 0``) or accumulated into (``beta = 1``); with ``beta = 0`` its old content,
        even NaN, is ignored, as BLAS specifies.
    """
    if out.flags.f_contiguous:
        c, left, right = out, a, b
    elif out.flags.c_contiguous:
        # A C-ordered out is a Fortran-ordered out.T, and (a @ b).T = b.T @ a.T.
        c, left, right = out.T, b.T, a.T
    else:
        raise ValueError("gemm output must be C- or Fortran-contiguous")
    fa, trans_a = _as_fortran(left)
    fb, trans_b = _as_fortran(right)
    _SCIPY_GEMM[out.dtype](alpha, fa, fb, beta=beta, c=c, trans_a=trans_a, trans_b=trans_b, overwrite_c=True)
    return out


def _compile_gemm():
    """:func:`numpy_gemm` as a compiled call without the GIL, or False without numba
    (:func:`release_gil_in_products` turns it on).

    Why: SciPy's Python wrapper (``scipy.linalg.blas.sgemm``, made by f2py) holds Python's GIL for
    the whole product. Measured on the 2-core AMD EPYC VM (1000 x 1000 float32, one BLAS thread):
    a Python thread counting beside twenty such products got 1.9 million counts a second, against
    5.5 million beside the same products called here; so a thread preparing batches while the
    engine trained (:mod:`nnscratch.training.augmented`) waited for every product.

    How: the very same BLAS functions, those ``scipy.linalg.cython_blas`` exports (``sgemm``,
    ``dgemm``: Fortran convention, every argument an address), called from a Numba function
    declared ``nogil``. Their addresses are arguments, not constants, so that Numba can cache the
    compiled code on disk; ``_call_blas`` is the one LLVM call through such an address. The same
    BLAS calls with the same arguments give bit for bit the same products (tests/test_backend.py);
    the call costs 2.0 us against f2py's 2.9 for a tiny product, and a step of the seed network
    (batch 64) took 1,099.5 against 1,098.0 us (the median of 12 rounds of 500, taking turns).
    """
    try:
        import numba
        from llvmlite import ir
        from numba import types
        from numba.extending import intrinsic
    except ImportError:
        return False
    import ctypes

    from scipy.linalg import cython_blas

    global _call_blas  # a global, not a closure variable, so that numba's disk cache finds gemm again

    @intrinsic
    def _call_blas(typingctx, address, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        """``(*address)(transa, transb, m, ..., ldc)``: a BLAS ``?gemm``, every argument an address."""
        def codegen(context, builder, signature, args):
            pointer = ir.IntType(8).as_pointer()
            function = builder.inttoptr(args[0], ir.FunctionType(ir.VoidType(), [pointer] * 13).as_pointer())
            builder.call(function, [builder.inttoptr(arg, pointer) for arg in args[1:]])
            return context.get_dummy_value()

        return types.void(*([types.intp] * 14)), codegen

    @numba.njit(nogil=True, cache=True)
    def gemm(address, a, b, out, alpha, beta):
        if a.shape[0] != out.shape[0] or b.shape[1] != out.shape[1] or a.shape[1] != b.shape[0]:
            raise ValueError("gemm shapes do not match: a (M, K), b (K, N), out (M, N)")
        if out.size == 0:
            return out
        if a.shape[1] == 0:                    # K = 0: a @ b is zeros (BLAS ignores out when beta = 0)
            if beta == 0:
                out[...] = 0
            else:
                out *= beta
            return out
        if out.flags.f_contiguous:
            c, left, right = out, a, b
        elif out.flags.c_contiguous:           # a C-ordered out is a Fortran-ordered out.T = b.T a.T
            c, left, right = out.T, b.T, a.T
        else:
            raise ValueError("gemm output must be C- or Fortran-contiguous")
        if not (left.flags.f_contiguous or left.flags.c_contiguous) or \
                not (right.flags.f_contiguous or right.flags.c_contiguous):
            raise ValueError("gemm operands must be C- or Fortran-contiguous (got a strided view)")
        m, n = c.shape
        # every argument by address: the two flags, six sizes and two scalars in small arrays; a
        # C-ordered operand is its Fortran-ordered transpose with the flag 'T' (84), else 'N' (78)
        flags, sizes, scalars = numpy.empty(2, numpy.uint8), numpy.empty(6, numpy.int32), numpy.empty(2, out.dtype)
        flags[0] = 78 if left.flags.f_contiguous else 84
        flags[1] = 78 if right.flags.f_contiguous else 84
        sizes[0], sizes[1], sizes[2] = m, n, left.shape[1]
        sizes[3] = max(1, left.shape[0] if left.flags.f_contiguous else left.shape[1])     # lda
        sizes[4] = max(1, right.shape[0] if right.flags.f_contiguous else right.shape[1])  # ldb
        sizes[5] = max(1, m)                                                               # ldc
        scalars[0], scalars[1] = alpha, beta
        f, s, x = flags.ctypes.data, sizes.ctypes.data, scalars.ctypes.data
        _call_blas(address, f, f + 1, s, s + 4, s + 8, x, left.ctypes.data, s + 12, right.ctypes.data, s + 16,
                   x + out.itemsize, c.ctypes.data, s + 20)
        flags[0], sizes[0], scalars[0] = 0, 0, 0  # used after the call: numba frees none of them before it
        return out

    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    address = {numpy.dtype(dtype): get_pointer(capsule, get_name(capsule)) for dtype, capsule in
               ((numpy.float32, cython_blas.__pyx_capi__["sgemm"]), (numpy.float64, cython_blas.__pyx_capi__["dgemm"]))}

    def compiled_gemm(a, b, out, alpha=1.0, beta=0.0):
        if a.dtype != out.dtype or b.dtype != out.dtype:
            raise ValueError(f"gemm operands must have out's dtype {out.dtype}, got {a.dtype} and {b.dtype}")
        return gemm(address[out.dtype], a, b, out, alpha, beta)

    return compiled_gemm


_call_blas: Any = None  # the intrinsic of _compile_gemm
_compiled_gemm: Any = False  # the GIL-free call once release_gil_in_products() turned it on


def release_gil_in_products() -> bool:
    """From now on, make the CPU backend's products without holding the GIL (:func:`_compile_gemm`),
    so that another thread runs during them; True if so, False without numba.

    Called by the thread that prepares augmented batches (``training/augmented.py``) when it
    starts. Not the default: the products are the same bit for bit and no faster for the engine
    alone (the seed step 1,099.5 against 1,098.0 us), and importing numba and loading the compiled
    call cost each process about 0.6 s at its first product, which a short run or a test pays.
    """
    global _compiled_gemm
    if not _compiled_gemm:
        _compiled_gemm = _compile_gemm()
    return bool(_compiled_gemm)


def cpu_gemm(a: numpy.ndarray, b: numpy.ndarray, out: numpy.ndarray, alpha: float = 1.0,
             beta: float = 0.0) -> numpy.ndarray:
    """The CPU backend's product, :func:`numpy_gemm`'s contract: by :func:`numpy_gemm` (SciPy's
    wrapper, holding the GIL) until :func:`release_gil_in_products`, then by the same BLAS
    function called without the GIL."""
    if _compiled_gemm:
        return _compiled_gemm(a, b, out, alpha, beta)
    return numpy_gemm(a, b, out, alpha, beta)


# The numerator's (odd) and denominator's (even) coefficients of Eigen's float32 erf, highest
# power first (Eigen, SpecialFunctionsImpl.h, generic_fast_erf_float; the approximation XLA, and
# so JAX, uses for float32 erf on the CPU).
_ERF32_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
            -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF32_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
            -1.42647390514189e-02)
_erf32_kernel: Any = None  # compiled on first use (None: not yet; False: numba missing)


def _compile_erf32():
    """The Numba-compiled loop of :func:`numpy_erf` for float32, or False without numba."""
    try:
        import numba
    except ImportError:
        return False
    p, q = (numpy.array(c, numpy.float32) for c in (_ERF32_P, _ERF32_Q))

    @numba.njit(cache=True, fastmath=False, error_model="numpy")
    def erf32(x, out, p, q):  # x, out: 1-D views of one memory layout (the same one, or not overlapping)
        for i in range(x.size):
            v = min(max(x[i], numpy.float32(-4.0)), numpy.float32(4.0))
            v2 = v * v
            num = v2 * p[0] + p[1]
            for k in range(2, 7):
                num = num * v2 + p[k]
            den = v2 * q[0] + q[1]
            for k in range(2, 5):
                den = den * v2 + q[k]
            out[i] = min(max(v * num / den, numpy.float32(-1.0)), numpy.float32(1.0))  # |erf| <= 1

    # In place, the loop is given its output as input: LLVM's overlap check then picks the loop's
    # scalar version over the vectorised one (124 against 14 us for a 64x512 batch); a scratch
    # array in between keeps it vectorised at the cost of one copy (3 us); one per thread and size.
    local = threading.local()

    def kernel(x, out):
        if x.ctypes.data == out.ctypes.data:
            scratch = local.__dict__.setdefault("arrays", {})
            tmp = scratch.get(x.size)
            if tmp is None:
                tmp = scratch[x.size] = numpy.empty(x.size, numpy.float32)
            numpy.copyto(tmp, x)
            x = tmp
        erf32(x, out, p, q)

    return kernel


def numpy_erf(x: numpy.ndarray, out: numpy.ndarray | None = None) -> numpy.ndarray:
    """The error function ``erf(x)``, element-wise, into ``out`` (may be ``x``).

    float64 (and any array the fast loop cannot take): ``scipy.special.erf``. float32:
    ``erf(x) = x P(x^2) / Q(x^2)`` with ``x`` clipped to [-4, 4] (beyond, erf is +-1 in float32),
    ``P`` of degree 6 and ``Q`` of degree 4 (Eigen's rational approximation, coefficients above),
    clipped to [-1, 1] (it overshoots 1 by a unit in the last place near 4), in one compiled loop.
    Why: SciPy computes float32 erf through its float64 routine, one element at a time: 536 us for
    a 64x512 batch against 23 us here (2-core AMD EPYC, quiet), and GELU's erf was about a quarter
    of the GELU + batch-norm network's profiled epoch. Accuracy (tests/test_backend.py, SciPy's
    float64 erf the oracle, 1.4 million points on [-7, 7]): under 5e-7 absolute (4.4e-7 measured),
    a few float32 units in the last place; torch's own float32 GELU uses such an approximation too.
    """
    global _erf32_kernel
    if out is None:
        out = numpy.empty_like(x)
    if x.dtype == numpy.float32 and out.dtype == numpy.float32 and x.strides == out.strides \
            and (x.flags.c_contiguous or x.flags.f_contiguous):
        if _erf32_kernel is None:
            _erf32_kernel = _compile_erf32()
        if _erf32_kernel:
            _erf32_kernel(x.ravel(order="K"), out.ravel(order="K"))
            return out
    return scipy.special.erf(x, out=out)


#: The default backend: NumPy arrays on the host, products by SciPy's BLAS.
NUMPY = Backend("cpu", numpy, cpu_gemm, numpy_erf, column_major_rows=COLUMN_MAJOR_MAX_ROWS)


# -- the GPU: CuPy arrays, cuBLAS

_CUPY: Backend | None = None


def cupy_backend() -> Backend:
    """The CuPy backend (built on first use). A :class:`UsageError` when CuPy or a GPU is missing."""
    global _CUPY
    if _CUPY is None:
        try:
            import cupy
            import cupyx.scipy.special
        except ImportError:
            raise UsageError(f"--engine numpy --device cuda needs CuPy, which is not installed: {INSTALL_CUPY}") \
                from None
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception:  # CuPy raises its own CUDARuntimeError when there is no driver
            count = 0
        if count == 0:
            raise UsageError("--engine numpy --device cuda: CuPy is installed but sees no CUDA GPU here; "
                             "use --device cpu")

        def cupy_gemm(a, b, out, alpha: float = 1.0, beta: float = 0.0):
            """``out = alpha * (a @ b) + beta * out`` by cuBLAS (``cupy.matmul``), in place."""
            if beta == 0.0:
                cupy.matmul(a, b, out=out)
                if alpha != 1.0:
                    out *= alpha
                return out
            product = cupy.matmul(a, b)
            if alpha != 1.0:
                product *= alpha
            if beta != 1.0:
                out *= beta
            out += product
            return out

        _CUPY = Backend("cuda", cupy, cupy_gemm, cupyx.scipy.special.erf, is_gpu=True)
    return _CUPY


def backend_for(device: str) -> Backend:
    """The backend of ``--device``: ``cpu`` (and ``auto``: the NumPy engine stays on the CPU
    unless asked) -> :data:`NUMPY`; ``cuda`` -> :func:`cupy_backend`."""
    if device == "cuda":
        return cupy_backend()
    if device in ("cpu", "auto"):
        return NUMPY
    raise UsageError(f"--device must be auto, cpu or cuda, got {device!r}")


def xp_of(a) -> Any:
    """The array module of array ``a``: ``numpy`` for a NumPy array, else CuPy's (``cupy.get_array_module``)."""
    if isinstance(a, numpy.ndarray) or _CUPY is None:
        return numpy
    return _CUPY.xp
