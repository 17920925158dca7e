"""The engine's matrix product on the CPU: SciPy's BLAS ``?gemm`` (kept as a name for old imports).

It now lives in :mod:`nnscratch.numpy_engine.backend` (:func:`~nnscratch.numpy_engine.backend.numpy_gemm`,
which documents why the engine does not use ``a @ b``); a layer calls ``self.backend.gemm``.
"""

from nnscratch.numpy_engine.backend import numpy_gemm as gemm

__all__ = ["gemm"]
