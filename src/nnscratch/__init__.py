"""nnscratch: a neural network written from scratch in NumPy, trained beside its exact PyTorch twin.

The Python API is :mod:`nnscratch.api`::

    from nnscratch import api

    run = api.compare(epochs=1, train_subset=2000)    # or api.train(engine="numpy", ...)
    run.test["numpy"]["accuracy"], run.twin, run.history["torch"]["epochs"]

(``api.train`` and ``api.config`` are not names of the package itself: ``nnscratch.training.loop`` and
``nnscratch.run.config`` are the modules of the training loop and of the settings.) The names below
are imported on first use, so that ``import nnscratch`` and the command line start quickly.
"""

__version__ = "0.1.0"

#: Public names and the module each comes from (``api`` is the module itself).
_LAZY = {"api": "nnscratch.api", "Run": "nnscratch.api", "RunConfig": "nnscratch.run.config",
         "load_dataset": "nnscratch.data", "NNScratchError": "nnscratch.errors",
         "UsageError": "nnscratch.errors", "DataError": "nnscratch.errors"}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name])
        return module if name == "api" else getattr(module, name)
    raise AttributeError(f"module 'nnscratch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
