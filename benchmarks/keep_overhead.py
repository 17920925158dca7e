"""What the evaluation-mode ``keep`` path (nnscratch inspect's saliency, docs/inspect.md) costs
training: CPU time of 200 training steps (batch 64, one thread) of engines whose layers are this
checkout's (A) and an older ``layers.py``'s (B, the same objects with their class swapped), taking
turns in one process; the step losses of A and B must be identical.

    git show edbc585:src/nnscratch/numpy_engine/layers.py > /tmp/layers_before.py
    python benchmarks/keep_overhead.py /tmp/layers_before.py seed 20     # or bn: 784-256-128-10, BN, GELU, dropout

(a fourth argument: steps per round instead of 200). Figures and the machine: docs/inspect.md.
"""
import importlib.util
import sys
import time

import numpy as np

from nnscratch.engines import make_engine
from nnscratch.model.registry import dropout_layers, initial_state
from nnscratch.model.spec import mlp_spec
from nnscratch.threads import set_threads
from nnscratch.training.streams import dropout_keeps

where, kind, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 200
found = importlib.util.spec_from_file_location("layers_before", where)
before = importlib.util.module_from_spec(found)
found.loader.exec_module(before)
set_threads(1)
spec = mlp_spec() if kind == "seed" else mlp_spec(hidden=(256, 128), batch_norm=True, dropout=0.2, activation="gelu")
rng = np.random.default_rng(0)
x, y = rng.random((64 * steps, 784), dtype=np.float32), rng.integers(0, 10, 64 * steps)
start = initial_state(spec, rng)
# both with layers.py's classes (batch norm's reference, not its compiled twin): it is layers.py that is compared
A, B = (make_engine("numpy", spec, start, np.float32, compiled_layers=False) for _ in range(2))
for layer in B.model.layers:
    layer.__class__ = getattr(before, type(layer).__name__)
masks = [dropout_keeps(0, 0, s, dropout_layers(spec), 64) if dropout_layers(spec) else None for s in range(steps)]


def run(engine):
    t = time.process_time()
    for s in range(steps):
        engine.train_step(x[64 * s:64 * s + 64], y[64 * s:64 * s + 64], 0.01, masks[s])
    return time.process_time() - t, engine.take_epoch_stats()[0]


run(A), run(B)  # warm-up
ta, tb = [], []
for r in range(rounds):
    (a, la), (b, lb) = (run(A), run(B)) if r % 2 == 0 else reversed((run(B), run(A)))
    ta.append(a)
    tb.append(b)
    assert np.array_equal(la, lb), "the two layer sets trained differently"
ratio = np.array(ta) / np.array(tb)
print(f"{kind}: this/before CPU time, median of {rounds} pairs {np.median(ratio):.4f} (min {ratio.min():.3f}, max "
      f"{ratio.max():.3f}); {np.median(ta) * 1e3 / steps:.3f} against {np.median(tb) * 1e3 / steps:.3f} ms per step; "
      "step losses identical")
