"""The layer registry: everything the project knows about each kind of layer, in one entry.

One :class:`LayerKind` per ``kind`` of :class:`~nnscratch.model.spec.LayerSpec` gives

* its arguments with their defaults, and their checks (a bad value is a one-line usage error);
* the NumPy class that computes it by hand (a :class:`~nnscratch.numpy_engine.layers.Layer`);
* the torch module its twin uses (built lazily: this module never imports torch);
* its parameters' and buffers' names and shapes, named as torch's ``state_dict()`` names them
  (``weight (out, in)``, ``running_mean``...), and how they are initialised;
* whether its units can die (the ReLU family: the gradient-flow statistics count its dead units).

The registry is open: :func:`register_layer` adds a kind of your own (docs/your-own-layer.md)
without editing this file; the spec, both engines, the settings and the model files then accept
it in this process. The CLI's ``--activation`` choices are the keys of :data:`ACTIVATIONS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from nnscratch.errors import ParameterError, UsageError
from nnscratch.numpy_engine import layers

INITIALIZERS = ("he_normal", "he_uniform", "xavier_normal", "xavier_uniform", "torch_default")


def _nn():
    from torch import nn

    return nn


def _same_width(args: dict, d_in: int) -> int:
    return d_in


#: ``(rng, args, in_features, out_features, init scheme, gain**2)`` -> the layer's parameters and
#: buffers at the start of training, float64 (``num_batches_tracked`` int64), named as torch does.
Initial = Callable[[np.random.Generator, dict, int, int, str, float], dict[str, np.ndarray]]


@dataclass(frozen=True)
class LayerKind:
    """What one kind of layer is. See the module docstring."""

    name: str
    numpy_class: type                                  # a subclass of nnscratch.numpy_engine.layers.Layer
    torch_module: Callable[[dict, int], Any]           # (args, in_features) -> torch.nn.Module
    defaults: dict[str, Any] = field(default_factory=dict)
    check: Callable[[dict], str | None] = lambda args: None   # a problem with the arguments, or None
    out_features: Callable[[dict, int], int] = _same_width
    param_shapes: Callable[[dict, int], dict[str, tuple[int, ...]]] = lambda args, d: {}
    buffer_shapes: Callable[[dict, int], dict[str, tuple[int, ...]]] = lambda args, d: {}
    initial: Initial | None = None                     # None: no parameters or buffers
    init_gain_squared: Callable[[dict], float] | None = None  # activations only: gain**2 for He/Xavier init
    short: Callable[[dict], str] = lambda args: ""            # for ModelSpec.describe()
    # the ReLU family (relu, leaky_relu, elu): flat or nearly so below 0, so a unit whose input is
    # <= 0 for a whole batch passes (almost) nothing back; training/gradient_flow.py counts those
    dead_units: bool = False

    def signature(self, args: dict, d_in: int, d_out: int) -> str:
        """``dense 784 -> 533``, ``dropout p=0.2``: one layer of the report's architecture table."""
        if self.name == "dense":
            return f"{d_in} -> {d_out}" + ("" if args["bias"] else ", no bias")
        return ", ".join(f"{k}={v}" for k, v in args.items()) or "-"


def _dense_check(a: dict) -> str | None:
    n = a.get("out_features")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return f"dense out_features must be a positive integer, got {n!r}"
    if not isinstance(a["bias"], bool):
        return f"dense bias must be true or false, got {a['bias']!r}"
    return None


def _positive_float(name: str, flag: str, low: float, high: float | None = None, *, closed_high=False):
    def check(a: dict) -> str | None:
        v = a[name]
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= low
        if ok and high is not None:
            ok = v <= high if closed_high else v < high
        if not ok:
            rng = f"in [{low}, {high}{']' if closed_high else ')'}" if high is not None else f">= {low}"
            return f"{flag} must be a number {rng}, got {v!r}"
        return None
    return check


def _bn_check(a: dict) -> str | None:
    return (_positive_float("eps", "batch norm eps", 0.0)(a) if not a["eps"] > 0 else None) or \
        _positive_float("momentum", "batch norm momentum", 0.0, 1.0, closed_high=True)(a)


def _gelu_check(a: dict) -> str | None:
    return None if a["approximate"] in ("none", "tanh") else \
        f"gelu approximate must be 'none' or 'tanh', got {a['approximate']!r}"


