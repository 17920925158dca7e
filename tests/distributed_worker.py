"""One rank of tests/test_distributed.py's data-parallel run (started by torchrun, 2 processes).

Every rank trains both engines data-parallel (gloo) on the first 2,000 MNIST training images for
one epoch in float64, through the Python API (the code path of ``nnscratch compare
--distributed``). Rank 0 then leaves the process group and trains both engines again as ONE
process with the same settings (the oracle), and writes ``{engine: max relative weight
difference}`` plus the step losses' difference to the JSON file named by argv[1].

The settings exercise every part of the sharding: batch norm (global statistics), dropout (each
rank its rows of the global mask), batches of 63 so that 2,000 images end in a batch of 47 and
every batch splits unevenly between the two ranks (31/32, 23/24), momentum (the optimizer sees
the summed gradient), the L2 penalty and clipping (applied after the all-reduce).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def main(out: str) -> int:
    from nnscratch import api
    from nnscratch.data import load_dataset
    from nnscratch.run.experiment import max_rel_state_diff
    from nnscratch.training import distributed
    from nnscratch.training.launch import start_data_parallel, stop_data_parallel

    comm = start_data_parallel(timeout_s=60)
    cfg = api.config(train_subset=2000, val_size=1000, epochs=1, batch_size=63, dtype="float64", hidden=(64, 32),
                     batch_norm=True, dropout=0.2, input_dropout=0.1, momentum=0.9, l2=1e-5, clip_grad_norm=5.0,
                     threads=1, lr=0.05)
    data = load_dataset("mnist", os.environ.get("NNSCRATCH_DATA_DIR"), progress=False, val_size=1000)
    parallel = api.compare(cfg, progress=False, data=data)
    reductions = comm.reductions
    stop_data_parallel(comm)
    if comm.rank != 0:
        return 0
    assert distributed.active() is None
    single = api.compare(cfg, progress=False, data=data)
    result = {name: max_rel_state_diff(parallel.models[name], single.models[name]) for name in ("numpy", "torch")}
    for name in ("numpy", "torch"):
        a, b = np.asarray(parallel.history[name]["step_loss"]), np.asarray(single.history[name]["step_loss"])
        result[f"{name}_loss"] = float(np.max(np.abs(a - b) / np.abs(b)))
        result[f"{name}_train_accuracy"] = [parallel.history[name]["epochs"][0]["train_accuracy"],
                                            single.history[name]["epochs"][0]["train_accuracy"]]
    result["steps"] = len(single.history["numpy"]["step_loss"])
    result["reductions"] = reductions
    result["world_size"] = comm.world_size
    result["recorded"] = [parallel.metrics.get("data_parallel"), single.metrics.get("data_parallel")]
    with open(out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
