"""One training step of a (tiny) network, every number of it, each with the formula that gave it.

:func:`trace_step` runs the NumPy engine's own objects (a :class:`~nnscratch.numpy_engine.model.NumpyEngine`
without the fused SGD path, so every ``dW`` is formed): each layer's ``forward`` and ``backward``,
the loss's ``forward_backward`` and the optimizer's ``step``, exactly in the order
``NumpyEngine.train_step`` calls them, and keeps a copy of what each one gave. With torch installed
it runs the twin too (torch's modules, loss and optimizer, autograd) and keeps torch's value beside
every gradient and every new weight. :func:`render` writes the trace as text or Markdown (a handout).

The formulas are those of the layers', loss's and optimizer's docstrings (``tests/test_gradcheck.py``
checks that each one appears there, word for word).
"""

from __future__ import annotations

import numpy as np

#: Forward formula of each layer kind (``y`` its output, ``x`` its input), as its docstring states it.
FORWARD = {"dense": "y = x @ W.T + b", "relu": "y = x * (x > 0)", "leaky_relu": "y = x if x > 0 else a * x",
           "elu": "y = x if x > 0 else a * (exp(x) - 1)", "gelu": "y = x * Phi(x)", "gelu_tanh": "y = x * (1 + t) / 2",
           "tanh": "y = tanh(x)", "sigmoid": "y = 1 / (1 + exp(-x))"}
#: Backward formula of ``dx`` of each layer kind (``dout = dL/dy``), as its docstring states it.
BACKWARD = {"dense": "dx = dout @ W", "relu": "dx = dout * (x > 0)", "leaky_relu": "dx = dout * (1 if x > 0 else a)",
            "elu": "dx = dout * (1 if x > 0 else a * exp(x))", "gelu": "dx = dout * (Phi(x) + x * phi(x))",
            "gelu_tanh": "dx = dout * ((1 + t) / 2 + x * (1 - t^2) / 2 * sqrt(2/pi) * (1 + 3 * 0.044715 x^2))",
            "tanh": "dx = dout * (1 - y^2)", "sigmoid": "dx = dout * y * (1 - y)"}
#: Each parameter's gradient: ``(its short name, formula)``, per layer kind.
PARAMETER_GRADIENTS = {"dense": {"weight": ("dW", "dW = dout.T @ x"), "bias": ("db", "db = dout.sum(0)")}}
LOSS = "L = (1/N) sum_i (lse_i - z_{i, y_i})"
LOSS_GRADIENT = "dL/dz = (softmax(z) - onehot(y)) / N"
#: The update of each optimizer, from its docstring (``γ`` the learning rate, ``g_t`` the gradient).
UPDATE = {"sgd": "θ_t <- θ_{t-1} - γ g_t",
          "adam": "θ_t <- θ_{t-1} - (γ / (1 - β1^t)) m_t / (sqrt(v) / sqrt(1 - β2^t) + ε)",
          "adamw": "θ_t <- θ_{t-1} - γ λ θ_{t-1}; θ_t <- θ_t - (γ / (1 - β1^t)) m_t / (sqrt(v) / sqrt(1 - β2^t) + ε)",
          "rmsprop": "θ_t <- θ_{t-1} - γ g_t / (sqrt(ṽ_t) + ε)"}
#: Largest difference from torch that is still "the same number" (float64 rounding, a few ulps).
SAME = 1e-12


def formula_key(layer) -> str:
    """The key of :data:`FORWARD` for a :class:`~nnscratch.model.spec.LayerSpec` (``gelu_tanh`` for tanh GELU)."""
    if layer.kind == "gelu" and layer.args.get("approximate") == "tanh":
        return "gelu_tanh"
    return layer.kind