def _dense_initial(rng: np.random.Generator, args: dict, d_in: int, d_out: int, scheme: str,
                   gain_squared: float) -> dict[str, np.ndarray]:
    """A dense layer's start: :func:`init_dense`, without the bias when the layer has none."""
    drawn = init_dense(rng, d_in, d_out, scheme, gain_squared)
    return {"weight": drawn["weight"]} | ({"bias": drawn["bias"]} if args["bias"] else {})


def _batch_norm_initial(rng: np.random.Generator, args: dict, d: int, d_out: int, scheme: str,
                        gain_squared: float) -> dict[str, np.ndarray]:
    """Batch norm starts as torch's does (whatever ``init``): weight 1, bias 0, running mean 0, variance 1."""
    return {"weight": np.ones(d), "bias": np.zeros(d), "running_mean": np.zeros(d), "running_var": np.ones(d),
            "num_batches_tracked": np.zeros((), dtype=np.int64)}


LAYER_KINDS: dict[str, LayerKind] = {k.name: k for k in (
    LayerKind("dense", layers.Dense, lambda a, d: _nn().Linear(d, a["out_features"], bias=a["bias"]),
              defaults={"out_features": None, "bias": True}, check=_dense_check,
              out_features=lambda a, d: a["out_features"],
              param_shapes=lambda a, d: {"weight": (a["out_features"], d)} | (
                  {"bias": (a["out_features"],)} if a["bias"] else {}),
              initial=_dense_initial),
    LayerKind("relu", layers.ReLU, lambda a, d: _nn().ReLU(), init_gain_squared=lambda a: 2.0,
              short=lambda a: "relu", dead_units=True),
    LayerKind("leaky_relu", layers.LeakyReLU, lambda a, d: _nn().LeakyReLU(a["negative_slope"]),
              defaults={"negative_slope": 0.01},
              check=_positive_float("negative_slope", "leaky_relu negative_slope", 0.0),
              init_gain_squared=lambda a: 2.0 / (1.0 + a["negative_slope"] ** 2),
              short=lambda a: "leaky_relu" + (f" {a['negative_slope']}" if a["negative_slope"] != 0.01 else ""),
              dead_units=True),
    LayerKind("elu", layers.ELU, lambda a, d: _nn().ELU(a["alpha"]), defaults={"alpha": 1.0},
              check=_positive_float("alpha", "elu alpha", 0.0), init_gain_squared=lambda a: 2.0,
              short=lambda a: "elu", dead_units=True),
    LayerKind("gelu", layers.GELU, lambda a, d: _nn().GELU(approximate=a["approximate"]),
              defaults={"approximate": "none"}, check=_gelu_check, init_gain_squared=lambda a: 2.0,
              short=lambda a: "gelu" if a["approximate"] == "none" else "gelu_tanh"),
    LayerKind("tanh", layers.Tanh, lambda a, d: _nn().Tanh(), init_gain_squared=lambda a: 25.0 / 9.0,
              short=lambda a: "tanh"),
    LayerKind("sigmoid", layers.Sigmoid, lambda a, d: _nn().Sigmoid(), init_gain_squared=lambda a: 1.0,
              short=lambda a: "sigmoid"),
    LayerKind("dropout", layers.Dropout, lambda a, d: _nn().Dropout(a["p"]), defaults={"p": 0.5},
              check=_positive_float("p", "dropout p", 0.0, 1.0), short=lambda a: f"dropout {a['p']:g}"),
    LayerKind("batch_norm", layers.BatchNorm1d,
              lambda a, d: _nn().BatchNorm1d(d, eps=a["eps"], momentum=a["momentum"]),
              defaults={"eps": 1e-5, "momentum": 0.1}, check=_bn_check,
              param_shapes=lambda a, d: {"weight": (d,), "bias": (d,)},
              buffer_shapes=lambda a, d: {"running_mean": (d,), "running_var": (d,), "num_batches_tracked": ()},
              initial=_batch_norm_initial,
              short=lambda a: "batch norm"),
)}

#: ``--activation`` name -> the layer it puts after each hidden dense layer.
ACTIVATIONS: dict[str, tuple[str, dict]] = {
    "relu": ("relu", {}),
    "leaky_relu": ("leaky_relu", {}),
    "elu": ("elu", {}),
    "gelu": ("gelu", {"approximate": "none"}),
    "gelu_tanh": ("gelu", {"approximate": "tanh"}),
    "tanh": ("tanh", {}),
    "sigmoid": ("sigmoid", {}),
}

