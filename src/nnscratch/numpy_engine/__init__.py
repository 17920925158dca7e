"""The hand-written NumPy engine: no autograd, every gradient written out (never imports torch)."""

from nnscratch.numpy_engine.layers import (ELU, GELU, BatchNorm1d, Dense, Dropout, GradientSink, LeakyReLU, ReLU,
                                           Sigmoid, Tanh)
from nnscratch.numpy_engine.losses import SoftmaxCrossEntropy
from nnscratch.numpy_engine.model import NumpyEngine, Sequential

__all__ = ["Dense", "ReLU", "LeakyReLU", "ELU", "GELU", "Tanh", "Sigmoid", "Dropout", "BatchNorm1d",
           "GradientSink", "SoftmaxCrossEntropy", "Sequential", "NumpyEngine"]
