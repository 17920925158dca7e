"""Our products alone: the matrix products of one training epoch, made with the engine's own gemm,
buffers and memory layouts, and nothing else (no activation, batch norm, dropout, loss or update
pass). Beside `nnscratch bench`'s s/epoch it says what bounds a row: the products, or the
element-wise work around them (docs/performance.md).

    python benchmarks/products.py                          # the README's rows, 50,000 images an epoch
    python benchmarks/products.py --small                  # a tiny network, to check the script runs

How: the engine trains one real step on a random batch; each dense layer's input, output
gradient and whether it computed ``dx`` are recorded there, then replayed, layer by layer,
forward then backward, for an epoch's worth of steps (the backward's products write into the
layer's own gradient sink, as in training). Best of ``--repeats`` epochs, 2 threads by default.
"""
import argparse
import math
import time

import numpy as np

from nnscratch.threads import set_threads

ROWS = [("784-533-10", (533,), 64, None), ("784-533-10", (533,), 1024, None),
        ("784-1024-1024-10", (1024, 1024), 64, None),
        ("best.toml", None, None, "configs/best.toml"), ("gelu-bn.toml", None, None, "configs/gelu-bn.toml")]

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--images", type=int, default=50_000, help="images an epoch (default: 50,000, as the bench)")
parser.add_argument("--repeats", type=int, default=3, help="epochs measured per row, the best kept (default: 3)")
parser.add_argument("--threads", type=int, default=2, help="BLAS threads (default: 2, as the bench)")
parser.add_argument("--small", action="store_true", help="a tiny 20-8-10 network and 3 steps, to check the script runs")
options = parser.parse_args()
set_threads(options.threads)

from nnscratch.engines import make_engine  # noqa: E402  (after the threads are set)
from nnscratch.model.registry import dropout_layers, initial_state  # noqa: E402
from nnscratch.model.spec import mlp_spec  # noqa: E402
from nnscratch.numpy_engine.layers import Dense  # noqa: E402
from nnscratch.run.benchmark import _training_options  # noqa: E402
from nnscratch.run.config import resolve_config  # noqa: E402
from nnscratch.training.streams import dropout_keeps  # noqa: E402


def recorded_step(engine, spec, batch: int, d_in: int):
    """One real training step, recording each dense layer's (input, output gradient, need_dx)."""
    rng = np.random.default_rng(0)
    x = rng.random((batch, d_in), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    layers = [(i, layer) for i, layer in enumerate(engine.model.layers) if isinstance(layer, Dense)]
    seen = {}
    for i, layer in layers:
        def forward(x, train=True, keep=None, _layer=layer, _i=i):
            seen[_i] = [np.array(x, order="K")]
            return Dense.forward(_layer, x, train, keep)

        def backward(dout, need_dx=True, _layer=layer, _i=i):
            seen[_i] += [np.array(dout, order="K"), need_dx]
            return Dense.backward(_layer, dout, need_dx)
        layer.forward, layer.backward = forward, backward
    drops = dropout_layers(spec)
    engine.train_step(x, y, 0.01, dropout_keeps(0, 0, 0, drops, batch) if drops else None)
    for _, layer in layers:
        del layer.forward, layer.backward  # the class's methods again
    missing = [i for i, _ in layers if len(seen.get(i, ())) != 3]
    if missing:  # a frozen layer has no backward: this script measures training from scratch only
        raise SystemExit(f"products.py: dense layer(s) {missing} made no forward and backward in the step")
    return [(layer, *seen[i]) for i, layer in layers]


def products_epoch(recorded, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        for layer, x, _, _ in recorded:
            layer.forward(x)
        for layer, _, dout, need_dx in reversed(recorded):
            layer.backward(dout, need_dx)
    return time.perf_counter() - t


rows = [("20-8-10", (8,), 16, None)] if options.small else ROWS
steps_scale = 3 if options.small else None
print(f"our products alone: {options.images:,} images an epoch, {options.threads} threads, best of {options.repeats}")
for name, hidden, batch, config in rows:
    cfg = resolve_config(config, {}, ("numpy",)) if config else None
    d_in = 20 if options.small else 784
    spec = cfg.model_spec(d_in, 10) if cfg else mlp_spec(d_in, hidden, 10)
    batch = cfg.batch_size if cfg else batch
    engine = make_engine("numpy", spec, initial_state(spec, np.random.default_rng(0)), np.float32,
                         **_training_options(cfg))
    recorded = recorded_step(engine, spec, batch, d_in)
    steps = steps_scale or math.ceil(options.images / batch)
    products_epoch(recorded, min(steps, 20))  # warm-up
    best = min(products_epoch(recorded, steps) for _ in range(options.repeats))
    print(f"{name:>18}, batch {batch:>4}: {best:.3f} s an epoch of products ({len(recorded)} dense layers, "
          f"{steps} steps)", flush=True)