#: Buffers that count rather than measure: kept as int64 in both engines, as torch does.
INTEGER_BUFFERS = ("num_batches_tracked",)
#: The kinds this file defines: :func:`register_layer` may not replace them.
BUILT_IN_KINDS = tuple(LAYER_KINDS)


def register_layer(kind: str, numpy_class: type, torch_module: Callable[[dict, int], Any], *,
                   defaults: dict[str, Any] | None = None, check: Callable[[dict], str | None] | None = None,
                   out_features: Callable[[dict, int], int] | None = None,
                   param_shapes: Callable[[dict, int], dict[str, tuple[int, ...]]] | None = None,
                   buffer_shapes: Callable[[dict, int], dict[str, tuple[int, ...]]] | None = None,
                   initial: Initial | None = None, activation: bool = False,
                   init_gain_squared: float | None = None, dead_units: bool = False) -> LayerKind:
    """Add a layer kind of your own to the registry (for this process), without editing our files.

    Parameters
    ----------
    kind : str
        Its name in a spec (``LayerSpec(kind)``), in model files and, for an activation, in
        ``activation = kind``. A built-in kind cannot be replaced; registering a kind of your own
        again replaces it (a notebook cell run twice).
    numpy_class : type
        A subclass of :class:`nnscratch.numpy_engine.layers.Layer`, built as
        ``numpy_class(in_features, dtype=..., **args)``.
    torch_module : callable
        ``(args, in_features) -> torch.nn.Module``, the twin's module (``lambda a, d: nn.SiLU()``).
        Its ``state_dict()`` names must be those of ``param_shapes`` and ``buffer_shapes``.
    defaults : dict, optional
        Every argument the kind takes, with its default (``{}``: none). ``check(args)`` returns a
        one-line problem with the completed arguments, or None.
    out_features : callable, optional
        ``(args, in_features) -> out_features``; default: the same width.
    param_shapes, buffer_shapes : callable, optional
        ``(args, in_features) -> {name: shape}``, torch's names; default: none.
    initial : callable, optional
        ``(rng, args, in_features, out_features, init, gain_squared) -> {name: array}``: every
        parameter and buffer at the start of training (float64; drawn from ``rng`` if at all).
        Required when the kind has parameters or buffers.
    activation : bool
        An element-wise activation without parameters: also usable as ``activation=kind`` in the
        settings (:func:`nnscratch.api.compare`, :class:`~nnscratch.run.config.RunConfig`), after
        each hidden dense layer. ``init_gain_squared`` is then the gain**2 the He and Xavier
        initialisers use for the dense layer before it (default 2.0, ReLU's, as GELU and ELU take).
    dead_units : bool
        A ReLU-like activation: the gradient-flow statistics count its units whose input is
        ``<= 0`` for a whole batch (``dead_fraction``).

    Returns
    -------
    LayerKind
        The entry now in :data:`LAYER_KINDS`.

    Not supported: the command line cannot load your class (``nnscratch compare --activation NAME``
    knows the built-in names only), and ``--jit`` compiles only the built-in ReLU.
    """
    if kind in BUILT_IN_KINDS:
        raise UsageError(f"{kind!r} is a built-in layer kind; register yours under another name")
    if not (isinstance(numpy_class, type) and issubclass(numpy_class, layers.Layer)):
        raise UsageError(f"numpy_class must be a subclass of nnscratch.numpy_engine.layers.Layer, got {numpy_class!r}")
    if activation and (param_shapes or buffer_shapes or out_features):
        raise UsageError(f"activation {kind!r}: an activation keeps the width and has no parameters or buffers")
    if (param_shapes or buffer_shapes) and initial is None:
        raise UsageError(f"layer kind {kind!r} has parameters or buffers: give initial=... to start them")
    gain = (2.0 if init_gain_squared is None else float(init_gain_squared)) if activation else None
    entry = LayerKind(kind, numpy_class, torch_module, defaults=dict(defaults or {}),
                      check=check or (lambda args: None), out_features=out_features or _same_width,
                      param_shapes=param_shapes or (lambda args, d: {}),
                      buffer_shapes=buffer_shapes or (lambda args, d: {}), initial=initial,
                      init_gain_squared=None if gain is None else (lambda args: gain),
                      short=lambda args: kind, dead_units=bool(dead_units))
    LAYER_KINDS[kind] = entry
    if activation:
        ACTIVATIONS[kind] = (kind, {})
    else:
        ACTIVATIONS.pop(kind, None)
    return entry


