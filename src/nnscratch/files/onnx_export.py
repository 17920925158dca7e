"""A trained network as an ONNX graph (opset 17), for ONNX Runtime and every other ONNX runtime.

The graph computes what the engines compute in evaluation mode, in float32:

==============  ==================================================================================
layer kind      ONNX
==============  ==================================================================================
dense           ``Gemm(x, weight, bias)`` with ``transB=1`` (weight is torch's ``(out, in)``);
                without a bias, ``Gemm(x, weight)``
relu            ``Relu``
leaky_relu      ``LeakyRelu(alpha=negative_slope)``
elu             ``Elu(alpha)``
gelu            opset 17 has no ``Gelu`` (it came in opset 20), so it is built from primitives as
                the engine's formula reads: ``x * ((1 + Erf(x * sqrt(1/2))) * 0.5)``, or with
                ``approximate="tanh"``: ``x * ((1 + Tanh(sqrt(2/pi) * (x + 0.044715 x^3))) * 0.5)``
tanh, sigmoid   ``Tanh``, ``Sigmoid``
dropout         nothing (the identity in evaluation)
batch_norm      ``BatchNormalization(x, weight, bias, running_mean, running_var, epsilon=eps)``
                in inference mode: the running statistics, not folded into the Gemm before it
                (folding would round differently from the engines)
==============  ==================================================================================

The input is ``input``, float32 ``(batch, features)`` with a dynamic batch dimension; the output is
``logits`` ``(batch, classes)``, or ``probabilities`` when a ``Softmax`` over the classes is
appended. The graph starts from features, not pixels: the preprocessing of
:mod:`nnscratch.data.preprocess` (``pixel / 255``, then the per-channel standardisation the model
was trained with, if any) is described in the model's ``metadata_props`` rather than computed, so
that the graph is the network alone. ``metadata_props`` (strings; JSON where structured):

* ``class_names``: JSON list, the name of each output index;
* ``preprocessing``: JSON ``{"image_shape": [H, W, C] or null, "feature_order": ..., "divide_by": 255,
  "scale": 1/255, "standardization": {"mean": [...], "std": [...]} or null, "deskew": true or false}``
  (``deskew``: each image is first deskewed, :func:`nnscratch.data.deskew.deskew`, as the model's
  training images were);
* ``output`` (``logits`` or ``probabilities``), ``dataset``, ``model`` (``784-533-10 (relu)``) and
  ``nnscratch_spec`` (the spec's JSON, :meth:`~nnscratch.model.spec.ModelSpec.to_json`).

A layer kind the exporter does not know (one added with
:func:`~nnscratch.model.registry.register_layer`) is refused with one line naming it. Needs the
optional packages ``onnx`` and ``onnxruntime`` (``pip install 'nnscratch[onnx]'``, see
:data:`nnscratch.errors.INSTALL_ONNX`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from nnscratch import __version__
from nnscratch.errors import INSTALL_ONNX, UsageError
from nnscratch.files.json_text import parse_json
from nnscratch.model.spec import LayerSpec, ModelSpec

#: The ONNX operator set the graph is written in (ONNX Runtime >= 1.13 runs it).
OPSET = 17
#: The names of the graph's input and of its two possible outputs.
INPUT, LOGITS, PROBABILITIES = "input", "logits", "probabilities"
#: What a pixel is divided by to give a feature: ``x = pixel / DIVIDE_BY`` (see :mod:`nnscratch.data.preprocess`).
DIVIDE_BY = 255
#: How an image's pixels line up as features (see :mod:`nnscratch.data.preprocess`).
FEATURE_ORDER = "row by row, pixel by pixel, channel by channel (C order over H, W, C)"


def require_onnx():
    """The ``onnx`` module, or a one-line :class:`~nnscratch.errors.UsageError` saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise UsageError(f"ONNX export needs the onnx package: {INSTALL_ONNX}") from None
    return onnx


class _Graph:
    """The nodes and initialisers built so far, and the name of the tensor the next layer reads."""

    def __init__(self, helper, numpy_helper) -> None:
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.initializers: list = []
        self.constants: dict[float, str] = {}
        self.current = INPUT

    def tensor(self, name: str, value: np.ndarray) -> str:
        """A float32 initialiser named ``name``; returns its name."""
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def constant(self, value: float) -> str:
        """A float32 scalar initialiser, shared by every node that needs ``value``."""
        if value not in self.constants:
            self.constants[value] = self.tensor(f"const_{len(self.constants)}", np.float32(value))
        return self.constants[value]

    def node(self, op: str, inputs: Sequence[str], name: str, **attrs: Any) -> str:
        """Append ``op(inputs)``, its output named ``name``; returns that name."""
        self.nodes.append(self.helper.make_node(op, list(inputs), [name], name=name, **attrs))
        return name

    def apply(self, op: str, name: str, *extra: str, **attrs: Any) -> None:
        """The next layer: ``op(current, *extra)`` becomes the current tensor."""
        self.current = self.node(op, [self.current, *extra], name, **attrs)


