"""The model spec: one description of the network that both engines build from.

A spec is plain data (JSON in and out), so it can travel in a weights file's metadata and
build either engine's model. Layers are numbered as in ``torch.nn.Sequential``: for
``hidden=(533,)`` the layers are ``0: dense 784->533, 1: relu, 2: dense 533->10``, and the
parameters are named ``0.weight, 0.bias, 2.weight, 2.bias`` in both engines.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from nnscratch.errors import UsageError

ACTIVATIONS = ("relu",)


@dataclass(frozen=True)
class LayerSpec:
    """One layer: ``kind`` is ``"dense"`` or an activation name; sizes are set for dense layers."""

    kind: str
    in_features: int = 0
    out_features: int = 0


@dataclass(frozen=True)
class ModelSpec:
    """A multilayer perceptron: ``input_dim -> hidden[0] -> ... -> num_classes``.

    Each hidden dense layer is followed by ``activation``; the last dense layer gives logits
    (softmax lives in the loss, as in ``torch.nn.CrossEntropyLoss``).
    """

    input_dim: int = 784
    hidden: tuple[int, ...] = (533,)
    num_classes: int = 10
    activation: str = "relu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.input_dim < 1 or self.num_classes < 2:
            raise UsageError(f"bad model size: input_dim={self.input_dim}, num_classes={self.num_classes}")
        bad = [h for h in self.hidden if h < 1]
        if bad:
            raise UsageError(f"--hidden sizes must be positive integers, got {list(self.hidden)}")
        if self.activation not in ACTIVATIONS:
            raise UsageError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")

    def layers(self) -> list[LayerSpec]:
        """The layer list, in order, as ``nn.Sequential`` would number it."""
        sizes = (self.input_dim, *self.hidden, self.num_classes)
        out: list[LayerSpec] = []
        for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            out.append(LayerSpec("dense", d_in, d_out))
            if i < len(sizes) - 2:
                out.append(LayerSpec(self.activation))
        return out

    def describe(self) -> str:
        """``784-533-10 (relu)``."""
        return "-".join(str(s) for s in (self.input_dim, *self.hidden, self.num_classes)) + f" ({self.activation})"

    def to_json(self) -> str:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        d = json.loads(text)
        return cls(input_dim=d["input_dim"], hidden=tuple(d["hidden"]), num_classes=d["num_classes"],
                   activation=d.get("activation", "relu"))
