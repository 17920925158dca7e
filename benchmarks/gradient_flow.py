"""What gradient flow costs on the seed configuration (784-533-10, batch 64, plain SGD = the fused
path, float32): a recorded step (``train_step_recorded``) against a plain one, and whole epochs with
4 sampled steps against epochs without, taking turns in one process.

Times are CPU time (``time.process_time``) with one BLAS thread: on a machine shared with other
work, wall time measures the neighbours more than the code (a 3-epoch run took 2 s to 70 s there),
while one thread's CPU time does not include waiting or spinning.

    NNSCRATCH_DATA_DIR=../shared/data python benchmarks/gradient_flow.py 2000 12   # step pairs, epoch rounds
    python benchmarks/gradient_flow.py 2000 12 --optimizer adam                     # no fused path

Figures and the machine: docs/gradient-flow.md, "Cost".
"""
import argparse
import time

import numpy as np

from nnscratch.data import load_dataset
from nnscratch.run.config import RunConfig
from nnscratch.run.experiment import build_engines, plan_run, prepare_arrays
from nnscratch.threads import set_threads
from nnscratch.training.loop import BatchGatherer
from nnscratch.training.trainer import Trainer

set_threads(1)  # after the imports: threadpoolctl limits the BLAS pools already loaded

parser = argparse.ArgumentParser()
parser.add_argument("pairs", type=int, help="plain/recorded step pairs")
parser.add_argument("rounds", type=int, help="epoch rounds (one epoch on, one off each)")
parser.add_argument("train_subset", type=int, nargs="?", default=None, help="fewer training images (a quick test)")
parser.add_argument("--optimizer", default="sgd")
args = parser.parse_args()

data = load_dataset("mnist", progress=False)
cfg = RunConfig(engines=("numpy",), optimizer=args.optimizer, train_subset=args.train_subset,
                **({"lr": 0.001} if args.optimizer != "sgd" else {}))
arrays = prepare_arrays(data, cfg)
plan = plan_run(cfg, len(arrays.y_train), arrays.x_train.shape[1], len(data.class_names))
fresh = lambda: build_engines(cfg, plan)["numpy"]  # noqa: E731

# -- one step: plain and recorded alternate (P R, R P, ...) on random batches of the training set
engine = fresh()
gather = BatchGatherer(arrays.x_train, arrays.y_train, cfg.batch_size, cfg.np_dtype)
rng = np.random.default_rng(0)
per: dict[str, list[float]] = {"plain": [], "recorded": []}
for i in range(args.pairs):
    for kind in (("plain", "recorded") if i % 2 == 0 else ("recorded", "plain")):
        step = engine.train_step if kind == "plain" else engine.train_step_recorded
        xb, yb = gather.batch(rng.integers(0, len(arrays.y_train), cfg.batch_size))
        t = time.process_time()
        step(xb, yb, cfg.lr)
        per[kind].append(time.process_time() - t)
    engine.take_epoch_stats()
median = {k: float(np.median(v)) for k, v in per.items()}
for k, v in per.items():
    print(f"{k} step: median {median[k] * 1e3:.3f} ms, 10th percentile {np.percentile(v, 10) * 1e3:.3f} ms")
steps = -(-len(arrays.y_train) // cfg.batch_size)
extra = median["recorded"] - median["plain"]
print(f"extra per recorded step: {extra * 1e3:.3f} ms; 4 of {steps} steps: "
      f"+{4 * extra / (steps * median['plain']) * 100:.2f} % of an epoch's steps")

# -- whole epochs (validation included), 4 samples against none, taking turns
epochs: dict[int, list[float]] = {0: [], 4: []}
for r in range(args.rounds):
    for k in ((0, 4) if r % 2 == 0 else (4, 0)):
        trainer = Trainer(fresh(), (arrays.x_train, arrays.y_train), (arrays.x_val, arrays.y_val), seed=cfg.seed,
                          epochs=1, batch_size=cfg.batch_size, num_classes=len(data.class_names), schedule=cfg.lr,
                          dtype=cfg.np_dtype, gradient_flow=k)
        t = time.process_time()
        trainer.run()
        epochs[k].append(time.process_time() - t)
on, off = np.array(epochs[4]), np.array(epochs[0])
ratio = on / off
print(f"epochs on/off: median {np.median(on):.4f} / {np.median(off):.4f} s; paired ratio median {np.median(ratio):.4f} "
      f"(quartiles {np.percentile(ratio, 25):.4f} .. {np.percentile(ratio, 75):.4f}); "
      f"ratio of the fastest {on.min() / off.min():.4f}")