def complete_args(kind: str, args: dict) -> dict:
    """``args`` with every default filled in, checked; an unknown kind or argument is a usage error."""
    entry = LAYER_KINDS.get(kind)
    if entry is None:
        raise UsageError(f"unknown layer kind {kind!r}; choose one of {', '.join(LAYER_KINDS)} "
                         "(or add yours with nnscratch.model.registry.register_layer)")
    unknown = set(args) - set(entry.defaults)
    if unknown:
        allowed = ", ".join(entry.defaults) or "none"
        raise UsageError(f"{kind} layer: unknown argument(s) {', '.join(sorted(unknown))} (allowed: {allowed})")
    full = {**entry.defaults, **args}
    problem = entry.check(full)
    if problem:
        raise UsageError(problem)
    return full


def state_shapes(spec) -> dict[str, tuple[int, ...]]:
    """Every parameter and buffer of ``spec`` -> its shape, named as torch's ``state_dict()``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i, layer, d_in, _ in spec.walk():
        entry = LAYER_KINDS[layer.kind]
        for name, shape in {**entry.param_shapes(layer.args, d_in), **entry.buffer_shapes(layer.args, d_in)}.items():
            shapes[f"{i}.{name}"] = tuple(shape)
    return shapes


def parameter_names(spec) -> tuple[str, ...]:
    """The parameters of ``spec`` (not its buffers), named as torch's ``state_dict()``: ``0.weight``, ``0.bias``..."""
    return tuple(f"{i}.{name}" for i, layer, d_in, _ in spec.walk()
                 for name in LAYER_KINDS[layer.kind].param_shapes(layer.args, d_in))


def dropout_layers(spec) -> list[tuple[int, int, float]]:
    """``(index, width, p)`` of every dropout layer: where the training loop must draw masks."""
    return [(i, d_in, layer.args["p"]) for i, layer, d_in, _ in spec.walk() if layer.kind == "dropout"]


def dead_unit_layers(spec) -> frozenset[int]:
    """Indices of the ReLU-family layers (:attr:`LayerKind.dead_units`), whose dead units the
    gradient-flow statistics count."""
    return frozenset(i for i, layer, _, _ in spec.walk() if LAYER_KINDS[layer.kind].dead_units)


def dense_layers(spec) -> list[int]:
    """Indices of the dense layers, first to last (the last one gives the logits)."""
    return [i for i, layer, _, _ in spec.walk() if layer.kind == "dense"]


def frozen_layers(spec, freeze: int) -> tuple[int, ...]:
    """Indices of the layers that ``freeze=N`` holds fixed: the first ``N`` dense layers and the
    batch-norm layer that follows each (the one that normalises its output).

    Frozen layers form a prefix of the network, so nothing below the first trainable dense layer
    needs a gradient. The output layer always trains: ``N`` is at most the number of hidden dense
    layers. Frozen layers run in evaluation mode: batch norm normalises with its running statistics
    and does not update them (its running statistics are parameters of the frozen function as much
    as ``gamma`` and ``beta`` are); activations and dropout in the prefix are left as they are.
    """
    dense = dense_layers(spec)
    if isinstance(freeze, bool) or not isinstance(freeze, (int, np.integer)) or freeze < 0:
        raise ParameterError("freeze", f"must be a whole number of at least 0, got {freeze!r}")
    if freeze >= len(dense):
        raise ParameterError("freeze", f"{freeze} leaves nothing to train: the network has {len(dense)} dense "
                                       f"layers and the output layer always trains; freeze at most {len(dense) - 1}")
    if freeze == 0:
        return ()
    first_trainable = dense[freeze]
    return tuple(i for i, layer, _, _ in spec.walk()
                 if i < first_trainable and layer.kind in ("dense", "batch_norm"))


def first_trainable_layer(spec, freeze: int) -> int:
    """The index of the first layer that ``freeze=N`` leaves trainable (0 without freezing)."""
    return dense_layers(spec)[freeze] if freeze else 0


# ----------------------------------------------------------------------------- initialisation

