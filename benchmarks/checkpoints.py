"""What checkpoints cost on the seed configuration (784-533-10, batch 64, 782 steps per epoch):
epochs with and without the end-of-epoch checkpoint, taking turns in one process, and the time
of one checkpoint write (state copy, safetensors serialisation, SHA-256, fsync, rename).

    NNSCRATCH_DATA_DIR=../shared/data python benchmarks/checkpoints.py 30     # 30 rounds

Figures and the machine: docs/performance.md, "Checkpoints".
"""
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

from nnscratch.threads import set_threads
set_threads(None)
from nnscratch.data import load_dataset
from nnscratch.engines import make_engine
from nnscratch.files.checkpoint import CheckpointWriter, run_meta
from nnscratch.model.registry import initial_state
from nnscratch.model.spec import mlp_spec
from nnscratch.training.streams import init_rng
from nnscratch.training.trainer import FixedOrders, Trainer
data = load_dataset("mnist", os.environ.get("NNSCRATCH_DATA_DIR") and os.environ["NNSCRATCH_DATA_DIR"] + "/mnist")
n = int(sys.argv[2]) if len(sys.argv) > 2 else len(data.train_labels)  # a smaller n: the quick test of this script
x = data.train_images[:n].reshape(n, -1)
y = data.train_labels[:n].astype(np.int64)
xv = data.val_images.reshape(len(data.val_labels), -1).astype(np.float32) / 255
yv = data.val_labels.astype(np.int64)
spec = mlp_spec()
engine = make_engine("numpy", spec, initial_state(spec, init_rng(0)), np.float32)
folder = tempfile.mkdtemp()
writer = CheckpointWriter(folder, run_meta(spec, {}, {}))
rng = np.random.default_rng(1)
t: dict[str, list[float]] = {"without": [], "with": []}
write = []
for r in range(int(sys.argv[1])):
    for which in (("without", "with") if r % 2 == 0 else ("with", "without")):
        tr = Trainer(engine, (x, y), (xv, yv), seed=0, epochs=1, batch_size=64, num_classes=10, schedule=0.01,
                     dtype=np.float32, orders=FixedOrders([rng.permutation(len(y))]),
                     checkpoints=writer if which == "with" else None)
        t0 = time.perf_counter()
        tr.run()
        t[which].append(time.perf_counter() - t0)
        if which == "with":
            t1 = time.perf_counter()
            tr._write_checkpoint(("last",))
            write.append(time.perf_counter() - t1)
for k, v in t.items():
    print(k, "median %.4f s per epoch" % statistics.median(v), ["%.3f" % s for s in v])
print("one checkpoint write: median %.4f s, %.0f kB" % (statistics.median(write), os.path.getsize(folder + "/last.safetensors") / 1e3))
print("with/without: %.4f" % (statistics.median(t["with"]) / statistics.median(t["without"])))
shutil.rmtree(folder)
