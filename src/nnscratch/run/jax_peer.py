"""A JAX peer for ``nnscratch bench``: the same network and training step, under ``jax.jit``.

Users who want speed from Python also reach for JAX, so the benchmark measures it beside ours,
PyTorch's and scikit-learn's. It is a **benchmark peer only**: nothing else in nnscratch imports
it, and it needs ``jax`` (``pip install 'nnscratch[bench]'``).

What it trains is what our engine trains for the same spec (:mod:`nnscratch.model.spec`) and
options, from the same initial weights (:func:`~nnscratch.model.registry.initial_state`), on the
same uint8 pixels scaled per batch, in the same batches (one permutation per epoch):

* layers ``dense`` (``x W^T + b``, torch's layout), ``relu``, ``leaky_relu``, ``elu``, ``gelu``
  (exact or tanh), ``tanh``, ``sigmoid``, ``dropout`` (inverted, its masks from JAX's own generator
  inside the step, as torch's twin in the benchmark uses its own ``nn.Dropout``) and
  ``batch_norm`` (batch statistics in training, running averages updated with torch's
  ``momentum`` and unbiased variance);
* softmax cross-entropy with torch's label smoothing, mean over the batch;
* SGD with momentum, dampening, Nesterov and L2 weight decay as ``torch.optim.SGD``; Adam and AdamW
  as torch's (no amsgrad).

The whole step (forward, ``jax.grad``, update) is one jitted function; the batch is cut from the
device-resident epoch permutation inside it (``lax.dynamic_slice``), so a step moves nothing
between host and device but its step number. The parameters are donated, so XLA updates them in
place. The first epoch compiles (two shapes: the full batch and the last, shorter one); the
benchmark excludes it and reports its time separately.

Threads: XLA's CPU backend sizes its pool when JAX is first imported. :func:`configure_threads`
sets ``XLA_FLAGS`` for ``threads`` before that import (``intra_op_parallelism_threads``); once
JAX is imported it can no longer change, and :func:`make_jax_runner` says so.
"""

from __future__ import annotations

import os
import time

import numpy as np

from nnscratch.errors import UsageError

INSTALL_JAX = "pip install 'nnscratch[bench]' (or pip install jax)"
#: Layer kinds the peer builds.
KINDS = ("dense", "relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid", "dropout", "batch_norm")
#: Optimizers the peer updates with.
OPTIMIZERS = ("sgd", "adam", "adamw")

_threads_set: int | None = None


def configure_threads(threads: int) -> bool:
    """Ask XLA for ``threads`` CPU threads; True when it could still be done (JAX not imported yet)."""
    global _threads_set
    import sys

    if "jax" in sys.modules:
        return _threads_set == threads
    flags = os.environ.get("XLA_FLAGS", "")
    flags = " ".join(f for f in flags.split() if not f.startswith(("--xla_cpu_multi_thread_eigen",
                                                                     "intra_op_parallelism_threads")))
    os.environ["XLA_FLAGS"] = (flags + f" --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
                               f" intra_op_parallelism_threads={threads}").strip()
    _threads_set = threads
    return True


def _import_jax():
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        raise UsageError(f"the JAX peer needs jax: {INSTALL_JAX}") from None
    return jax, jnp


def unsupported(spec, options: dict) -> str | None:
    """Why the peer cannot train ``spec`` with ``options`` (the engine options of a config), or None."""
    kinds = sorted({layer.kind for layer in spec.layers} - set(KINDS))
    if kinds:
        return f"the JAX peer has no {', '.join(kinds)} layer"
    optimizer = options.get("optimizer", "sgd")
    if optimizer not in OPTIMIZERS:
        return f"the JAX peer has no {optimizer} optimizer"
    if options.get("optimizer_options", {}).get("amsgrad"):
        return "the JAX peer has no amsgrad"
    for key in ("l1", "l2", "clip_grad_norm", "max_norm"):
        if options.get(key):
            return f"the JAX peer has no {key.replace('_', ' ')}"
    return None


