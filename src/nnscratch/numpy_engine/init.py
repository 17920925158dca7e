"""Weight initialisation."""

from __future__ import annotations

import numpy as np


def he_normal(rng: np.random.Generator, out_features: int, in_features: int) -> np.ndarray:
    """He (Kaiming) normal initialisation for layers followed by ReLU, in float64.

    ``W ~ Normal(0, std^2)`` with ``std = sqrt(2 / fan_in)``: ReLU zeroes half of its inputs on
    average, so doubling the variance keeps the activations' scale from layer to layer
    (He et al., 2015). Same law as ``torch.nn.init.kaiming_normal_(W, nonlinearity="relu")``.
    """
    return rng.normal(0.0, np.sqrt(2.0 / in_features), size=(out_features, in_features))


def initial_state(spec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The initial weights for ``spec`` in float64, named as ``nn.Sequential`` names them.

    Dense weights are He-normal, biases zero. Both engines start from these same arrays (cast to
    their dtype), which is what makes them twins.
    """
    state = {}
    for i, layer in enumerate(spec.layers()):
        if layer.kind == "dense":
            state[f"{i}.weight"] = he_normal(rng, layer.out_features, layer.in_features)
            state[f"{i}.bias"] = np.zeros(layer.out_features)
    return state
