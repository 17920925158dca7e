"""nnscratch: a neural network written from scratch in NumPy, trained beside its exact PyTorch twin."""

__version__ = "0.1.0"