def build_step(spec, initial: dict[str, np.ndarray], *, lr: float, batch_size: int, optimizer: str = "sgd",
               optimizer_options: dict | None = None, label_smoothing: float = 0.0, seed: int = 0,
               dtype: str = "float32", **_ignored):
    """``(state, step)``: the initial device state and the jitted ``step(state, pixels, labels, order, s)``
    that trains on batch ``s`` of the epoch permutation ``order`` and returns ``(state, loss)``.
    ``dtype="float64"`` needs ``jax.config.update("jax_enable_x64", True)`` first (the tests' oracle runs)."""
    jax, jnp = _import_jax()
    from jax import lax

    opts = dict(optimizer_options or {})
    f32 = jnp.dtype(dtype)
    params = {k: jnp.asarray(v, f32) for k, v in initial.items()
              if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    buffers = {k: jnp.asarray(v, f32) for k, v in initial.items() if k.endswith(("running_mean", "running_var"))}
    layers = [(i, layer.kind, layer.args) for i, layer, _, _ in spec.walk()]
    classes = spec.num_classes

    def forward(p, bufs, x, key):
        new_bufs = dict(bufs)
        for i, kind, a in layers:
            if kind == "dense":
                x = x @ p[f"{i}.weight"].T
                if f"{i}.bias" in p:
                    x = x + p[f"{i}.bias"]
            elif kind == "relu":
                x = jnp.maximum(x, 0)
            elif kind == "leaky_relu":
                x = jnp.where(x > 0, x, a["negative_slope"] * x)
            elif kind == "elu":
                x = jnp.where(x > 0, x, a["alpha"] * jnp.expm1(x))
            elif kind == "gelu":
                x = jax.nn.gelu(x, approximate=a["approximate"] == "tanh")
            elif kind == "tanh":
                x = jnp.tanh(x)
            elif kind == "sigmoid":
                x = jax.nn.sigmoid(x)
            elif kind == "dropout":
                if a["p"] > 0:
                    keep = jax.random.bernoulli(jax.random.fold_in(key, i), 1.0 - a["p"], x.shape)
                    x = jnp.where(keep, x / (1.0 - a["p"]), 0.0)
            elif kind == "batch_norm":
                n = x.shape[0]
                mean, var = x.mean(axis=0), x.var(axis=0)
                m = a["momentum"]
                new_bufs[f"{i}.running_mean"] = (1 - m) * bufs[f"{i}.running_mean"] + m * lax.stop_gradient(mean)
                new_bufs[f"{i}.running_var"] = ((1 - m) * bufs[f"{i}.running_var"]
                                                + m * lax.stop_gradient(var) * n / max(n - 1, 1))
                x = (x - mean) / jnp.sqrt(var + a["eps"])
                if f"{i}.weight" in p:
                    x = x * p[f"{i}.weight"] + p[f"{i}.bias"]
        return x, new_bufs

    def loss_fn(p, bufs, x, y, key):
        logits, new_bufs = forward(p, bufs, x, key)
        logp = jax.nn.log_softmax(logits)
        nll = -jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0]
        loss = (1 - label_smoothing) * nll - label_smoothing * logp.mean(axis=1) if label_smoothing else nll
        return loss.mean(), new_bufs

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    zeros = {k: jnp.zeros_like(v) for k, v in params.items()}
    if optimizer == "sgd":
        mu, tau, wd, nesterov = (opts.get("momentum", 0.0), opts.get("dampening", 0.0),
                                 opts.get("weight_decay", 0.0), opts.get("nesterov", False))
        opt_state = {"buf": zeros, "t": jnp.zeros((), jnp.int32)}

        def update(p, g, s):
            new_p, new_buf = {}, {}
            for k in p:
                gk = g[k] + wd * p[k] if wd else g[k]
                if mu:
                    b = jnp.where(s["t"] == 0, gk, mu * s["buf"][k] + (1 - tau) * gk)
                    new_buf[k] = b
                    gk = gk + mu * b if nesterov else b
                new_p[k] = p[k] - lr * gk
            return new_p, {"buf": new_buf if mu else s["buf"], "t": s["t"] + 1}
    else:  # adam, adamw (torch's)
        b1, b2 = opts.get("betas", (0.9, 0.999))
        eps = opts.get("eps", 1e-8)
        wd = opts.get("weight_decay", 0.0 if optimizer == "adam" else 0.01)
        opt_state = {"m": zeros, "v": {k: jnp.zeros_like(v) for k, v in params.items()}, "t": jnp.zeros((), f32)}

        def update(p, g, s):
            t = s["t"] + 1
            new_p, m, v = {}, {}, {}
            for k in p:
                pk, gk = p[k], g[k]
                if optimizer == "adam" and wd:
                    gk = gk + wd * pk
                elif optimizer == "adamw" and wd:
                    pk = pk * (1 - lr * wd)
                m[k] = b1 * s["m"][k] + (1 - b1) * gk
                v[k] = b2 * s["v"][k] + (1 - b2) * gk * gk
                step = lr / (1 - b1 ** t)
                denom = jnp.sqrt(v[k]) / jnp.sqrt(1 - b2 ** t) + eps
                new_p[k] = pk - step * m[k] / denom
            return new_p, {"m": m, "v": v, "t": t}

    def step(state, pixels, labels, order, s, size):
        p, bufs, o, key = state
        key, drop_key = jax.random.split(key)
        idx = lax.dynamic_slice(order, (s * batch_size,), (size,))
        x = pixels[idx].astype(f32) / 255.0
        y = labels[idx]
        (loss, new_bufs), g = grad_fn(p, bufs, x, y, drop_key)
        p, o = update(p, g, o)
        return (p, new_bufs, o, key), loss

    jitted = jax.jit(step, static_argnums=(5,), donate_argnums=(0,))
    state = (params, buffers, opt_state, jax.random.PRNGKey(seed))
    return state, jitted