def _gain_squared(spec, index: int) -> float:
    """gain**2 for the dense layer at ``index``: that of the activation after it; the output layer
    (no activation after it) takes that of the hidden activation, as the reference project's He
    init does for every layer; 1 for a network without activations."""
    def gain_of(layer) -> float | None:
        entry = LAYER_KINDS[layer.kind]
        return None if entry.init_gain_squared is None else entry.init_gain_squared(layer.args)

    for layer in spec.layers[index + 1:]:          # the activation this layer feeds
        if layer.kind == "dense":
            break
        if gain_of(layer) is not None:
            return gain_of(layer)
    for layer in reversed(spec.layers[:index]):     # the output layer: the hidden activation
        if gain_of(layer) is not None:
            return gain_of(layer)
    return 1.0


def init_dense(rng: np.random.Generator, fan_in: int, fan_out: int, scheme: str,
               gain_squared: float) -> dict[str, np.ndarray]:
    """Initial ``weight (fan_out, fan_in)`` and ``bias (fan_out,)`` in float64.

    ==============  =======================================================  ======
    scheme          weight                                                   bias
    ==============  =======================================================  ======
    he_normal       Normal(0, std^2),   std = sqrt(gain^2 / fan_in)          0
    he_uniform      U(-b, b),           b = sqrt(3 gain^2 / fan_in)          0
    xavier_normal   Normal(0, std^2),   std = sqrt(gain^2 * 2 / (fan_in + fan_out))   0
    xavier_uniform  U(-b, b),           b = sqrt(gain^2 * 6 / (fan_in + fan_out))     0
    torch_default   U(-b, b),           b = 1 / sqrt(fan_in)                 U(-b, b)
    ==============  =======================================================  ======

    He (Kaiming) keeps the activations' variance through layers that zero half their input
    (He et al. 2015, ``torch.nn.init.kaiming_*_``); Xavier (Glorot & Bengio 2010,
    ``xavier_*_``) balances forward and backward variance. ``gain`` is the activation's, as
    ``torch.nn.init.calculate_gain`` gives it (ReLU sqrt(2), Tanh 5/3, Sigmoid 1, LeakyReLU
    sqrt(2 / (1 + slope^2))); GELU and ELU, absent from torch's table, take ReLU's. With
    ``torch_default`` the layer starts as ``nn.Linear`` itself starts (``kaiming_uniform_(a=sqrt(5))``).
    """
    shape = (fan_out, fan_in)
    bias = np.zeros(fan_out)
    if scheme == "he_normal":
        weight = rng.normal(0.0, np.sqrt(gain_squared / fan_in), size=shape)
    elif scheme == "he_uniform":
        b = np.sqrt(3.0 * gain_squared / fan_in)
        weight = rng.uniform(-b, b, size=shape)
    elif scheme == "xavier_normal":
        weight = rng.normal(0.0, np.sqrt(gain_squared * 2.0 / (fan_in + fan_out)), size=shape)
    elif scheme == "xavier_uniform":
        b = np.sqrt(gain_squared * 6.0 / (fan_in + fan_out))
        weight = rng.uniform(-b, b, size=shape)
    elif scheme == "torch_default":
        b = 1.0 / np.sqrt(fan_in)
        weight = rng.uniform(-b, b, size=shape)
        bias = rng.uniform(-b, b, size=fan_out)
    else:
        raise ParameterError("scheme", f"must be one of {', '.join(INITIALIZERS)}, got {scheme!r}")
    return {"weight": weight, "bias": bias}


def initial_state(spec, rng: np.random.Generator, init: str = "he_normal") -> dict[str, np.ndarray]:
    """Every parameter and buffer of ``spec`` at the start of training, named as torch names them.

    Float arrays are float64 (each engine casts them to its dtype); ``num_batches_tracked`` is int64.
    Each layer starts as its kind's ``initial`` says, in layer order (one random stream): dense
    layers follow ``init`` (see :func:`init_dense`), batch norm starts as torch's does. Both
    engines start from these same arrays, which is what makes them twins.
    """
    if init not in INITIALIZERS:
        raise ParameterError("init", f"must be one of {', '.join(INITIALIZERS)}, got {init!r}")
    state: dict[str, np.ndarray] = {}
    for i, layer, d_in, d_out in spec.walk():
        entry = LAYER_KINDS[layer.kind]
        if entry.initial is not None:
            start = entry.initial(rng, layer.args, d_in, d_out, init, _gain_squared(spec, i))
            state.update({f"{i}.{name}": value for name, value in start.items()})
    return state
