"""A layer of your own: Swish (SiLU), written by hand, registered, and trained beside torch's nn.SiLU.

This is the worked example of docs/your-own-layer.md. It

1. writes ``Swish``, a :class:`nnscratch.numpy_engine.layers.Layer` with its forward and its
   hand-derived backward;
2. registers it as the layer kind ``swish`` (an activation), with ``torch.nn.SiLU`` as its twin;
3. trains both engines on 500 MNIST images for one epoch in float64, with ``swish`` as the hidden
   activation, and prints how far apart the twins' losses ever were.

Run it from the repository root (MNIST is found as ``nnscratch`` finds it: ``$NNSCRATCH_DATA_DIR``,
the user cache, or a download)::

    python examples/swish_layer.py

It prints the twins' largest step-loss difference; in float64 it is rounding, about 1e-16.
"""

from __future__ import annotations

import numpy as np

from nnscratch.numpy_engine.layers import Layer


class Swish(Layer):
    r"""Swish / SiLU, element-wise (Ramachandran et al. 2017; ``torch.nn.SiLU``).

    Shapes: ``x`` and ``y`` are ``(N, D)``; no parameters, no buffers.

    Forward, with the logistic sigmoid ``s``::

        s = sigmoid(x) = 1 / (1 + exp(-x)) = (1 + tanh(x / 2)) / 2     (the tanh form never overflows)
        y = x * s

    Backward: the product rule, with ``ds/dx = s (1 - s)``::

        dy/dx = s + x * s * (1 - s) = s * (1 + x * (1 - s))
        dx    = dout * dy/dx

    ``forward`` keeps ``dy/dx`` (in training only): that is all ``backward`` needs.
    ``torch_module`` names the torch module ``nnscratch gradcheck --layer`` compares it with.
    """

    torch_module = "torch.nn.SiLU"

    def __init__(self, in_features: int = 0, dtype=np.float32) -> None:
        super().__init__(in_features, dtype)
        self._slope: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        s = 0.5 * (1.0 + np.tanh(0.5 * x))
        if train:
            self._slope = s * (1.0 + x * (1.0 - s))
        return x * s

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray:
        return dout * self._slope


def register() -> None:
    """Make ``swish`` a layer kind (and an ``activation``) for this process, twinned by ``nn.SiLU``."""
    from torch import nn

    from nnscratch.model.registry import register_layer

    register_layer("swish", Swish, lambda args, in_features: nn.SiLU(), activation=True)


def main() -> None:
    from nnscratch import api

    register()
    run = api.compare(activation="swish", train_subset=500, epochs=1, dtype="float64")
    print(f"model: {run.config['model']}")
    print(f"test accuracy: numpy {run.test['numpy']['accuracy']:.4f}, torch {run.test['torch']['accuracy']:.4f}")
    print(f"max step-loss difference between the twins: {run.twin['max_abs_step_loss_diff']:.3e}")


if __name__ == "__main__":
    main()