def trace_step(spec, state: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, lr: float,
               optimizer: str = "sgd", with_torch: bool = True) -> dict:
    """Every number of one training step of ``spec`` from ``state`` on the batch ``x, y``, float64.

    Returns plain data (JSON-able): ``x``, ``y``, ``forward`` (per layer: formula, parameters,
    output), ``loss``, ``backward`` (``dlogits``, then per layer, last first: ``dout``, each
    parameter's gradient, ``dx``) and ``update`` (per parameter: before, gradient, after); with
    torch installed (and ``with_torch``), ``"torch"`` and ``"max_diff"`` beside every gradient, the
    loss and every new weight. ``dx`` of the first layer is computed too (training skips it).
    """
    from nnscratch.numpy_engine.model import NumpyEngine

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
    engine = NumpyEngine(spec, state, np.float64, optimizer=optimizer, fuse=False)
    layers, kinds = engine.model.layers, [formula_key(layer) for layer in spec.layers]
    trace: dict = {"model": spec.describe(), "optimizer": optimizer, "lr": lr, "x": x.tolist(), "y": y.tolist(),
                   "forward": [], "backward": []}
    h = x.copy()
    for i, layer in enumerate(layers):
        record = {"layer": i, "kind": kinds[i], "formula": FORWARD[kinds[i]],
                  "params": {k: p.tolist() for k, p in layer.params.items()}}
        h = layer.forward(h, train=True)
        record["output"] = h.tolist()
        trace["forward"].append(record)
    loss, dout = engine.loss.forward_backward(h, y)
    trace["loss"] = {"formula": LOSS, "value": loss}
    trace["backward"].append({"layer": "loss", "kind": "softmax cross-entropy",
                              "entries": [_entry("dL/dz", LOSS_GRADIENT, dout)]})
    for i in range(len(layers) - 1, -1, -1):
        entries = [_entry("dout", "dout = dL/dy (the gradient the layer above gave)", dout)]
        dx = layers[i].backward(dout, need_dx=True)
        for k, (short, formula) in PARAMETER_GRADIENTS.get(spec.layers[i].kind, {}).items():
            if k in layers[i].grads:
                entries.append(_entry(short, formula, layers[i].grads[k], param=f"{i}.{k}"))
        entries.append(_entry("dx", BACKWARD[kinds[i]], dx))
        trace["backward"].append({"layer": i, "kind": kinds[i], "entries": entries})
        dout = dx
    before = {k: p.copy() for k, p in engine.model.named_params().items()}
    grads = {k: g.copy() for k, g in engine.model.named_grads().items()}
    engine.optimizer.step(engine.model.named_grads(), lr)
    trace["update"] = {"formula": UPDATE[optimizer], "params": {
        k: {"before": before[k].tolist(), "gradient": grads[k].tolist(), "after": p.tolist()}
        for k, p in engine.model.named_params().items()}}
    if with_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            trace["torch"] = None
        else:
            _beside_torch(trace, spec, state, x, y, lr, optimizer)
    return trace


def _entry(name: str, formula: str, value: np.ndarray, param: str | None = None) -> dict:
    entry = {"name": name, "formula": formula, "value": np.array(value, dtype=np.float64).tolist()}
    if param:
        entry["param"] = param
    return entry


def _beside_torch(trace: dict, spec, state, x, y, lr: float, optimizer: str) -> None:
    """Torch's autograd on the twin: its value and the largest difference beside each number of ``trace``."""
    import torch

    from nnscratch.numpy_engine.optimizers import OPTIMIZERS
    from nnscratch.torch_engine import build_twin

    twin = build_twin(spec).to(torch.float64).train()
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    h = torch.from_numpy(x.copy()).requires_grad_(True)
    ins, outs = [], []
    for module in twin:
        ins.append(h)
        h = module(h)
        h.retain_grad()
        outs.append(h)
    loss = torch.nn.CrossEntropyLoss()(h, torch.from_numpy(y))
    loss.backward()
    params = dict(twin.named_parameters())
    grads = {k: p.grad.numpy().copy() for k, p in params.items()}
    torch_class = getattr(torch.optim, OPTIMIZERS[optimizer].torch_class)
    torch_class(twin.parameters(), lr=lr, foreach=False).step()
    trace["torch"] = {"version": torch.__version__}
    _beside(trace["loss"], "value", loss.item())
    for block in trace["backward"]:
        for e in block["entries"]:
            if block["layer"] == "loss":
                ref = outs[-1].grad
            elif e["name"] == "dout":
                ref = outs[block["layer"]].grad
            elif e["name"] == "dx":
                ref = ins[block["layer"]].grad
            else:
                ref = torch.from_numpy(grads[e["param"]])
            _beside(e, "value", ref.detach().numpy())
    for k, record in trace["update"]["params"].items():
        _beside(record, "after", params[k].detach().numpy())