def _dense(g: _Graph, i: int, layer: LayerSpec, state: dict) -> None:
    weights = [g.tensor(f"{i}.weight", state[f"{i}.weight"])]
    if layer.args["bias"]:
        weights.append(g.tensor(f"{i}.bias", state[f"{i}.bias"]))
    g.apply("Gemm", f"{i}.dense", *weights, transB=1)


def _gelu(g: _Graph, i: int, layer: LayerSpec, state: dict) -> None:
    """GELU from primitives, in the order of :class:`nnscratch.numpy_engine.layers.GELU`."""
    x = g.current
    if layer.args["approximate"] == "tanh":
        cx = g.node("Mul", [g.constant(0.044715), x], f"{i}.cx")
        cx3 = g.node("Mul", [g.node("Mul", [x, x], f"{i}.x2"), cx], f"{i}.cx3")
        u = g.node("Mul", [g.node("Add", [cx3, x], f"{i}.inner"), g.constant(math.sqrt(2.0 / math.pi))], f"{i}.u")
        s = g.node("Tanh", [u], f"{i}.tanh")
    else:
        s = g.node("Erf", [g.node("Mul", [x, g.constant(1.0 / math.sqrt(2.0))], f"{i}.scaled")], f"{i}.erf")
    cdf = g.node("Mul", [g.node("Add", [s, g.constant(1.0)], f"{i}.one_plus"), g.constant(0.5)], f"{i}.cdf")
    g.current = g.node("Mul", [x, cdf], f"{i}.gelu")


def _batch_norm(g: _Graph, i: int, layer: LayerSpec, state: dict) -> None:
    names = [g.tensor(f"{i}.{n}", state[f"{i}.{n}"]) for n in ("weight", "bias", "running_mean", "running_var")]
    g.apply("BatchNormalization", f"{i}.batch_norm", *names, epsilon=float(layer.args["eps"]))


def _activation(op: str, **attrs: Callable[[dict], float]):
    """A layer that is one ONNX op, its attributes read from the layer's arguments."""
    def build(g: _Graph, i: int, layer: LayerSpec, state: dict) -> None:
        g.apply(op, f"{i}.{layer.kind}", **{k: float(f(layer.args)) for k, f in attrs.items()})
    return build


#: Layer kind -> how it becomes ONNX nodes: ``(graph, index, layer, state) -> None``.
EXPORTERS: dict[str, Callable[[_Graph, int, LayerSpec, dict], None]] = {
    "dense": _dense,
    "relu": _activation("Relu"),
    "leaky_relu": _activation("LeakyRelu", alpha=lambda a: a["negative_slope"]),
    "elu": _activation("Elu", alpha=lambda a: a["alpha"]),
    "gelu": _gelu,
    "tanh": _activation("Tanh"),
    "sigmoid": _activation("Sigmoid"),
    "dropout": lambda g, i, layer, state: None,
    "batch_norm": _batch_norm,
}


def check_exportable(spec: ModelSpec) -> None:
    """A one-line :class:`~nnscratch.errors.UsageError` for the first layer kind ONNX export does not know."""
    for i, layer in enumerate(spec.layers):
        if layer.kind not in EXPORTERS:
            raise UsageError(f"ONNX export does not know the layer kind {layer.kind!r} (layer {i}); it exports "
                             f"{', '.join(EXPORTERS)}")


def preprocessing(standardization: dict | None, image_shape: Sequence[int] | None, deskew: bool = False) -> dict:
    """What the ``preprocessing`` metadata says: how uint8 images become the graph's ``input``."""
    return {"deskew": bool(deskew), "image_shape": None if image_shape is None else [int(v) for v in image_shape],
            "feature_order": FEATURE_ORDER, "divide_by": DIVIDE_BY, "scale": 1.0 / DIVIDE_BY,
            "standardization": None if not standardization else
            {"mean": [float(v) for v in standardization["mean"]], "std": [float(v) for v in standardization["std"]]}}


