"""What augmentation costs: microseconds per batch of 64 MNIST images for each transform alone and
the MNIST preset (one thread, the best of --repeats), then seconds per epoch of the seed
configuration (784-533-10, batch 64, plain SGD) with and without the preset: as a run makes the
batches on this machine (prefetch_plan), and under each other way of sharing the cores with the
thread that prepares them, taking turns epoch by epoch.

    python benchmarks/augment.py 7                        # rounds of epochs (default 5), as in docs/augmentation.md
    python benchmarks/augment.py 3 --hidden 1024 1024 --batch-size 128 --repeats 0   # a bigger network, epochs only
    python benchmarks/augment.py 1 --train-subset 512 --repeats 3    # a smoke test
"""
import argparse, os, statistics, time
import numpy as np
from threadpoolctl import threadpool_limits
from nnscratch.data import load_dataset
from nnscratch.data.augment import PRESETS, Augmentation, Warper, elastic_field_reference, parse_augment
from nnscratch.engines import make_engine
from nnscratch.model.registry import initial_state
from nnscratch.model.spec import mlp_spec
from nnscratch.threads import set_threads
from nnscratch.training.augmented import AugmentedBatches, prefetch_plan
from nnscratch.training.trainer import fit

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("rounds", type=int, nargs="?", default=5, help="measured rounds of epochs (default: 5)")
parser.add_argument("--train-subset", type=int, default=50_000, help="training images per epoch (default: 50,000)")
parser.add_argument("--repeats", type=int, default=300, help="repeats of each per-batch measurement (default: 300)")
parser.add_argument("--hidden", type=int, nargs="+", default=[533], help="hidden layers (default: 533)")
parser.add_argument("--batch-size", type=int, default=64, help="batch size of the epochs (default: 64)")
options = parser.parse_args()
threads = set_threads(None)
print(f"load before: {os.getloadavg()}; {threads} threads")
data = load_dataset("mnist", progress=False)
n = min(options.train_subset, len(data.train_labels))
pixels, labels = data.train_images[:n].reshape(n, -1), data.train_labels[:n].astype(np.int64)
preset = parse_augment(PRESETS["mnist"])

# 1. per batch, one thread: each transform alone, the preset, and the elastic recipe as written
images = np.ascontiguousarray(data.train_images[:64])
rows = {name: preset.only(name) for name in ("rotate", "shift", "scale", "elastic")}
rows.update({"shear=5": Augmentation(shear=5.0), "hflip=0.5": Augmentation(hflip=0.5), "preset": preset})
SCIPY = ("elastic recipe (scipy)", "resampling (scipy)")
best = {name: float("inf") for name in [*rows, "resampling (ours)", "resampling (ours, NumPy)", *SCIPY]}
warper, reference, rng = Warper(), Warper(compiled=False), np.random.default_rng(0)
draw = preset.draw(rng, 64, images.shape[1:])
warper.warp(images, draw)
xy = reference._source(draw, 64, 28, 28).copy()            # where each output pixel reads: x, y
where = np.stack([np.broadcast_to(np.arange(64, dtype=np.float32)[:, None, None], (64, 28, 28)), xy[:, 1], xy[:, 0]])


def scipy_resampling():
    """The same bilinear reads by scipy's order-1 spline on the stacked batch (the batch axis at whole numbers)."""
    from scipy.ndimage import map_coordinates

    return map_coordinates(images[..., 0], where, order=1, mode="grid-constant", cval=0)


with threadpool_limits(1):
    for _ in range(options.repeats):  # taking turns, the best of all repeats
        for name, aug in rows.items():
            t = time.perf_counter(); aug.apply(images, rng, warper); best[name] = min(best[name], time.perf_counter() - t)
        for name, work in (("resampling (ours)", lambda: warper.warp(images, draw)),
                           ("resampling (ours, NumPy)", lambda: reference.warp(images, draw)), (SCIPY[1], scipy_resampling),
                           (SCIPY[0], lambda: elastic_field_reference(rng.uniform(-1, 1, (64, 2, 28, 28)), 34.0, 4.0))):
            t = time.perf_counter(); work(); best[name] = min(best[name], time.perf_counter() - t)
if options.repeats:
    print("\nper batch of 64 MNIST images, one thread, best of", options.repeats)
    for name, seconds in best.items():
        print(f"  {name:24s} {seconds * 1e6:7.0f} us")

if not options.rounds:
    raise SystemExit(0)
# 2. seconds per epoch, taking turns: (augmentation, batches prepared ahead by a thread, engine BLAS threads)
spec, batch = mlp_spec(784, tuple(options.hidden), 10), options.batch_size
init = initial_state(spec, np.random.default_rng(0))
default_prefetch, default_blas = prefetch_plan(threads)
variants = {"plain": (None, 0, threads), "augmented (default)": (preset, default_prefetch, default_blas or threads),
            f"augmented, thread + {max(1, threads - 1)} BLAS": (preset, 4, max(1, threads - 1)),
            f"augmented, thread + {threads} BLAS": (preset, 4, threads),
            f"augmented inline, {threads} BLAS": (preset, 0, threads), "plain, 1 BLAS": (None, 0, 1)}
engines = {k: make_engine("numpy", spec, init, np.float32) for k in variants}
sources = {k: AugmentedBatches(pixels, (28, 28, 1), aug, 0, batch, prefetch=ahead) if aug else None
           for k, (aug, ahead, _) in variants.items()}
orders, times = np.random.default_rng(0), {k: [] for k in variants}
for r in range(options.rounds + 1):  # the first round warms up
    for k, (_, _, blas) in variants.items():
        time.sleep(0.3)  # the previous engine's BLAS threads stop spinning (run/benchmark.py)
        with threadpool_limits(blas):
            seconds = fit(engines[k], (pixels, labels), None, orders=[orders.permutation(n)], batch_size=batch,
                          num_classes=10, lr=0.01, dtype=np.float32, augment=sources[k]).epochs[0].time_s
        if r:
            times[k].append(seconds)
print(f"\nseconds per epoch of {n:,} images ({spec.describe()}, batch {batch}), {options.rounds} rounds taking turns")
for k, ts in times.items():
    ratios = [t / p for t, p in zip(ts, times["plain"])]
    print(f"  {k:32s} median {statistics.median(ts):6.3f} s   x{statistics.median(ratios):.2f} plain "
          f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)}; seconds: {', '.join(f'{t:.2f}' for t in ts)})")
print(f"load after: {os.getloadavg()}")
