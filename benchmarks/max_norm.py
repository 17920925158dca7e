"""What --max-norm and --input-dropout cost on the seed network (784-533-10, batch 64, float32,
plain SGD, its fused update): one training step of each variant, the variants taking turns in
blocks of 20 steps on real MNIST batches (the masks drawn inside the timed block, as the Trainer
draws them), and MaxNorm.apply alone on the seed's two weights.

    NNSCRATCH_DATA_DIR=../shared/data python benchmarks/max_norm.py 80 1    # 80 rounds, 1 BLAS thread

Figures and the machine: docs/performance.md, "Max-norm and input dropout".
"""
import os
import sys
import time

import numpy as np

from nnscratch.threads import set_threads

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 80
threads = set_threads(int(sys.argv[2]) if len(sys.argv) > 2 else None)
from nnscratch.data import load_dataset  # noqa: E402
from nnscratch.engines import make_engine  # noqa: E402
from nnscratch.model.registry import dropout_layers, initial_state  # noqa: E402
from nnscratch.model.spec import mlp_spec  # noqa: E402
from nnscratch.training.regularization import MaxNorm  # noqa: E402
from nnscratch.training.streams import dropout_keeps, init_rng  # noqa: E402

BATCHES, BLOCK = 200, 20
data = load_dataset("mnist", os.environ.get("NNSCRATCH_DATA_DIR") and os.environ["NNSCRATCH_DATA_DIR"] + "/mnist")
x = (data.train_images[:64 * BATCHES].reshape(64 * BATCHES, -1) / np.float32(255)).astype(np.float32)
y = data.train_labels[:64 * BATCHES].astype(np.int64)
variants = {"off (the seed configuration)": (mlp_spec(), {}),
            "--max-norm 3.5 (never binds)": (mlp_spec(), {"max_norm": 3.5}),
            "--max-norm 1 (binds)": (mlp_spec(), {"max_norm": 1.0}),
            "--input-dropout 0.2": (mlp_spec(input_dropout=0.2), {})}
engines = {k: (make_engine("numpy", s, initial_state(s, init_rng(0)), np.float32, **o), dropout_layers(s))
           for k, (s, o) in variants.items()}
times = {k: [] for k in engines}
done = {k: 0 for k in engines}
for r in range(rounds + 1):  # round 0 warms up
    for k, (engine, layers) in engines.items():
        t0 = time.perf_counter()
        for _ in range(BLOCK):
            s = done[k] % BATCHES
            engine.train_step(x[s * 64:(s + 1) * 64], y[s * 64:(s + 1) * 64], 0.01,
                              dropout_keeps(0, 0, done[k], layers, 64) if layers else None)
            done[k] += 1
        if r:
            times[k].append((time.perf_counter() - t0) / BLOCK)
base = np.median(times["off (the seed configuration)"])
print(f"seed network, {threads} thread(s): per step, median of {rounds} interleaved blocks of {BLOCK} steps")
for k, t in times.items():
    print(f"  {k:30s} {np.median(t) * 1e3:6.3f} ms  ({np.median(t) / base:.3f}x; quartiles "
          f"{np.percentile(t, 25) * 1e3:.3f}-{np.percentile(t, 75) * 1e3:.3f} ms)")
weights = [w.copy() for w in (engines["off (the seed configuration)"][0].model.layers[i].params["weight"] for i in (0, 2))]
for limit, label in ((100.0, "norms only (no row over the limit)"), (1e-3, "norms + rescaling (every row over)")):
    constraint, spent = MaxNorm(weights, limit), []
    for _ in range(200):
        if limit < 1:
            for w in weights:
                w *= 2
        t0 = time.perf_counter()
        constraint.apply()
        spent.append(time.perf_counter() - t0)
    print(f"  MaxNorm.apply on 533x784 + 10x533, {label}: median {np.median(spent) * 1e6:.0f} us")