def _beside(record: dict, key: str, reference) -> None:
    ref = np.asarray(reference, dtype=np.float64)
    record["torch"] = ref.tolist()
    record["max_diff"] = float(np.max(np.abs(np.asarray(record[key], dtype=np.float64) - ref))) if ref.size else 0.0


# ----------------------------------------------------------------------------- writing it out

def _numbers(a) -> str:
    a = np.asarray(a, dtype=np.float64) + 0.0  # + 0.0: a ReLU's -0.0 (x * 0 for x < 0) prints as 0
    if a.ndim == 0:
        return f"{float(a):.6f}"
    return np.array2string(a, precision=6, floatmode="fixed", suppress_small=False, max_line_width=100,
                           threshold=10_000)


def _torch_note(record: dict) -> str:
    if "max_diff" not in record:
        return ""
    mark = "✓" if record["max_diff"] <= SAME else "✗"
    return f"torch autograd {mark} (max |diff| {record['max_diff']:.1e})"


def render(trace: dict, markdown: bool = False) -> str:
    """The trace as text (``nnscratch step``) or as a Markdown handout (``--markdown``)."""
    out: list[str] = []

    def head(text: str) -> None:
        out.append(f"\n## {text}\n" if markdown else f"\n== {text}")

    def block(label: str, value, note: str = "", torch_value=None) -> None:
        shape = "x".join(map(str, np.shape(value))) or "scalar"
        out.append(f"{'**' if markdown else ''}{label}{'**' if markdown else ''}  ({shape})"
                   + (f"  {note}" if note else ""))
        body = _numbers(value)
        if torch_value is not None:  # torch's numbers beside ours, line by line
            ours, theirs = body.splitlines(), _numbers(torch_value).splitlines()
            width = max(len(line) for line in ours)
            body = "\n".join(f"{a.ljust(width)}   | torch: {b}" if k == 0 else f"{a.ljust(width)}   |        {b}"
                              for k, (a, b) in enumerate(zip(ours, theirs)))
        out.append(f"```\n{body}\n```" if markdown else "\n".join("    " + line for line in body.splitlines()))

    title = f"One training step of {trace['model']}: {trace['optimizer']}, lr {trace['lr']:g}, batch {len(trace['y'])}, float64"
    out.append(f"# {title}" if markdown else title)
    if trace.get("torch") is None:
        out.append("(torch is not installed: no autograd column)")
    else:
        out.append(f"Beside every gradient: torch {trace['torch']['version']} autograd on the twin, ✓ when "
                   f"within {SAME:g}.")
    head("Inputs")
    block("x", trace["x"])
    out.append(f"labels y = {trace['y']}")
    head("Forward")
    for r in trace["forward"]:
        out.append(f"layer {r['layer']} {r['kind']}: `{r['formula']}`" if markdown else
                   f"layer {r['layer']} {r['kind']}:  {r['formula']}")
        for k, p in r["params"].items():
            block(f"{k}", p)
        block("y", r["output"])
    loss = trace["loss"]
    head("Loss")
    out.append(f"`{loss['formula']}` = {loss['value']:.10f}" if markdown else f"{loss['formula']} = {loss['value']:.10f}")
    if "torch" in loss:
        out.append(f"torch: {loss['torch']:.10f}  {_torch_note(loss)}")
    head("Backward (last layer first)")
    for b in trace["backward"]:
        out.append(f"layer {b['layer']} {b['kind']}" if b["layer"] != "loss" else "loss (softmax cross-entropy)")
        for e in b["entries"]:
            label = f"{e['name']}: `{e['formula']}`" if markdown else f"{e['name']}:  {e['formula']}"
            block(label, e["value"], _torch_note(e), e.get("torch"))
    head(f"Update ({trace['optimizer']}, lr {trace['lr']:g})")
    out.append(f"`{trace['update']['formula']}`" if markdown else trace["update"]["formula"])
    for k, r in trace["update"]["params"].items():
        block(f"{k} before", r["before"])
        block(f"{k} gradient", r["gradient"])
        block(f"{k} after", r["after"], _torch_note(r), r.get("torch"))
    return "\n".join(out).lstrip("\n") + "\n"
