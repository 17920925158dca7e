"""Gradient checks: the hand-written backward passes against central finite differences, in float64.

For a scalar function ``f`` of an array ``x``, the central difference along entry ``i`` is::

    df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / 2h          error O(h^2) from the Taylor series,
                                                           plus O(eps * |f| / h) from rounding

With ``h = 1e-6`` in float64 (``eps = 2.2e-16``) both terms are around 1e-10 of the gradient's
size; a backward pass with a real mistake is off by far more than that (a forgotten mask, a
missing factor), so a relative error below ``1e-6`` says the hand-written gradient is right.

A gradient is compared as a whole tensor, by the norm-based relative error::

    rel_error(a, n) = max_i |a_i - n_i| / max(max_i |a_i|, max_i |n_i|, tiny)

(entries that are nearly zero in both do not blow it up; 0 only when equal), and the *worst
entry* is where ``|a_i - n_i|`` is largest.

* :func:`check_layer`: one layer alone, for the loss ``L = sum(y * g)`` with a fixed random ``g``
  (so ``dL/dy = g``): its ``dx`` and every ``grads`` entry.
* :func:`check_network`: a whole spec with its loss (label smoothing), the L1/L2 penalty, batch norm
  in training mode and dropout with a fixed mask: every layer's ``dx`` (``dL/d(its input)``: a
  wrong backward shows up first at the layer that has it) and every parameter's gradient; a
  large tensor on a random sample of its entries (``max_entries``).
* :func:`compare_with_torch`: one layer's output, ``dx`` and parameter gradients against torch's
  autograd on a module of its own (torch imported only there).

The analytic side is always the engine's own code: the layers' ``backward``, the loss's
``forward_backward`` and :func:`~nnscratch.training.regularization.add_penalty_gradient`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from nnscratch.errors import ParameterError
from nnscratch.numpy_engine.layers import GradientSink, Layer
from nnscratch.numpy_engine.losses import SoftmaxCrossEntropy
from nnscratch.training.regularization import add_penalty_gradient, penalty

#: Finite differences' default step, and the relative error below which a gradient passes.
DEFAULT_H = 1e-6
DEFAULT_TOL = 1e-6
TINY = 1e-300


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = DEFAULT_H,
                       entries: np.ndarray | None = None) -> np.ndarray:
    """Central finite differences ``(f(x + h e_i) - f(x - h e_i)) / 2h`` of the scalar ``f()`` with
    respect to every entry of ``x`` (perturbed in place and restored); ``x`` must be float64.

    With ``entries`` (flat indices into ``x``), only those: a 1-D array of their differences, in
    that order (two calls of ``f`` per entry, so a large tensor is checked on a sample of it)."""
    if x.dtype != np.float64:
        raise ParameterError("x", f"must be float64 for finite differences, got {x.dtype}")
    if entries is not None:
        return np.array([_central_difference(f, x, np.unravel_index(int(k), x.shape), h) for k in entries],
                        dtype=np.float64)
    grad = np.zeros(x.shape, dtype=np.float64)
    for idx in np.ndindex(x.shape):
        grad[idx] = _central_difference(f, x, idx, h)
    return grad


def _central_difference(f: Callable[[], float], x: np.ndarray, idx: tuple, h: float) -> float:
    old = x[idx]
    x[idx] = old + h
    f_plus = f()
    x[idx] = old - h
    f_minus = f()
    x[idx] = old
    return (f_plus - f_minus) / (2 * h)


def rel_error(a, b) -> float:
    """``max_i |a_i - b_i| / max(max_i |a_i|, max_i |b_i|, tiny)`` (see the module docstring)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ParameterError("a", f"and b must have the same shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))), TINY)
    return float(np.max(np.abs(a - b))) / scale


@dataclass(frozen=True)
class Check:
    """One gradient compared: ``layer`` (``"2 relu"``), ``name`` (``dx``, ``weight``, ``dlogits``...),
    its ``shape``, the relative ``error`` (NaN when the gradient is missing or not finite), the
    ``worst`` entry's index and both values there, and a ``note`` when something is missing."""

    layer: str
    name: str
    shape: tuple[int, ...]
    error: float
    worst: tuple[int, ...]
    analytic: float
    reference: float
    note: str = ""

    def passed(self, tol: float = DEFAULT_TOL) -> bool:
        return self.error <= tol  # NaN fails


def compare(layer: str, name: str, analytic: np.ndarray | None, reference: np.ndarray, note: str = "") -> Check:
    """A :class:`Check` of ``analytic`` against ``reference`` (numerical or torch's)."""
    reference = np.asarray(reference, dtype=np.float64)
    shape = tuple(reference.shape)
    if analytic is None or np.shape(analytic) != shape:
        got = "nothing" if analytic is None else f"shape {np.shape(analytic)}"
        return Check(layer, name, shape, math.nan, (), math.nan, math.nan, note or f"backward gave {got}")
    analytic = np.asarray(analytic, dtype=np.float64)
    if not np.all(np.isfinite(analytic)):
        return Check(layer, name, shape, math.nan, (), math.nan, math.nan, note or "not finite (not written?)")
    diff = np.abs(analytic - reference)
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), shape)) if diff.size else ()
    return Check(layer, name, shape, rel_error(analytic, reference), worst,
                 float(analytic[worst]) if diff.size else 0.0, float(reference[worst]) if diff.size else 0.0, note)


