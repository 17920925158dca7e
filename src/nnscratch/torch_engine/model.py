"""The twin: the same spec as an ``nn.Sequential`` of torch's own modules, trained by torch's autograd.

Nothing here is hand-written math: the point of the twin is that torch computes everything
itself, from the same initial weights, the same batches and the same dropout masks as the NumPy
engine. The one exception is dropout's *randomness*: torch's random stream cannot be reproduced in
NumPy, so in a comparison the masks come from the training loop and :class:`SharedMaskDropout`
applies ``nn.Dropout``'s formula with them (``tests/test_layers.py`` shows that, given the units
``nn.Dropout`` kept, that formula gives exactly its output).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nnscratch.errors import ParameterError, UsageError
from nnscratch.model.registry import INTEGER_BUFFERS, LAYER_KINDS
from nnscratch.model.spec import ModelSpec
from nnscratch.numpy_engine.optimizers import OPTIMIZERS
from nnscratch.training.gradient_flow import dead_fraction, gradient_stats, layer_stats, update_stats

_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}
#: ``--precision`` -> the dtype of torch.autocast (None: no autocast).
_AUTOCAST_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def _host(t: torch.Tensor) -> np.ndarray:
    """A tensor's values as a NumPy array (a view of CPU memory: copy it to keep it). Autocast's
    float16/bfloat16 activations come as float32 (NumPy has no bfloat16)."""
    t = t.detach()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return t.cpu().numpy()


class SharedMaskDropout(nn.Module):
    """``nn.Dropout(p)`` with the mask handed in: ``y = x * keep / (1 - p)`` in training, ``x`` in eval."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.mask: torch.Tensor | None = None

    def set_keep(self, keep: torch.Tensor, dtype: torch.dtype) -> None:
        self.mask = keep.to(dtype).div_(1.0 - self.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * self.mask

    def extra_repr(self) -> str:
        return f"p={self.p}, mask from the training loop"


def build_twin(spec: ModelSpec, shared_masks: bool = False) -> nn.Sequential:
    """``nn.Sequential`` of torch's own modules for ``spec``; state names match the NumPy model's.

    With ``shared_masks`` dropout layers are :class:`SharedMaskDropout` (masks from the loop).
    """
    modules = []
    for _, layer, d_in, _ in spec.walk():
        if layer.kind == "dropout" and shared_masks:
            modules.append(SharedMaskDropout(layer.args["p"]))
        else:
            modules.append(LAYER_KINDS[layer.kind].torch_module(layer.args, d_in))
    return nn.Sequential(*modules)


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is a usage error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is visible to torch here; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


class TorchEngine:
    """The twin behind the engine contract (:class:`nnscratch.engines.Engine`).

    Given its best shot on the CPU: losses and correct counts are accumulated on the device and
    read once per epoch (no per-step ``.item()``), evaluation runs under ``torch.inference_mode``,
    SGD uses torch's ``foreach`` implementation.

    ``freeze=N``: the twin of the NumPy engine's freezing, in torch's usual way. The frozen
    layers' parameters get ``requires_grad_(False)`` (autograd then computes no gradient for them,
    nor anything below the first trainable layer), the optimizer, the L1/L2 penalty and clipping
    get the trainable parameters only, and the frozen modules stay in evaluation mode whatever
    :meth:`train` is asked (frozen batch norm uses its running statistics and leaves them alone).

    :meth:`train_step_recorded` is the same step that also measures its gradient flow from
    autograd's ``.grad`` and the modules' outputs (:mod:`nnscratch.training.gradient_flow`).

    ``max_norm=C``: after every ``optimizer.step()`` each trainable ``nn.Linear``'s weight goes
    through torch's own ``weight.renorm_(p=2, dim=0, maxnorm=C)`` (rows, i.e. each unit's incoming
    weights, with norm over ``C`` scaled to ``C / (norm + 1e-7)`` times themselves), the twin of
    :class:`nnscratch.training.regularization.MaxNorm`.

    ``precision="fp16"|"bf16"``: torch's own mixed precision: the forward pass and the loss under
    ``torch.autocast(dtype=float16/bfloat16)`` (float32 master weights), and for fp16 a
    ``torch.amp.GradScaler`` with its defaults (``scale(loss).backward()``, ``unscale_`` before
    clipping and the gradient statistics, ``step``, ``update``). Whether a step was skipped is read
    from the scale (it only falls on a skipped step): one read of the scale per step.
    """

    name = "torch"

    def __init__(self, spec: ModelSpec, initial: dict[str, np.ndarray], dtype=np.float32, *,
                 device: str = "cpu", compile: bool = False, optimizer: str = "sgd",
                 optimizer_options: dict | None = None, label_smoothing: float = 0.0,
                 l1: float = 0.0, l2: float = 0.0, clip_grad_norm: float | None = None,
                 shared_masks: bool = True, freeze: int = 0, max_norm: float | None = None,
                 precision: str = "fp32") -> None:
        from nnscratch.model.registry import dead_unit_layers, dense_layers, frozen_layers

        self.device = resolve_device(device)
        self.dtype = _TORCH_DTYPES[np.dtype(dtype)]
        self.model = build_twin(spec, shared_masks).to(device=self.device, dtype=self.dtype)
        self.load_state_dict(initial)
        self._frozen = [self.model[i] for i in frozen_layers(spec, freeze)]
        for module in self._frozen:
            module.requires_grad_(False)
            module.eval()
        self._trainable = [p for p in self.model.parameters() if p.requires_grad]
        self._named_trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self._kinds = [layer.kind for layer in spec.layers]
        self._dead_units = dead_unit_layers(spec)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        if optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        options = dict(optimizer_options or {})
        if optimizer == "sgd":
            options.setdefault("foreach", True)  # torch's fastest SGD on the CPU
        # the twin of our class of that name (SGD, Adam, AdamW, RMSprop): the list of optimizers is ours
        torch_class = getattr(torch.optim, OPTIMIZERS[optimizer].torch_class)
        self.optimizer = torch_class(self._trainable, lr=0.0, **options)
        self.l1, self.l2, self.clip_grad_norm = l1, l2, clip_grad_norm
        if max_norm is not None and not 0.0 < max_norm < float("inf"):
            raise ParameterError("max_norm", f"must be a finite number > 0, got {max_norm}")
        self.max_norm = max_norm
        frozen = set(frozen_layers(spec, freeze))
        self._max_norm_weights = [self.model[i].weight for i in dense_layers(spec) if i not in frozen]
        self._forward = torch.compile(self.model) if compile else self.model
        self._shared = {i: m for i, m in enumerate(self.model) if isinstance(m, SharedMaskDropout)}
        if precision not in _AUTOCAST_DTYPES:
            raise UsageError(f"--precision must be one of {', '.join(_AUTOCAST_DTYPES)}, got {precision!r}")
        if precision != "fp32" and self.dtype != torch.float32:
            raise UsageError(f"--precision {precision} keeps float32 master weights: use --dtype float32")
        self.precision = precision
        self._autocast = _AUTOCAST_DTYPES[precision]
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self._scale_seen = self.scaler.get_scale() if self.scaler is not None else 1.0
        self._skipped = 0
        self.steps = 0
        self._losses: list[torch.Tensor] = []
        self._correct = torch.zeros((), dtype=torch.int64, device=self.device)

    @property
    def training(self) -> bool:
        return self.model.training

    def train(self, mode: bool = True) -> "TorchEngine":
        self.model.train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def eval(self) -> "TorchEngine":
        return self.train(False)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(self.device, non_blocking=True)

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float,
                   masks: dict[int, np.ndarray] | None = None) -> None:
        self._step(x, y, lr, masks, None)

    def train_step_recorded(self, x: np.ndarray, y: np.ndarray, lr: float,
                            masks: dict[int, np.ndarray] | None = None, arrays: bool = False) -> dict:
        """:meth:`train_step`, the same numbers, also measuring its gradient flow (the NumPy
        engine's ``train_step_recorded``, from ``.grad`` after ``backward()`` and before
        clipping, and from each module's output; the modules run one by one, as
        ``nn.Sequential`` runs them, never compiled). ``arrays``: also copies of those
        gradients and outputs, under ``"arrays"`` (as the NumPy engine gives them)."""
        record: dict = {"params": {}, "layers": {}}
        if arrays:
            record["arrays"] = {"gradients": {}, "outputs": {}}
        self._step(x, y, lr, masks, record)
        return record

    def _forward_recorded(self, xb: torch.Tensor, stats: dict, outputs: dict | None) -> torch.Tensor:
        h = xb
        for i, module in enumerate(self.model):
            dead = dead_fraction(_host(h)) if i in self._dead_units else None
            h = module(h)
            stats[str(i)] = layer_stats(self._kinds[i], _host(h), dead)
            if outputs is not None:
                outputs[str(i)] = _host(h).copy()
        return h

    def _step(self, x: np.ndarray, y: np.ndarray, lr: float, masks, record: dict | None) -> None:
        if not self.model.training:
            raise RuntimeError("train_step needs training mode: call engine.train() first")
        for i, module in self._shared.items():
            module.set_keep(self._tensor(masks[i]), self.dtype)
        xb, yb = self._tensor(x), self._tensor(y)
        self.optimizer.param_groups[0]["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self._autocast, enabled=self._autocast is not None):
            if record is None:
                logits = self._forward(xb)
            else:
                logits = self._forward_recorded(xb, record["layers"], record["arrays"]["outputs"]
                                                if "arrays" in record else None)
            loss = self.loss_fn(logits, yb)
        if self.l1 or self.l2:  # the same penalty as the NumPy engine's, over every trainable parameter
            params = self._trainable
            if self.l1:
                loss = loss + self.l1 * sum(p.abs().sum() for p in params)
            if self.l2:
                loss = loss + self.l2 * sum(p.pow(2).sum() for p in params)
        if self.scaler is None:
            loss.backward()
        else:  # GradScaler: backward of scale * loss, then the true gradients back before anyone reads them
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        if record is not None:  # the gradient of the training loss, before clipping; the weights before the step
            record["params"] = {n: gradient_stats(_host(p.grad)) for n, p in self._named_trainable}
            if "arrays" in record:
                record["arrays"]["gradients"] = {n: _host(p.grad).copy() for n, p in self._named_trainable}
            before = {n: _host(p).copy() for n, p in self._named_trainable}
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self._trainable, self.clip_grad_norm)
        if self.scaler is None:
            self.optimizer.step()
        else:  # skipped when a gradient is not finite; the scale halves then, and grows after 2000 clean steps
            self.scaler.step(self.optimizer)
            self.scaler.update()
            scale = self.scaler.get_scale()
            self._skipped += scale < self._scale_seen
            self._scale_seen = scale
        if self.max_norm is not None:
            with torch.no_grad():
                for weight in self._max_norm_weights:
                    weight.renorm_(2, 0, self.max_norm)
        if record is not None:
            for n, p in self._named_trainable:
                record["params"][n].update(update_stats(before[n], _host(p)))
        self.steps += 1
        with torch.no_grad():
            self._losses.append(loss.detach())
            self._correct += (logits.argmax(dim=1) == yb).sum()

    def take_epoch_stats(self) -> tuple[np.ndarray, int]:
        losses = torch.stack(self._losses).double().cpu().numpy() if self._losses else np.zeros(0)
        correct = int(self._correct.item())
        self._losses = []
        self._correct.zero_()
        return losses, correct

    def take_precision_stats(self) -> dict | None:
        """``{"loss_scale", "skipped_steps" since the last call}`` under mixed precision, else None
        (the NumPy engine's :meth:`~nnscratch.numpy_engine.model.NumpyEngine.take_precision_stats`)."""
        if self.precision == "fp32":
            return None
        skipped, self._skipped = self._skipped, 0
        return {"loss_scale": float(self._scale_seen), "skipped_steps": int(skipped)}

    @torch.inference_mode()
    def predict_logits(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Logits for every row of ``x``, in evaluation mode (running statistics, no dropout)."""
        mode = self.model.training
        self.model.eval()
        chunks = [self.model(self._tensor(x[s:s + batch_size])).cpu() for s in range(0, len(x), batch_size)]
        self.train(mode)
        return torch.cat(chunks).numpy()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        tensors = {}
        for k, v in state.items():
            t = torch.from_numpy(np.array(v))
            tensors[k] = t if k.rsplit(".", 1)[-1] in INTEGER_BUFFERS else t.to(self.dtype)
        self.model.load_state_dict(tensors)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()}

    def state(self) -> dict[str, np.ndarray]:
        """Model parameters and buffers, ``optimizer.*`` (torch's state, NumPy names) and ``engine.steps``."""
        names = dict(zip((id(p) for p in self.model.parameters()), (n for n, _ in self.model.named_parameters())))
        opt = {f"optimizer.{names[id(p)]}.{key}": value.detach().cpu().numpy().copy()
               for p, st in self.optimizer.state.items() for key, value in st.items() if torch.is_tensor(value)}
        scaler = {} if self.scaler is None else {  # the NumPy engine's names (precision.LossScaler.state)
            "engine.loss_scale": np.array(self.scaler.get_scale(), dtype=np.float32),
            "engine.growth_tracker": np.array(self.scaler.state_dict()["_growth_tracker"], dtype=np.int64)}
        return {**self.state_dict(), **opt, "engine.steps": np.array(self.steps, dtype=np.int64), **scaler}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.load_state_dict({k: v for k, v in state.items() if not k.startswith(("optimizer.", "engine."))})
        params = dict(self.model.named_parameters())
        steps = int(state.get("engine.steps", 0))
        stateless = isinstance(self.optimizer, torch.optim.SGD) and not self.optimizer.defaults.get("momentum")
        if steps and not stateless and not any(k.startswith("optimizer.") for k in state):
            raise ValueError(f"the state is at step {steps} but holds no {type(self.optimizer).__name__} state")
        self.optimizer.state.clear()  # what is not in ``state`` must not survive from before
        for key, value in state.items():
            if key.startswith("optimizer."):
                pname, sname = key[len("optimizer."):].rsplit(".", 1)
                self.optimizer.state[params[pname]][sname] = torch.from_numpy(np.array(value)).to(self.device)
        self.steps = int(state.get("engine.steps", 0))
        if self.scaler is not None and "engine.loss_scale" in state:
            self.scaler.load_state_dict({**self.scaler.state_dict(),
                                         "scale": float(np.asarray(state["engine.loss_scale"])),
                                         "_growth_tracker": int(np.asarray(state["engine.growth_tracker"]))})
            self._scale_seen = self.scaler.get_scale()
