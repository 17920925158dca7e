"""The model spec: one description of the network that both engines build from.

A spec is an input size and an ordered list of layers, each a ``kind`` plus its arguments. It
is plain data (JSON in and out), so it travels in a weights file's metadata and in
``metrics.json``, and it builds either engine's model. Layers are numbered as in
``torch.nn.Sequential``; for the seed network the layers are ``0: dense 784->533, 1: relu,
2: dense 533->10`` and the parameters are named ``0.weight, 0.bias, 2.weight, 2.bias`` in both
engines (and in plain PyTorch).

What each kind means, its arguments, parameters and buffers live in :mod:`nnscratch.model.registry`;
this module only orders layers and checks their arguments against that registry.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterator

from nnscratch.errors import ParameterError, UsageError
from nnscratch.files.json_text import parse_json

#: Version of the spec's JSON form. Version 1 was ``{input_dim, hidden, num_classes, activation}``.
SPEC_VERSION = 2


@dataclass(frozen=True)
class LayerSpec:
    """One layer: ``kind`` (a key of :data:`nnscratch.model.registry.LAYER_KINDS`) and its arguments.

    ``args`` holds every argument with its default filled in, e.g.
    ``LayerSpec("dense", {"out_features": 533})`` or ``LayerSpec("dropout", {"p": 0.2})``.
    """

    kind: str
    args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.args}


@dataclass(frozen=True)
class ModelSpec:
    """A feed-forward network: ``input_dim`` features in, ``layers`` applied in order, logits out.

    The last dense layer's ``out_features`` is the number of classes (softmax lives in the loss,
    as in ``torch.nn.CrossEntropyLoss``). Build the usual multilayer perceptron with
    :func:`mlp_spec`.
    """

    input_dim: int
    layers: tuple[LayerSpec, ...]

    def __post_init__(self) -> None:
        from nnscratch.model.registry import complete_args

        if int(self.input_dim) < 1:
            raise UsageError(f"the model needs at least 1 input feature, got {self.input_dim}")
        layers = tuple(LayerSpec(layer.kind, complete_args(layer.kind, layer.args)) for layer in self.layers)
        object.__setattr__(self, "input_dim", int(self.input_dim))
        object.__setattr__(self, "layers", layers)
        if not any(layer.kind == "dense" for layer in layers):
            raise UsageError("the model needs at least one dense layer")
        if self.num_classes < 2:
            raise UsageError(f"the last dense layer must give at least 2 classes, got {self.num_classes}")

    @property
    def num_classes(self) -> int:
        """Width of the output: the last dense layer's ``out_features``."""
        return [layer for layer in self.layers if layer.kind == "dense"][-1].args["out_features"]

    def walk(self) -> Iterator[tuple[int, LayerSpec, int, int]]:
        """``(index, layer, in_features, out_features)`` for every layer, in order."""
        from nnscratch.model.registry import LAYER_KINDS

        width = self.input_dim
        for i, layer in enumerate(self.layers):
            out = LAYER_KINDS[layer.kind].out_features(layer.args, width)
            yield i, layer, width, out
            width = out

    def widths(self) -> list[int]:
        """The dense layers' sizes from input to output: ``[784, 533, 10]`` for the seed."""
        return [self.input_dim] + [out for _, layer, _, out in self.walk() if layer.kind == "dense"]

    def describe(self) -> str:
        """Short form for titles: ``784-533-10 (relu)``; with extras ``(gelu, batch norm, dropout 0.2)``,
        ``(input dropout 0.2, relu, dropout 0.5)``."""
        from nnscratch.model.registry import LAYER_KINDS

        extras: list[str] = []
        first_dense = next(i for i, layer in enumerate(self.layers) if layer.kind == "dense")
        for i, layer in enumerate(self.layers):
            if layer.kind == "dense":
                continue
            text = LAYER_KINDS[layer.kind].short(layer.args)
            if i < first_dense and layer.kind == "dropout":
                text = f"input {text}"   # the input's dropout, told apart from the hidden layers'
            if text not in extras:
                extras.append(text)
        sizes = "-".join(str(w) for w in self.widths())
        return f"{sizes} ({', '.join(extras)})" if extras else sizes

    def layer_table(self) -> list[tuple[int, str, str, int]]:
        """``(index, kind, arguments, parameter count)`` per layer, for the report."""
        from nnscratch.model.registry import LAYER_KINDS

        rows = []
        for i, layer, d_in, d_out in self.walk():
            entry = LAYER_KINDS[layer.kind]
            shapes = entry.param_shapes(layer.args, d_in)
            count = sum(math.prod(s) for s in shapes.values())
            rows.append((i, layer.kind, entry.signature(layer.args, d_in, d_out), count))
        return rows

    def to_json(self) -> str:
        return json.dumps({"version": SPEC_VERSION, "input_dim": self.input_dim,
                           "layers": [layer.to_dict() for layer in self.layers]}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        """Read a spec written by :meth:`to_json`, or by version 1 (``hidden`` + ``activation``)."""
        d = parse_json(text)
        if not isinstance(d, dict):
            raise ValueError("a model spec is a JSON object")
        if "layers" not in d:  # version 1, written before layers had their own specs
            return mlp_spec(input_dim=d["input_dim"], hidden=tuple(d["hidden"]), num_classes=d["num_classes"],
                            activation=d.get("activation", "relu"))
        if d.get("version", SPEC_VERSION) > SPEC_VERSION:
            raise ValueError(f"spec version {d['version']} is newer than this nnscratch reads ({SPEC_VERSION})")
        layers = []
        for item in d["layers"]:
            item = dict(item)
            layers.append(LayerSpec(item.pop("kind"), item))
        return cls(d["input_dim"], tuple(layers))


def mlp_spec(input_dim: int = 784, hidden: tuple[int, ...] = (533,), num_classes: int = 10,
             activation: str = "relu", dropout: float = 0.0, batch_norm: bool = False,
             input_dropout: float = 0.0) -> ModelSpec:
    """The multilayer perceptron the flags describe (defaults: the reference project's 784-533-10 ReLU).

    Each hidden block is ``dense -> [batch_norm] -> activation -> [dropout]`` (batch norm before
    the non-linearity, as Ioffe & Szegedy place it, with a bias-free dense layer before it;
    dropout after the non-linearity, as Srivastava et al. do);
    the last dense layer gives the logits. ``activation`` is a name of
    :data:`nnscratch.model.registry.ACTIVATIONS` (``gelu_tanh`` is GELU with ``approximate="tanh"``).
    ``input_dropout > 0`` puts a dropout layer on the input, in front of everything (Srivastava et
    al.'s input dropout: they drop 20 % of the pixels): it is layer 0, so the layers after it are
    numbered one further (``1.weight`` is the first dense layer's weight).
    """
    from nnscratch.model.registry import ACTIVATIONS

    hidden = tuple(int(h) for h in hidden)
    if any(h < 1 for h in hidden):
        raise ParameterError("hidden", f"takes positive layer sizes, got {list(hidden)}")
    if activation not in ACTIVATIONS:
        raise ParameterError("activation", f"must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    if not (0.0 <= dropout < 1.0):
        raise ParameterError("dropout", f"must be in [0, 1), got {dropout}")
    if not (0.0 <= input_dropout < 1.0):
        raise ParameterError("input_dropout", f"must be in [0, 1), got {input_dropout}")
    if int(num_classes) < 2:
        raise UsageError(f"a classifier needs at least 2 classes, got {num_classes}")
    act = LayerSpec(*ACTIVATIONS[activation])
    layers: list[LayerSpec] = [LayerSpec("dropout", {"p": float(input_dropout)})] if input_dropout > 0 else []
    for h in hidden:
        # before batch norm a bias is redundant (the normalisation subtracts it again; its gradient is
        # zero up to rounding), so it is left out, as torch users write nn.Linear(..., bias=False)
        layers.append(LayerSpec("dense", {"out_features": h} | ({"bias": False} if batch_norm else {})))
        if batch_norm:
            layers.append(LayerSpec("batch_norm"))
        layers.append(act)
        if dropout > 0:
            layers.append(LayerSpec("dropout", {"p": float(dropout)}))
    layers.append(LayerSpec("dense", {"out_features": int(num_classes)}))
    return ModelSpec(int(input_dim), tuple(layers))