def worst_check(checks: list[Check]) -> Check:
    """The check with the largest error (a missing or non-finite gradient counts as the largest)."""
    return max(checks, key=lambda c: math.inf if math.isnan(c.error) else c.error)


def format_table(checks: list[Check], tol: float = DEFAULT_TOL, reference: str = "numeric") -> str:
    """The checks as an aligned text table, one row per gradient, ``ok``/``FAIL`` against ``tol``."""
    head = ("layer", "gradient", "shape", "max rel error", "worst entry", "analytic", reference, "")
    rows = [head]
    for c in checks:
        rows.append((c.layer, c.name, "x".join(map(str, c.shape)) or "scalar", f"{c.error:.2e}",
                     str(c.worst) if c.worst else "-", f"{c.analytic:.6g}", f"{c.reference:.6g}",
                     ("ok" if c.passed(tol) else "FAIL") + (f"  ({c.note})" if c.note else "")))
    widths = [max(len(r[k]) for r in rows) for k in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def _require_float64(layer: Layer, x: np.ndarray) -> None:
    if x.dtype != np.float64 or any(p.dtype != np.float64 for p in layer.params.values()):
        raise ParameterError("layer", "must be built with dtype=np.float64 (and x float64): finite differences "
                                      "need float64")


def check_layer(layer: Layer, x: np.ndarray, dout: np.ndarray | None = None, *, name: str | None = None,
                h: float = DEFAULT_H, rng: np.random.Generator | None = None, train: bool = True) -> list[Check]:
    """``dx`` and every parameter gradient of ``layer`` at ``x`` against finite differences.

    The loss is ``L = sum(layer.forward(x) * dout)``, so ``dL/dy = dout`` (random normal when not
    given). The layer is run in training mode (batch norm's batch statistics; a dropout layer needs
    its mask set first, :meth:`~nnscratch.numpy_engine.layers.Dropout.set_keep`); its buffers are
    restored afterwards. Its ``grads`` are filled with NaN before ``backward``: a gradient the
    backward never hands to the sink shows as missing. ``layer`` and ``x`` must be float64.
    """
    _require_float64(layer, x)
    name = name or type(layer).__name__
    rng = rng or np.random.default_rng(0)
    buffers = {k: v.copy() for k, v in layer.buffers.items()}
    y = np.array(layer.forward(x.copy(), train), dtype=np.float64)
    g = rng.normal(size=y.shape) if dout is None else np.asarray(dout, dtype=np.float64)
    layer.sink = GradientSink(layer.grads)
    for k in layer.params:
        if k in layer.grads:
            layer.grads[k].fill(np.nan)
    layer.forward(x.copy(), train)
    dx = layer.backward(g.copy(), need_dx=True)
    dx = None if dx is None else np.array(dx, dtype=np.float64)
    analytic = {k: layer.grads[k].copy() if k in layer.grads else None for k in layer.params}
    point = x.copy()

    def loss() -> float:
        return float(np.sum(layer.forward(point.copy(), train) * g))

    checks = [compare(name, "dx", dx, numerical_gradient(loss, point, h))]
    for k, p in layer.params.items():
        checks.append(compare(name, k, analytic[k], numerical_gradient(loss, p, h),
                              "" if k in layer.grads else f"no grads[{k!r}]"))
    for k, v in buffers.items():
        layer.buffers[k][...] = v
    return checks


def dropout_masks(spec, n: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """A ``keep`` mask ``(n, width)`` for every dropout layer of ``spec`` (kept with probability ``1 - p``)."""
    from nnscratch.model.registry import dropout_layers

    return {i: rng.random((n, width)) >= p for i, width, p in dropout_layers(spec)}


def check_state(spec, rng: np.random.Generator, init: str = "he_normal") -> dict[str, np.ndarray]:
    """``spec``'s initial state with every float parameter moved by ``N(0, 0.1^2)`` noise: biases
    and batch norm's weight and bias are not left at 0 and 1, where some mistakes would not show."""
    from nnscratch.model.registry import LAYER_KINDS, initial_state

    state = initial_state(spec, rng, init)
    params = {f"{i}.{k}" for i, layer, d_in, _ in spec.walk()
              for k in LAYER_KINDS[layer.kind].param_shapes(layer.args, d_in)}
    return {k: v + rng.normal(scale=0.1, size=v.shape) if k in params else v for k, v in state.items()}


def check_network(spec, x: np.ndarray, y: np.ndarray, state: dict[str, np.ndarray] | None = None, *,
                  label_smoothing: float = 0.0, l1: float = 0.0, l2: float = 0.0,
                  keep: dict[int, np.ndarray] | None = None, h: float = DEFAULT_H,
                  rng: np.random.Generator | None = None, max_entries: int | None = None) -> list[Check]:
    """Every gradient of one training step of ``spec`` against finite differences of its loss.

    The loss is the engine's: softmax cross-entropy of the logits (with ``label_smoothing``) plus
    ``l1 * sum|p| + l2 * sum p^2`` over every parameter, the network in training mode (batch
    norm's batch statistics, dropout with the fixed ``keep`` masks: drawn from ``rng`` when not
    given). Rows, output first: the loss's ``dlogits``, then per layer (last to first) ``dx``
    (the gradient of its input, as its ``backward`` returns it) and each parameter's gradient (with
    the penalty's gradient added, as ``NumpyEngine.train_step`` does). ``state`` defaults to
    :func:`check_state`; ``x (N, input_dim)`` float64, ``y (N,)`` class indices.

    Each entry costs two forward passes, so a large network takes hours entry by entry: with
    ``max_entries``, a tensor with more entries is checked on that many of them, drawn at random
    without replacement (from a generator of their own, seeded by ``rng``), and its row says so.
    """
    from nnscratch.model.registry import LAYER_KINDS
    from nnscratch.numpy_engine.model import Sequential

    rng = rng or np.random.default_rng(0)
    x = np.asarray(x, dtype=np.float64)
    model = Sequential(spec, np.float64)
    model.load_state_dict(check_state(spec, rng) if state is None else state)
    saved = model.state_dict()
    keep = dropout_masks(spec, x.shape[0], rng) if keep is None else keep
    for i, layer in enumerate(model.layers):
        if i in keep:
            layer.set_keep(keep[i])
    loss_fn = SoftmaxCrossEntropy(np.float64, label_smoothing)
    params = model.named_params()
    labels = [f"{i} {LAYER_KINDS[layer.kind].name}" for i, layer in enumerate(spec.layers)]

    inputs, hidden = [], x.copy()
    for layer in model.layers:
        inputs.append(hidden.copy())
        hidden = layer.forward(hidden, train=True)
    logits = hidden.copy()
    _, dz = loss_fn.forward_backward(logits, y)
    dout, dxs = dz.copy(), {}
    checks_dz = dz.copy()
    for i in range(len(model.layers) - 1, -1, -1):
        dx = model.layers[i].backward(dout, need_dx=True)
        dxs[i] = None if dx is None else np.array(dx, dtype=np.float64)
        dout = dx
    grads = {k: v.copy() for k, v in model.named_grads().items()}
    add_penalty_gradient(params, grads, l1, l2)

    def loss_from(i: int, h_in: np.ndarray) -> float:
        for layer in model.layers[i:]:
            h_in = layer.forward(h_in, train=True)
        return loss_fn.forward_backward(h_in, y)[0] + penalty(params, l1, l2)

    sampler = None if max_entries is None else np.random.default_rng(rng.integers(2**63))

    def check(layer: str, name: str, analytic, f: Callable[[], float], x: np.ndarray) -> Check:
        if max_entries is None or x.size <= max_entries or np.shape(analytic) != x.shape:
            return compare(layer, name, analytic, numerical_gradient(f, x, h))
        entries = np.sort(sampler.choice(x.size, size=max_entries, replace=False))
        sample = compare(layer, name, np.asarray(analytic).reshape(-1)[entries], numerical_gradient(f, x, h, entries),
                         f"{max_entries:,} of {x.size:,} entries, at random")
        worst = tuple(int(v) for v in np.unravel_index(int(entries[sample.worst[0]]), x.shape)) if sample.worst else ()
        return replace(sample, shape=tuple(x.shape), worst=worst)

    checks = [check("loss", "dlogits", checks_dz, lambda: loss_from(len(model.layers), logits.copy()), logits)]
    for i in range(len(model.layers) - 1, -1, -1):
        point = inputs[i].copy()
        checks.append(check(labels[i], "dx", dxs[i], lambda: loss_from(i, point.copy()), point))
        for k, p in model.layers[i].params.items():
            checks.append(check(labels[i], k, grads[f"{i}.{k}"], lambda: loss_from(i, inputs[i].copy()), p))
    model.load_state_dict(saved)
    return checks


def compare_with_torch(layer: Layer, module, x: np.ndarray, dout: np.ndarray | None = None, *,
                       name: str | None = None, rng: np.random.Generator | None = None) -> list[Check]:
    """``layer``'s output ``y``, ``dx`` and parameter gradients against torch's autograd on ``module``
    (a ``torch.nn.Module`` given the layer's parameters by name), for ``L = sum(y * dout)``, in
    training mode, float64. Rows are named ``y``, ``dx``, ``weight``...; ``reference`` is torch's."""
    import torch

    _require_float64(layer, x)
    name = name or f"{type(layer).__name__} vs torch"
    rng = rng or np.random.default_rng(0)
    module = module.to(torch.float64).train()
    own = dict(module.named_parameters())
    missing = set(layer.params) - set(own)
    if missing:
        raise ParameterError("module", f"{type(module).__name__} has no parameter(s) {sorted(missing)} of the layer")
    with torch.no_grad():
        for k, p in layer.params.items():
            own[k].copy_(torch.from_numpy(p))
    buffers = {k: v.copy() for k, v in layer.buffers.items()}
    layer.sink = GradientSink(layer.grads)
    y = np.array(layer.forward(x.copy(), True), dtype=np.float64)
    g = rng.normal(size=y.shape) if dout is None else np.asarray(dout, dtype=np.float64)
    dx = layer.backward(g.copy(), need_dx=True)
    dx = None if dx is None else np.array(dx, dtype=np.float64)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = module(xt)
    yt.backward(torch.from_numpy(g))
    checks = [compare(name, "y", y, yt.detach().numpy()), compare(name, "dx", dx, xt.grad.numpy())]
    for k in layer.params:
        grad = own[k].grad
        checks.append(compare(name, k, layer.grads.get(k), np.zeros(own[k].shape) if grad is None else grad.numpy()))
    for k, v in buffers.items():
        layer.buffers[k][...] = v
    return checks


# ----------------------------------------------------------------------------- a layer of your own

#: The two places a file of yours may name the torch module its layer is compared with (docs/gradcheck.md).
TORCH_ATTRIBUTE, TORCH_MODULE_NAME = "torch_module", "TORCH_MODULE"


def load_layer_class(path, class_name: str) -> tuple[type, object]:
    """``(the class, its module)``: ``class_name`` of the Python file ``path``, run in this process.

    The file is imported under a name of its own (``importlib.util.spec_from_file_location``); it
    is your code and runs as it is. A missing file, an import that raises, a missing class or one
    that is not a subclass of :class:`~nnscratch.numpy_engine.layers.Layer` is a one-line
    :class:`~nnscratch.errors.UsageError`.
    """
    import importlib.util
    import sys
    from pathlib import Path

    from nnscratch.errors import UsageError

    path = Path(path)
    if path.suffix != ".py" or not path.is_file():
        problem = "does not exist" if not path.exists() else "is not a .py file"
        raise UsageError(f"{path} {problem}; name a Python file and a class in it, such as "
                         "examples/swish_layer.py:Swish")
    loaded = [m for m in list(sys.modules.values()) if getattr(m, "__file__", None)
              and Path(m.__file__).resolve() == path.resolve()]
    if loaded:  # a module already imported (nnscratch's own layers.py): its classes, not copies of them
        module, name = loaded[0], loaded[0].__name__
    else:
        name = f"nnscratch_user_layer_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look their module up by name
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the user's code: any error is theirs to fix, said in one line
            del sys.modules[name]
            raise UsageError(f"{path} could not be imported: {raised(exc, path)}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        found = sorted(k for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, Layer)
                       and v.__module__ == name)
        raise UsageError(f"{path} has no class {class_name!r}" + (f"; its layers: {', '.join(found)}" if found else ""))
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise UsageError(f"{path}:{class_name} is not a subclass of nnscratch.numpy_engine.layers.Layer "
                         "(the contract in docs/your-own-layer.md)")
    return cls, module


def raised(exc: BaseException, path=None) -> str:
    """``ValueError: message (file.py, line 12)``: an exception of the user's code as one line, at
    the deepest line of ``path`` in its traceback (or the deepest line of all)."""
    import traceback
    from pathlib import Path

    frames = traceback.extract_tb(exc.__traceback__)
    if path is not None:
        mine = [f for f in frames if Path(f.filename).resolve() == Path(path).resolve()]
        frames = mine or frames
    where = f" ({Path(frames[-1].filename).name}, line {frames[-1].lineno})" if frames else ""
    if isinstance(exc, SyntaxError):
        where = f" ({Path(exc.filename or str(path)).name}, line {exc.lineno})"
        message = exc.msg
    else:
        message = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {message}{where}" if message else f"{type(exc).__name__}{where}"


def torch_module_for(cls: type, module, in_features: int):
    """The torch module your file names for ``cls``, built, or None when it names none.

    Looked up as the class attribute ``torch_module``, else the file's ``TORCH_MODULE``: either a
    dotted name of a ``torch.nn`` class built without arguments (``"torch.nn.SiLU"``), or a
    callable ``(in_features) -> torch.nn.Module`` (``lambda d: torch.nn.Linear(d, 3)``). Imports torch.
    """
    import importlib

    from nnscratch.errors import UsageError

    named = getattr(cls, TORCH_ATTRIBUTE, None)
    if named is None:
        named = getattr(module, TORCH_MODULE_NAME, None)
    if named is None:
        return None
    try:
        if isinstance(named, str):
            where, _, attr = named.rpartition(".")
            built = getattr(importlib.import_module(where), attr)()
        else:
            built = named(in_features)
    except Exception as exc:
        raise UsageError(f"the torch module {named!r} named for {cls.__name__} could not be built: "
                         f"{raised(exc)}") from None
    import torch

    if not isinstance(built, torch.nn.Module):
        raise UsageError(f"{cls.__name__}'s torch module {named!r} gave {type(built).__name__}, not a torch.nn.Module")
    return built