def to_onnx(state: dict[str, np.ndarray], spec: ModelSpec, info: dict, probabilities: bool = False, *,
            class_names: Sequence[str] | None = None, image_shape: Sequence[int] | None = None):
    """The ONNX model (an ``onnx.ModelProto``, checked by ``onnx.checker``) of ``spec`` with ``state``.

    Parameters
    ----------
    state, spec, info
        What :func:`~nnscratch.files.checkpoint.load_model_or_checkpoint` returns; ``info`` gives the
        dataset's name and the standardisation for the metadata.
    probabilities
        Append a ``Softmax`` over the classes: the output is ``probabilities`` instead of ``logits``.
    class_names
        The name of each class (default: ``"0"``, ``"1"``...); as many as ``spec.num_classes``.
    image_shape
        ``(H, W, C)`` of the images the features come from, for the metadata; None when unknown.
    """
    onnx = require_onnx()
    from onnx import TensorProto, helper, numpy_helper

    check_exportable(spec)
    names = [str(c) for c in class_names] if class_names is not None else [str(k) for k in range(spec.num_classes)]
    if len(names) != spec.num_classes:
        raise UsageError(f"{len(names)} class names for a model of {spec.num_classes} classes")
    g = _Graph(helper, numpy_helper)
    for i, layer, _, _ in spec.walk():
        EXPORTERS[layer.kind](g, i, layer, state)
    output = PROBABILITIES if probabilities else LOGITS
    g.node("Softmax" if probabilities else "Identity", [g.current], output, **({"axis": 1} if probabilities else {}))
    graph = helper.make_graph(
        g.nodes, f"nnscratch {spec.describe()}",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", spec.input_dim])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", spec.num_classes])],
        initializer=g.initializers)
    model = helper.make_model(graph, producer_name="nnscratch", producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # what opset 17 came with: loadable by ONNX Runtime >= 1.13, not only the newest
    helper.set_model_props(model, {
        "class_names": json.dumps(names),
        "preprocessing": json.dumps(preprocessing(info.get("standardization"), image_shape,
                                                     (info.get("data_options") or {}).get("deskew", False))),
        "output": output, "dataset": str(info.get("dataset") or ""), "model": spec.describe(),
        "nnscratch_spec": spec.to_json()})
    onnx.checker.check_model(model, full_check=True)
    return model


def data_facts(model_path: str | Path, spec: ModelSpec, info: dict) -> tuple[list[str] | None, list[int] | None]:
    """``(class names, image shape)`` of the data a model file was trained on, each None when unknown.

    A model file does not hold them; its run does: the ``metrics.json`` of the run folder the file
    is in (a model file's folder, or up to two folders above a checkpoint:
    ``OUT/checkpoints/[numpy/]last.safetensors``), when it is of the same dataset and fits the
    model. Otherwise a built-in dataset (``info["dataset"]``) gives its class names, and its image
    shape with the model's ``image_size`` and ``color`` options applied. An image shape whose size
    is not the model's input width is dropped.
    """
    names, shape = _from_run_folder(Path(model_path), info.get("dataset"), spec.num_classes)
    if names is None:
        names, shape = _from_builtin(info.get("dataset"), info.get("data_options") or {})
    if names is not None and len(names) != spec.num_classes:
        names, shape = None, None
    if shape is not None and math.prod(shape) != spec.input_dim:
        shape = None
    return names, shape


def _from_run_folder(path: Path, dataset: str | None, classes: int) -> tuple[list | None, list | None]:
    for folder in list(path.resolve().parents)[:3]:
        try:
            described = parse_json((folder / "metrics.json").read_text(encoding="utf-8"))["dataset"]
            names, shape = [str(c) for c in described["class_names"]], [int(v) for v in described["image_shape"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if described.get("name") == dataset and len(names) == classes:
            return names, shape
    return None, None


def _from_builtin(dataset: str | None, options: dict) -> tuple[list | None, list | None]:
    from nnscratch.data.datasets import DATASETS

    builtin = DATASETS.get(dataset or "")
    if builtin is None:
        return None, None
    h, w, *c = builtin.image_shape
    channels = c[0] if c else 1
    if options.get("image_size"):
        h, w = options["image_size"]
    channels = {"grayscale": 1, "rgb": 3}.get(options.get("color"), channels)
    return [str(n) for n in builtin.class_names], [int(h), int(w), int(channels)]


def export_onnx(model_path: str | Path, out_path: str | Path, probabilities: bool = False) -> Path:
    """Write the ONNX model of a model file or checkpoint ``model_path`` to ``out_path``, atomically.

    The class names and the image shape in its metadata come from :func:`data_facts`. Returns
    ``out_path``. An ``out_path`` that is a folder is a :class:`~nnscratch.errors.UsageError`.
    """
    from nnscratch.files.atomic import atomic_write_bytes
    from nnscratch.files.checkpoint import load_model_or_checkpoint

    out_path = Path(out_path)
    if out_path.is_dir():
        raise UsageError(f"{out_path} is a folder; pass a file name such as {out_path / 'model.onnx'}")
    require_onnx()
    state, spec, info = load_model_or_checkpoint(model_path)
    names, shape = data_facts(model_path, spec, info)
    model = to_onnx(state, spec, info, probabilities, class_names=names, image_shape=shape)
    atomic_write_bytes(out_path, model.SerializeToString())
    return out_path
