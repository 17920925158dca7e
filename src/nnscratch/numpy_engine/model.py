"""The NumPy model: a list of layers, its forward and backward passes, and one training step."""

from __future__ import annotations

import dataclasses
import inspect

from nnscratch.errors import UsageError

from nnscratch.numpy_engine import layers as layer_classes
from nnscratch.numpy_engine.backend import NUMPY, Backend, backend_for, np
from nnscratch.numpy_engine.layers import GradientSink
from nnscratch.numpy_engine.losses import SoftmaxCrossEntropy
from nnscratch.numpy_engine.optimizers import make_optimizer
from nnscratch.numpy_engine.precision import PRECISIONS, LossScaler, LowPrecisionProducts
from nnscratch.training.gradient_flow import dead_fraction, gradient_stats, layer_stats, update_stats
from nnscratch.training.regularization import MaxNorm, add_penalty_gradient, clip_grad_norm, penalty
from nnscratch.model.spec import ModelSpec


class Sequential:
    """Layers applied in order, numbered and named as ``torch.nn.Sequential`` does.

    ``forward`` runs the layers first to last; ``backward`` runs their ``backward`` last to first,
    each turning ``dL/d(output)`` into ``dL/d(input)`` (the chain rule, one layer at a time).

    ``freeze=N`` holds the first ``N`` dense layers and their batch norm fixed
    (:func:`~nnscratch.model.registry.frozen_layers`): those are a prefix of the network, so
    ``backward`` stops at the first trainable layer, which gets ``need_dx=False``: no weight
    gradient of a frozen layer and no ``dx`` below the first trainable one is ever computed. In a
    training forward pass the layers below the first trainable one run in evaluation mode
    (frozen batch norm uses its running statistics and leaves them alone; nothing keeps what a
    backward pass would need), except dropout, which applies its mask as always.

    The gradient of the *evaluation-mode* network with respect to its input (a saliency map,
    :mod:`nnscratch.analysis.inspect`) is ``forward(x, train=False, keep=True)`` then
    ``backward(dlogits, need_dx=True)``: every layer keeps what its backward needs in evaluation
    mode (batch norm with its running statistics, dropout as the identity) and the first layer's
    ``dx``, which training never computes, is returned. Training's own path is unchanged.

    The caller's input is never written: a dropout layer on the input (``input_dropout``) writes
    into its own buffer, and ``backward`` stops at the first layer with parameters, so the layers
    in front of it (that input dropout) get no backward pass and the first dense layer no ``dx``.
    """

    def __init__(self, spec: ModelSpec, dtype=np.float32, freeze: int = 0, backend: Backend = NUMPY) -> None:
        # imported here: the registry holds this package's layer classes, so it imports them first
        from nnscratch.model.registry import LAYER_KINDS, dead_unit_layers, first_trainable_layer, frozen_layers

        self.spec = spec
        self.dtype = np.dtype(dtype)
        self.backend = backend
        self.layers = [LAYER_KINDS[layer.kind].numpy_class(d_in, dtype=self.dtype, **layer.args)
                       for _, layer, d_in, _ in spec.walk()]
        if backend is not NUMPY:  # built on the host, moved once (Layer.to)
            self.layers = [layer.to(backend) for layer in self.layers]
        self.frozen = frozenset(frozen_layers(spec, freeze))
        self.first_trainable = first_trainable_layer(spec, freeze)
        # whether each layer runs in training mode during a training forward pass (all of them without freezing)
        self._trains = [i >= self.first_trainable or isinstance(layer, layer_classes.Dropout)
                        for i, layer in enumerate(self.layers)]
        self._dead_units = dead_unit_layers(spec)  # the ReLU-family layers (gradient-flow statistics)
        # where backward stops: the first layer at or after first_trainable that has parameters
        self._stop = next((i for i in range(self.first_trainable, len(self.layers)) if self.layers[i].params),
                          self.first_trainable)
        if isinstance(self.layers[0], layer_classes.Dropout):  # the input is the caller's array
            self.layers[0].in_place = False

    def forward(self, x: np.ndarray, train: bool = True, keep: bool | None = None) -> np.ndarray:
        """Logits ``(N, C)`` for inputs ``x (N, D)`` (a reused buffer: valid until the next call).

        ``keep=True`` with ``train=False``: an evaluation pass that :meth:`backward` may follow
        (every layer's ``forward`` must take ``keep``; see the class docstring)."""
        if keep is None:
            for layer, trains in zip(self.layers, self._trains):
                x = layer.forward(x, train and trains)
            return x
        for i, layer in enumerate(self.layers):
            if "keep" not in inspect.signature(layer.forward).parameters:
                raise UsageError(f"layer {i} ({self.spec.layers[i].kind}) cannot keep what its backward needs in "
                                 "evaluation mode: its forward(x, train) takes no keep argument "
                                 "(docs/your-own-layer.md)")
            x = layer.forward(x, train and self._trains[i], keep=keep)
        return x

    def forward_recorded(self, x: np.ndarray, stats: dict, outputs: dict | None = None) -> np.ndarray:
        """:meth:`forward` in training mode, the same numbers, that also puts every layer's output
        statistics into ``stats`` (``{"0": {"kind", "mean", "std"[, "dead_fraction"]}, ...}``, see
        :mod:`nnscratch.training.gradient_flow`) and, given ``outputs`` (a dict), a copy of every
        layer's output (``"0"`` -> ``(N, D)``; copies, since the layers reuse their buffers and a
        ReLU overwrites its input). A ReLU-family layer's dead units are counted on its input
        before it runs (it overwrites its input in place)."""
        host = self.backend.to_host  # the statistics are NumPy code (on the CPU: no copy)
        for i, (layer, trains) in enumerate(zip(self.layers, self._trains)):
            dead = dead_fraction(host(x)) if i in self._dead_units else None
            x = layer.forward(x, trains)
            stats[str(i)] = layer_stats(self.spec.layers[i].kind, host(x), dead)
            if outputs is not None:
                outputs[str(i)] = np.array(host(x))
        return x

    def backward(self, dlogits: np.ndarray, need_dx: bool = False) -> np.ndarray | None:
        """Hand every trainable parameter's gradient to its layer's sink (by default: the layer's ``grads``).

        ``need_dx=True``: also return ``dL/dx (N, D)``, the gradient of the network's input (the
        first layer's ``dx``, which training never computes); not with frozen layers, which keep
        nothing for a backward pass. Without it, backward stops at the first layer with parameters."""
        if need_dx and self.first_trainable:
            raise ValueError("the input gradient runs through every layer: build the model without freeze")
        dout, stop = dlogits, 0 if need_dx else self._stop
        for i in range(len(self.layers) - 1, stop - 1, -1):
            dout = self.layers[i].backward(dout, need_dx=i > stop or need_dx)
        return dout if need_dx else None

    def named_params(self) -> dict[str, np.ndarray]:
        """The live parameter arrays, ``{"0.weight": ..., "0.bias": ..., "2.weight": ...}``."""
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()}

    def named_grads(self) -> dict[str, np.ndarray]:
        """The gradient arrays that the default sinks fill, named as the parameters."""
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.grads.items()}

    def trainable_params(self) -> dict[str, np.ndarray]:
        """:meth:`named_params` less those of the frozen layers (what the optimizer updates)."""
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) if i not in self.frozen
                for k, v in layer.params.items()}

    def trainable_grads(self) -> dict[str, np.ndarray]:
        """:meth:`named_grads` less those of the frozen layers (never filled)."""
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) if i not in self.frozen
                for k, v in layer.grads.items()}

    def named_buffers(self) -> dict[str, np.ndarray]:
        """The live buffers (batch norm's running statistics), ``{"1.running_mean": ...}``."""
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.buffers.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into the parameters and buffers (cast to their dtype); names and shapes must match."""
        own = {**self.named_params(), **self.named_buffers()}
        missing, unexpected = set(own) - set(state), set(state) - set(own)
        if missing or unexpected:
            raise ValueError(f"state does not fit {self.spec.describe()}: missing {sorted(missing)}, "
                             f"unexpected {sorted(unexpected)}")
        for name, p in own.items():
            value = np.asarray(state[name])
            if value.shape != p.shape:
                raise ValueError(f"{name}: shape {value.shape} does not fit {p.shape}")
            p[...] = self.backend.to_device(value)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters and buffers (NumPy arrays), named as torch's ``state_dict()``."""
        return {name: np.array(self.backend.to_host(p)) for name, p in {**self.named_params(),
                                                                        **self.named_buffers()}.items()}


