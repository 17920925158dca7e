"""The hand-written NumPy engine: no autograd, every gradient written out (never imports torch)."""

from nnscratch.numpy_engine.init import initial_state
from nnscratch.numpy_engine.layers import Dense, ReLU
from nnscratch.numpy_engine.losses import SoftmaxCrossEntropy, log_softmax
from nnscratch.numpy_engine.model import NumpyEngine, Sequential
from nnscratch.numpy_engine.optim import SGD

__all__ = ["Dense", "ReLU", "SoftmaxCrossEntropy", "log_softmax", "SGD", "Sequential", "NumpyEngine",
           "initial_state"]
