"""Fine-tuning: a run that starts from a trained model's weights instead of a fresh initialisation.

``finetune_from`` (a model file or a checkpoint, :func:`~nnscratch.files.checkpoint.load_model_or_checkpoint`)
gives the initial state: every tensor of the new network whose name and shape fit is the
source's; the output dense layer (the *head*) is drawn fresh from the run's seed when
``reset_head`` is set, and must be when the class counts differ. The fresh head is exactly the
one a run from scratch with the same seed starts with (the whole initial state is drawn as
usual, then the source's tensors are put over it).

Apart from the head the network must be the source's: the network settings (``hidden``,
``activation``, ``dropout``, ``batch_norm``, ``input_dropout``) default to the source's (:func:`with_source_network`)
and any other difference is a one-line error naming the first layer that differs. So does
``deskew``: a source trained on deskewed images fine-tunes on deskewed images unless ``--no-deskew``.

What was kept, replaced and dropped is a :class:`Transfer`, printed as one line when the run
starts and recorded in ``metrics.json`` (``finetune``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnscratch.errors import DataError, ParameterError, UsageError
from nnscratch.model.spec import ModelSpec

#: The settings that describe the network, filled from the source model when not given.
NETWORK_KEYS = ("hidden", "activation", "dropout", "batch_norm", "input_dropout")


@dataclass(frozen=True)
class Transfer:
    """What a fine-tuning run took from its source: tensor names ``kept`` (the source's values),
    ``replaced`` (drawn fresh from the run's seed) and ``dropped`` (the source's, without a place
    in the new network)."""

    source: str
    kept: tuple[str, ...]
    replaced: tuple[str, ...]
    dropped: tuple[str, ...]

    def line(self) -> str:
        """One line: ``from PATH: kept 4 tensors, replaced 2 (2.weight, 2.bias), dropped 0``."""
        def names(items):
            return f" ({', '.join(items)})" if items else ""

        return (f"from {self.source}: kept {len(self.kept)} tensors, replaced {len(self.replaced)}"
                f"{names(self.replaced)}, dropped {len(self.dropped)}{names(self.dropped)}")

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "kept": list(self.kept), "replaced": list(self.replaced),
                "dropped": list(self.dropped)}


def load_source(path: str) -> tuple[dict[str, np.ndarray], ModelSpec, dict]:
    """``(state, spec, info)`` of the model or checkpoint at ``path``; a file that is neither is
    a one-line :class:`~nnscratch.errors.ParameterError` naming ``finetune_from``."""
    from nnscratch.files.checkpoint import load_model_or_checkpoint

    try:
        return load_model_or_checkpoint(Path(path).expanduser())
    except DataError as exc:
        raise ParameterError("finetune_from", f"needs a model file or checkpoint: {exc}") from None


def network_settings(spec: ModelSpec) -> dict[str, Any]:
    """The network settings (:data:`NETWORK_KEYS`) that give ``spec`` with
    :func:`~nnscratch.model.spec.mlp_spec`, or ``{}`` when it is not such a network."""
    from nnscratch.model.registry import ACTIVATIONS, dense_layers
    from nnscratch.model.spec import mlp_spec

    dense = dense_layers(spec)
    hidden = tuple(spec.layers[i].args["out_features"] for i in dense[:-1])
    kinds = {layer.kind for layer in spec.layers}
    # input dropout is a dropout layer in front of the first dense layer; the hidden ones come after it
    first = dense[0]
    dropout = next((layer.args["p"] for layer in spec.layers[first:] if layer.kind == "dropout"), 0.0)
    input_dropout = next((layer.args["p"] for layer in spec.layers[:first] if layer.kind == "dropout"), 0.0)
    for name, (kind, args) in ACTIVATIONS.items():
        if kind not in kinds:
            continue
        settings = {"hidden": hidden, "activation": name, "dropout": float(dropout),
                    "batch_norm": "batch_norm" in kinds, "input_dropout": float(input_dropout)}
        try:
            rebuilt = mlp_spec(spec.input_dim, hidden, spec.num_classes, **{k: settings[k] for k in NETWORK_KEYS[1:]})
        except UsageError:
            continue
        if rebuilt == spec:
            return settings
    return {}


def with_source_network(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (the settings given) with the network settings the source model has for those
    not given (and its ``deskew``), when ``values`` has a ``finetune_from``; else ``values`` as they are."""
    path = values.get("finetune_from")
    if not path:
        return values
    _, spec, info = load_source(path)
    inherited = {k: v for k, v in network_settings(spec).items() if k not in values}
    if "deskew" not in values and (info.get("data_options") or {}).get("deskew"):
        inherited["deskew"] = True   # its first layer learned deskewed images: so do the new run's (--no-deskew: not)
    return {**inherited, **values}


def head_layer(spec: ModelSpec) -> int:
    """The index of the output dense layer (the one that gives the logits)."""
    from nnscratch.model.registry import dense_layers

    return dense_layers(spec)[-1]


def architecture_problem(source: ModelSpec, spec: ModelSpec) -> str | None:
    """Where ``spec`` differs from ``source`` other than in the head's class count, or None."""
    from nnscratch.model.registry import LAYER_KINDS

    if source.input_dim != spec.input_dim:
        return f"it takes {source.input_dim:,} inputs, this run's images have {spec.input_dim:,}"
    head = head_layer(spec)
    walked = list(zip(source.walk(), spec.walk()))
    for (i, a, d_in, d_out), (_, b, e_in, e_out) in walked:
        if i == head and a.kind == b.kind == "dense" and {**a.args, "out_features": 0} == {**b.args, "out_features": 0}:
            continue
        if a != b:
            show = lambda layer, n_in, n_out: f"{layer.kind} {LAYER_KINDS[layer.kind].signature(layer.args, n_in, n_out)}"
            return f"layer {i} is ({show(a, d_in, d_out)}) there, ({show(b, e_in, e_out)}) here"
    if len(source.layers) != len(spec.layers):
        return f"it has {len(source.layers)} layers, this run's network {len(spec.layers)}"
    return None


def start_from(path: str, spec: ModelSpec, fresh: dict[str, np.ndarray], reset_head: bool) -> tuple[
        dict[str, np.ndarray], Transfer]:
    """The initial state of a run of ``spec`` fine-tuned from the model at ``path``.

    ``fresh`` is the run's own initial state (drawn from its seed): the head comes from it when
    ``reset_head`` is set, everything else from the source. A network that differs from the
    source's beyond the head, or a class count that differs without ``reset_head``, is a
    one-line :class:`~nnscratch.errors.ParameterError` naming ``finetune_from`` or ``reset_head``.
    """
    source_state, source_spec, _ = load_source(path)
    problem = architecture_problem(source_spec, spec)
    if problem:
        raise ParameterError("finetune_from", f"{path}: its network {source_spec.describe()} does not fit this "
                                              f"run's {spec.describe()}: {problem}")
    if source_spec.num_classes != spec.num_classes and not reset_head:
        raise ParameterError("reset_head", f"is needed: {path} predicts {source_spec.num_classes} classes, this "
                                           f"run's data has {spec.num_classes}; pass it for a fresh output layer")
    head = f"{head_layer(spec)}."
    state, kept, replaced = {}, [], []
    for name, value in fresh.items():
        mine = reset_head and name.startswith(head)
        if not mine and name in source_state and np.shape(source_state[name]) == np.shape(value):
            state[name] = source_state[name]
            kept.append(name)
        else:
            state[name] = value
            replaced.append(name)
    dropped = tuple(name for name in source_state if name not in fresh)
    return state, Transfer(str(path), tuple(kept), tuple(replaced), dropped)