def compiled_optimizer(name: str, params: dict, **hyperparameters):
    """The Numba-compiled twin of optimizer ``name`` (:mod:`nnscratch.numpy_engine.jit`: one pass
    over memory, the NumPy class's numbers bit for bit), or None where Numba cannot be imported."""
    try:
        from nnscratch.numpy_engine.jit import make_jit_optimizer
    except ImportError:
        return None
    return make_jit_optimizer(name, params, **hyperparameters)


def compiled_layer_twins(layers: list, batch_norm: bool = True, relu: bool = False) -> list:
    """``layers`` with their compiled twins (:mod:`nnscratch.numpy_engine.jit`: the same formulas,
    each pass one loop) in place of the NumPy classes: with ``batch_norm`` (the default path) every
    :class:`~nnscratch.numpy_engine.layers.BatchNorm1d`, with ``relu`` (the ``--jit`` experiment)
    every :class:`~nnscratch.numpy_engine.layers.ReLU`. New layers, so call it before loading the
    weights. Where Numba cannot be imported, the layers as they are (``--jit`` needs it: it raises)."""
    try:
        from nnscratch.numpy_engine.jit import JitBatchNorm1d, JitReLU
    except ImportError:
        if relu:
            raise
        return layers
    twins = {}
    if batch_norm:
        twins[layer_classes.BatchNorm1d] = lambda layer: JitBatchNorm1d(layer.in_features, layer.dtype,
                                                                         eps=layer.eps, momentum=layer.momentum)
    if relu:
        twins[layer_classes.ReLU] = lambda layer: JitReLU(dtype=layer.dtype)
    return [twins[type(layer)](layer) if type(layer) in twins else layer for layer in layers]