class JaxPeer:
    """The peer's training state on ``pixels`` ``(N, D)`` uint8 and labels ``y``: :meth:`epoch` trains one
    epoch (a fresh permutation, or ``order``) and returns its seconds, blocking until the device is done."""

    def __init__(self, spec, initial: dict[str, np.ndarray], pixels: np.ndarray, y: np.ndarray, batch_size: int,
                 lr: float, options: dict, dtype: str = "float32") -> None:
        jax, jnp = _import_jax()
        self._jax = jax
        self.state, self._step = build_step(spec, initial, lr=lr, batch_size=batch_size, dtype=dtype, **options)
        self.pixels, self.labels = jnp.asarray(pixels), jnp.asarray(np.asarray(y, np.int32))
        self.n, self.batch_size = len(y), batch_size
        self._rng = np.random.default_rng(0)

    def epoch(self, order: np.ndarray | None = None) -> float:
        order = self._rng.permutation(self.n) if order is None else order
        order = self._jax.numpy.asarray(np.asarray(order, np.int32))
        full, rest = divmod(self.n, self.batch_size)
        t0 = time.perf_counter()
        state, loss = self.state, None
        for s in range(full):
            state, loss = self._step(state, self.pixels, self.labels, order, s, self.batch_size)
        if rest:  # the shorter last batch starts at full * batch_size (its own compiled shape)
            state, loss = self._step(state, self.pixels, self.labels, order, full, rest)
        self._jax.block_until_ready((state, loss))
        self.state = state
        return time.perf_counter() - t0

    def params(self) -> dict[str, np.ndarray]:
        """The trained parameters, on the host, named as the engines name them."""
        return {k: np.asarray(v) for k, v in self.state[0].items()}


def make_jax_runner(spec, initial: dict[str, np.ndarray], pixels: np.ndarray, y: np.ndarray, batch_size: int,
                    lr: float, options: dict, threads: int | None = None):
    """``(one_epoch, "")``: a function that trains one epoch and returns its seconds; or ``(None, reason)``
    where the peer cannot run here."""
    reason = unsupported(spec, options)
    if reason:
        return None, f"not measured: {reason}"
    if threads is not None and not configure_threads(threads):
        return None, f"not measured: JAX was imported before its {threads} thread(s) could be set"
    try:
        peer = JaxPeer(spec, initial, pixels, y, batch_size, lr, options)
    except UsageError as exc:
        return None, f"unavailable: {exc}"
    return peer.epoch, ""