class NumpyEngine:
    """The hand-written engine behind the engine contract (:class:`nnscratch.engines.Engine`).

    One training step (:meth:`train_step`) is: forward through every layer, the loss and its
    gradient, backward through every layer, the L1/L2 penalty's gradient and gradient clipping if
    asked for, then the optimizer's update, then the max-norm constraint if asked for
    (:class:`~nnscratch.training.regularization.MaxNorm`: every trainable dense layer's rows
    projected to norm at most ``max_norm``). When the optimizer is
    plain SGD (``optimizer.fused``) the update happens *inside* the backward pass instead: every
    layer's :class:`~nnscratch.numpy_engine.layers.GradientSink` points at its parameters with
    ``alpha = -lr, beta = 1`` (same math, one pass over the weights fewer; ``fuse=False`` turns it off).

    ``freeze=N`` holds the first ``N`` dense layers (and their batch norm) fixed (see
    :class:`Sequential`): the optimizer, the L1/L2 penalty, clipping, max-norm and the fused path
    see only the trainable parameters.

    :meth:`train_step_recorded` is the same step that also measures its gradient flow
    (:mod:`nnscratch.training.gradient_flow`); on the fused path it has the layers keep the plain
    gradient as well (``GradientSink.keep``: one more product per parameter), so its weights are
    bit for bit those of :meth:`train_step`.

    ``device``: ``cpu`` (NumPy + SciPy's BLAS) or ``cuda`` (CuPy + cuBLAS): the same layers on
    another :class:`~nnscratch.numpy_engine.backend.Backend`. Batches and dropout masks come from
    the caller as NumPy arrays and are moved here; the losses stay on the device until
    :meth:`take_epoch_stats`.

    ``precision``: ``fp32``, or ``fp16`` / ``bf16`` mixed precision (:mod:`.precision`): float32
    master weights, every dense layer's products rounded to the low format
    (:class:`~nnscratch.numpy_engine.precision.LowPrecisionProducts`) and, for fp16, dynamic loss
    scaling (:class:`~nnscratch.numpy_engine.precision.LossScaler`, torch's ``GradScaler`` rule):
    ``dL/dlogits`` times the scale, the gradients unscaled and checked, a step with a non-finite
    gradient skipped. Mixed precision needs the gradients before the update, so it never fuses.
    """

    name = "numpy"

    def __init__(self, spec: ModelSpec, initial: dict[str, np.ndarray], dtype=np.float32, *,
                 optimizer: str = "sgd", optimizer_options: dict | None = None,
                 label_smoothing: float = 0.0, l1: float = 0.0, l2: float = 0.0,
                 clip_grad_norm: float | None = None, fuse: bool = True, jit: bool = False,
                 freeze: int = 0, max_norm: float | None = None, device: str = "cpu",
                 precision: str = "fp32", compiled_updates: bool = True, compiled_layers: bool = True) -> None:
        from nnscratch.model.registry import dense_layers  # here: the registry imports this package's layers

        if precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision != "fp32" and np.dtype(dtype) != np.float32:
            raise UsageError(f"--precision {precision} keeps float32 master weights: use --dtype float32")
        self.backend = backend_for(device)
        if self.backend.is_gpu and (jit or l1 or l2 or clip_grad_norm is not None or max_norm is not None):
            raise UsageError("--engine numpy --device cuda runs without --jit, --l1, --l2, --clip-grad-norm "
                             "and --max-norm (their code is CPU-only); leave them out or use --device cpu")
        self.precision = precision
        self.model = Sequential(spec, dtype, freeze, self.backend)
        if (compiled_layers or jit) and not self.backend.is_gpu:  # compiled training passes (jit.py)
            self.model.layers = compiled_layer_twins(self.model.layers, batch_norm=compiled_layers, relu=jit)
        self.model.load_state_dict(initial)
        self.loss = SoftmaxCrossEntropy(dtype, label_smoothing, self.backend)
        if precision != "fp32":  # every dense layer's products in the low format (the only products there are)
            products = LowPrecisionProducts(self.backend, precision)
            low = dataclasses.replace(self.backend, gemm=products)
            for layer in self.model.layers:
                layer.backend = low
        self.scaler = LossScaler() if precision == "fp16" else None
        if jit:  # the Numba experiment (see numpy_engine/jit.py): same math, compiled element-wise loops
            from nnscratch.numpy_engine.jit import JitSoftmaxCrossEntropy

            if not label_smoothing:
                self.loss = JitSoftmaxCrossEntropy(dtype)
        self.optimizer = make_optimizer(optimizer, self.model.trainable_params(), **(optimizer_options or {}))
        if not self.optimizer.fused and (jit or compiled_updates) and not self.backend.is_gpu:
            # the update in one compiled pass over memory: the same numbers, bit for bit (jit.py)
            compiled = compiled_optimizer(optimizer, self.model.trainable_params(), **(optimizer_options or {}))
            self.optimizer = compiled or self.optimizer
        self.l1, self.l2, self.clip_grad_norm = l1, l2, clip_grad_norm
        # the fused path is plain SGD on the loss's own gradient: a penalty or clipping needs the gradient first
        self.fused = fuse and self.optimizer.fused and not (l1 or l2 or clip_grad_norm) and precision == "fp32"
        self._sinks: list[GradientSink] = []   # the fused path's sinks, whose alpha is -lr
        self._sink_grads: list[dict[str, np.ndarray]] = []  # their layers' grads (a recorded step keeps dL/dp there)
        self._sink_lr: float | None = None
        self._recording: tuple[dict, dict] | None = None  # the buffers of recorded steps (_recording_buffers)
        if self.fused:
            for i, layer in enumerate(self.model.layers):
                if i in self.model.frozen:
                    continue
                layer.sink = GradientSink(layer.params, alpha=0.0, beta=1.0)
                if layer.params:
                    self._sinks.append(layer.sink)
                    self._sink_grads.append(layer.grads)
        self._grads = self.model.trainable_grads()
        # max-norm acts on the weights after the update, so it keeps the fused path (no gradient needed)
        self._max_norm = None if max_norm is None else MaxNorm(
            [self.model.layers[i].params["weight"] for i in dense_layers(spec) if i not in self.model.frozen],
            max_norm)
        self._dropout = {i: layer for i, layer in enumerate(self.model.layers)
                         if isinstance(layer, layer_classes.Dropout)}
        self.training = True
        self.steps = 0
        self._losses: list = []   # per step: a float64 scalar of the backend (on the GPU it stays there)
        self._correct: list = []  # per step: the correct count, likewise

    # -- modes, as torch.nn.Module has them
    def train(self, mode: bool = True) -> "NumpyEngine":
        self.training = bool(mode)
        return self

    def eval(self) -> "NumpyEngine":
        return self.train(False)

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float,
                   masks: dict[int, np.ndarray] | None = None) -> None:
        """One optimisation step with learning rate ``lr`` on the batch ``x (N, D)``, ``y (N,)``.

        ``masks`` maps each dropout layer's index to its ``keep`` array ``(N, D)`` for this step.
        """
        self._step(x, y, lr, masks, None)

    def train_step_recorded(self, x: np.ndarray, y: np.ndarray, lr: float,
                            masks: dict[int, np.ndarray] | None = None, arrays: bool = False) -> dict:
        """:meth:`train_step`, the same numbers, measuring its gradient flow as it goes:
        ``{"params": {"0.weight": {grad_norm, grad_mean_abs, grad_max_abs, weight_norm,
        update_ratio}, ...}, "layers": {"0": {kind, mean, std[, dead_fraction]}, ...}}`` (the
        trainable parameters only; see :mod:`nnscratch.training.gradient_flow`). With ``arrays``
        also ``"arrays": {"gradients": {"0.weight": copy of the gradient the statistics were taken
        of}, "outputs": {"0": copy of the layer's output}}`` (for histograms)."""
        record: dict = {"params": {}, "layers": {}}
        if arrays:
            record["arrays"] = {"gradients": {}, "outputs": {}}
        self._step(x, y, lr, masks, record)
        return record

    def _step(self, x: np.ndarray, y: np.ndarray, lr: float, masks, record: dict | None) -> None:
        """The step of :meth:`train_step`; with ``record`` (a dict) also :meth:`train_step_recorded`'s figures."""
        if not self.training:
            raise RuntimeError("train_step needs training mode: call engine.train() first")
        if self.backend.is_gpu:  # the loop's host arrays (batch, labels, masks drawn by NumPy) to the device
            x, y = self.backend.to_device(x), self.backend.to_device(y)
            masks = {i: self.backend.to_device(m) for i, m in (masks or {}).items()}
        if self._dropout:
            for i, layer in self._dropout.items():
                layer.set_keep(masks[i])
        if record is None:
            logits = self.model.forward(x, train=True)
        else:
            outputs = record["arrays"]["outputs"] if "arrays" in record else None
            logits = self.model.forward_recorded(x, record["layers"], outputs)
            before, work = self._recording_buffers()
            for name, p in self.optimizer.params.items():
                self.backend.xp.copyto(before[name], p)
        self._correct.append(self.backend.xp.count_nonzero(logits.argmax(axis=1) == y))
        loss, dlogits = self.loss.forward_backward(logits, y)
        if self.scaler is not None:  # backward of (scale * loss): see precision.LossScaler
            dlogits *= self.scaler.scale
        if self.fused:
            if lr != self._sink_lr:
                for sink in self._sinks:
                    sink.alpha = -lr
                self._sink_lr = lr
            if record is None:
                self.model.backward(dlogits)
            else:
                self._backward_keeping_gradients(dlogits)
                self._record_gradients(record, work)
        else:
            self.model.backward(dlogits)
            loss = self.reduce_gradients(loss)  # data-parallel: the global batch's (data_parallel.py); else as is
            found_inf = self.scaler is not None and self.scaler.unscale_and_check(self._grads, self.backend.xp)
            if self.l1 or self.l2:  # loss + l1 sum|p| + l2 sum p^2, before the update
                params = self.optimizer.params
                loss += penalty(params, self.l1, self.l2)
                add_penalty_gradient(params, self._grads, self.l1, self.l2)
            if record is not None:  # the gradient of the training loss, before clipping
                self._record_gradients(record, work)
            if self.clip_grad_norm is not None and not found_inf:
                clip_grad_norm(self._grads, self.clip_grad_norm)
            if not found_inf:  # a step with an overflowed gradient is skipped (GradScaler.step)
                self.optimizer.step(self._grads, lr)
            if self.scaler is not None:
                self.scaler.update(found_inf)
        if self._max_norm is not None:
            self._max_norm.apply()
        if record is not None:
            host = self.backend.to_host
            for name, p in self.optimizer.params.items():
                record["params"][name].update(update_stats(host(before[name]), host(p), host(work[name])))
        self.steps += 1
        self._losses.append(loss)

    def reduce_gradients(self, loss: float) -> float:
        """Between the backward pass and the update: nothing here (returns ``loss``). The
        data-parallel engine (:class:`~nnscratch.numpy_engine.data_parallel.DataParallelNumpyEngine`)
        makes the gradients, the loss and the correct count the global batch's here."""
        return loss

    def _record_gradients(self, record: dict, work: dict[str, np.ndarray]) -> None:
        """The gradient statistics of a recorded step (and, when it keeps arrays, copies of the gradients)."""
        host = self.backend.to_host
        record["params"] = {name: gradient_stats(host(g), host(work[name])) for name, g in self._grads.items()}
        if "arrays" in record:
            record["arrays"]["gradients"] = {name: np.array(host(g)) for name, g in self._grads.items()}

    def _recording_buffers(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Per trainable parameter: an array for its value before a recorded step and a scratch
        array for the statistics; made at the first recorded step, then reused."""
        if self._recording is None:
            params = self.optimizer.params
            xp = self.backend.xp
            self._recording = ({n: xp.empty_like(p) for n, p in params.items()},
                               {n: xp.empty_like(p) for n, p in params.items()})
        return self._recording

    def _backward_keeping_gradients(self, dlogits: np.ndarray) -> None:
        """The fused backward pass (the update inside the products, as always), with every
        trainable layer's plain gradient kept in its ``grads`` too (``GradientSink.keep``)."""
        for sink, grads in zip(self._sinks, self._sink_grads):
            sink.keep = grads
        try:
            self.model.backward(dlogits)
        finally:
            for sink in self._sinks:
                sink.keep = None

    def take_epoch_stats(self) -> tuple[np.ndarray, int]:
        """``(losses of the steps since the last call, correct training predictions among them)``:
        the one read from the device (on the GPU) for all those steps."""
        if self.backend.is_gpu and self._losses:
            xp = self.backend.xp
            losses = self.backend.to_host(xp.stack(self._losses)).astype(np.float64)
            correct = int(self.backend.to_host(xp.stack(self._correct).sum()))
        else:
            losses, correct = np.array(self._losses, dtype=np.float64), int(sum(self._correct))
        self._losses, self._correct = [], []
        return losses, correct

    def take_precision_stats(self) -> dict | None:
        """``{"loss_scale": S, "skipped_steps": steps skipped since the last call}`` under fp16
        loss scaling (bf16: the scale is 1 and nothing is skipped); None in fp32."""
        if self.precision == "fp32":
            return None
        if self.scaler is None:
            return {"loss_scale": 1.0, "skipped_steps": 0}
        return {"loss_scale": float(self.scaler.scale), "skipped_steps": self.scaler.take_skipped()}

    def predict_logits(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Logits for every row of ``x``, in evaluation mode (running statistics, no dropout)."""
        out = np.empty((x.shape[0], self.model.spec.num_classes), dtype=self.model.dtype)
        backend = self.backend
        for start in range(0, x.shape[0], batch_size):
            chunk = backend.to_device(x[start:start + batch_size])
            out[start:start + batch_size] = backend.to_host(self.model.forward(chunk, train=False))
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        """The model's parameters and buffers (what a model file holds)."""
        return self.model.state_dict()

    def state(self) -> dict[str, np.ndarray]:
        """Everything training needs to resume exactly: the model, ``optimizer.*``, ``engine.steps``."""
        scaler = self.scaler.state() if self.scaler is not None else {}
        return {**self.model.state_dict(), **{f"optimizer.{k}": v for k, v in self.optimizer.state().items()},
                "engine.steps": np.array(self.steps, dtype=np.int64), **scaler}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """The inverse of :meth:`state`."""
        model = {k: v for k, v in state.items() if not k.startswith(("optimizer.", "engine."))}
        optimizer = {k[len("optimizer."):]: v for k, v in state.items() if k.startswith("optimizer.")}
        steps = int(state.get("engine.steps", 0))
        opt = self.optimizer
        if steps and not optimizer and not self.fused and (opt._state_keys() or opt._has_step_state):
            raise ValueError(f"the state is at step {steps} but holds no {opt.torch_class} state")
        self.model.load_state_dict(model)
        self.optimizer.load_state(optimizer)
        if self.scaler is not None:
            self.scaler.load_state(state)
        self.steps = steps
        if self.optimizer.steps:  # the optimizer has stepped once per engine step (SGD's state has no count)
            self.optimizer.steps = self.steps
