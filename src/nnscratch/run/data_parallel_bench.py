"""``nnscratch bench --distributed``: does data-parallel training pay on this machine's CPU cores?

The same cores, two ways, for the NumPy engine (float32) and the torch twin (float32), the seed
network (784-533-10 ReLU, plain SGD) on the MNIST training images:

* **1 process x P threads**: the plain engine, its BLAS using all ``P`` threads;
* **P processes x 1 thread**: ``torchrun --nproc-per-node P`` (started here, as a subprocess),
  each process its share of every batch, the gradients summed by gloo every step.

Seconds per epoch are the median of ``--epochs`` epochs after one warm-up epoch (the trainer's
own ``time_s``: optimisation steps only). For the data-parallel rows also the **all-reduce cost
per step**: the NumPy engine's measured time inside its all-reduces (every collective goes
through the communicator), and for both engines the median time of one all-reduce of a buffer
the size of the network's gradients, timed alone after training (DDP's own all-reduce runs
inside the backward pass, where it cannot be timed apart).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ENGINES = ("numpy", "torch")
HIDDEN = (533,)


def _spec():
    from nnscratch.model.spec import mlp_spec

    return mlp_spec(784, HIDDEN, 10)


def epoch_times(engine, pixels: np.ndarray, y: np.ndarray, batch_size: int, epochs: int) -> list[float]:
    """Seconds of each of ``epochs`` epochs of ``engine`` after one warm-up epoch (not returned)."""
    from nnscratch.training.trainer import fit

    history = fit(engine, (pixels, y), None, seed=0, epochs=epochs + 1, batch_size=batch_size, num_classes=10,
                  lr=0.01, dtype=np.float32)
    return [e.time_s for e in history.epochs[1:]]


def _engine(name: str, communicator=None):
    from nnscratch.engines import make_engine
    from nnscratch.model.registry import initial_state
    from nnscratch.training.streams import init_rng

    spec = _spec()
    options = {"device": "cpu"} if name == "torch" else {}
    if communicator is not None:
        options["communicator"] = communicator
    return make_engine(name, spec, initial_state(spec, init_rng(0), "he_normal"), np.float32, **options)


def gradient_size() -> int:
    """How many numbers the seed network's gradient holds (what one step all-reduces)."""
    return sum(int(np.prod(p.shape)) for p in _engine("numpy").model.named_params().values())


def one_process(pixels: np.ndarray, y: np.ndarray, batch_size: int, epochs: int, threads: int) -> dict:
    """The 1 process x ``threads`` rows: ``{engine: [seconds per epoch]}``."""
    from nnscratch.threads import set_threads

    set_threads(threads)
    return {name: epoch_times(_engine(name), pixels, y, batch_size, epochs) for name in ENGINES}


def data_parallel(processes: int, data_dir: str | None, n: int, batch_size: int, epochs: int,
                  timeout_s: float = 600) -> dict:
    """The ``processes`` x 1 thread rows, run by torchrun in a subprocess (:func:`worker`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="nnscratch-dp-bench-") as tmp:
        out = os.path.join(tmp, "result.json")
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
               "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "nnscratch.run.data_parallel_bench",
               out, data_dir or "", str(n), str(batch_size), str(epochs)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            from nnscratch.errors import NNScratchError

            raise NNScratchError(f"bench --distributed: the {processes} torchrun processes did not finish within "
                                 f"{timeout_s:g} s; try a smaller --train-subset or fewer --epochs") from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
        if proc.returncode != 0:
            from nnscratch.errors import NNScratchError

            last = [line for line in output.splitlines() if line.strip()][-1:] or ["(no output)"]
            raise NNScratchError(f"bench --distributed: the {processes} torchrun processes failed: {last[0][:200]}")
        with open(out) as f:
            return json.load(f)


def worker(out: str, data_dir: str, n: int, batch_size: int, epochs: int) -> None:
    """One rank of :func:`data_parallel` (``python -m nnscratch.run.data_parallel_bench ...`` under torchrun)."""
    import torch

    from nnscratch.data import load_dataset
    from nnscratch.threads import set_threads
    from nnscratch.training.launch import start_data_parallel, stop_data_parallel

    set_threads(1)
    comm = start_data_parallel(timeout_s=120)
    data = load_dataset("mnist", data_dir or None, progress=False)
    pixels, y = data.train_images[:n].reshape(n, -1), data.train_labels[:n].astype(np.int64)
    result: dict = {"processes": comm.world_size}
    for name in ENGINES:
        engine = _engine(name, comm)
        before_s, before_calls = comm.reduce_s, comm.reductions
        result[name] = epoch_times(engine, pixels, y, batch_size, epochs)
        steps = (epochs + 1) * -(-n // batch_size)
        result[f"{name}_reduce_ms_per_step"] = (comm.reduce_s - before_s) / steps * 1e3
        result[f"{name}_reductions_per_step"] = (comm.reductions - before_calls) / steps
    grad = torch.zeros(gradient_size(), dtype=torch.float32)
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        comm.allreduce_tensor(grad)
        times.append(time.perf_counter() - t0)
    result["allreduce_ms"] = statistics.median(times[20:]) * 1e3
    result["gradient_numbers"] = int(grad.numel())
    stop_data_parallel(comm)
    if comm.rank == 0:
        with open(out, "w") as f:
            json.dump(result, f)


def run_data_parallel_bench(pixels: np.ndarray, y: np.ndarray, data_dir: str | None, batch_size: int, epochs: int,
                            processes: int) -> dict:
    """Both layouts on the same cores: ``{"rows": [...], "verdict": str, ...}`` (see the module docstring)."""
    from nnscratch.threads import usable_cores

    n = len(y)
    load = os.getloadavg()[0]  # before any of ours: what else the machine is running
    single = one_process(pixels, y, batch_size, epochs, processes)
    parallel = data_parallel(processes, data_dir, n, batch_size, epochs)
    steps = -(-n // batch_size)
    rows = []
    for name in ENGINES:
        s1, sp = statistics.median(single[name]), statistics.median(parallel[name])
        rows.append({"engine": name, "layout": f"1 process x {processes} threads", "s_per_epoch": s1,
                     "speedup": 1.0, "allreduce_ms_per_step": None, "epochs_s": single[name]})
        measured = parallel.get(f"{name}_reduce_ms_per_step") if name == "numpy" else None
        rows.append({"engine": name, "layout": f"{processes} processes x 1 thread", "s_per_epoch": sp,
                     "speedup": s1 / sp, "allreduce_ms_per_step": measured if measured else parallel["allreduce_ms"],
                     "allreduce_share": (measured if measured else parallel["allreduce_ms"]) * steps / 1e3 / sp,
                     "epochs_s": parallel[name]})
    pays = [r["engine"] for r in rows if r["speedup"] > 1.05]
    if pays:
        verdict = f"data-parallel pays here for: {', '.join(pays)} (more than 5 % faster on the same cores)"
    else:
        verdict = (f"data-parallel does not pay on this machine: {processes} processes x 1 thread are no faster "
                   f"than 1 process x {processes} threads on the same {processes} cores. Each process gathers the "
                   "whole batch, does its share of the products with one thread and then waits for an all-reduce "
                   f"of the whole gradient ({parallel['gradient_numbers']:,} numbers, "
                   f"{parallel['allreduce_ms']:.2f} ms alone) every step, while one process's BLAS already "
                   "splits each product over the cores without any of that. Data-parallel pays across machines "
                   "(or GPUs), where the cores are not already shared by threads.")
    if load > 0.5 * usable_cores():
        verdict += (f" NOTE: the machine was busy when this was measured (load average {load:.1f} on "
                    f"{usable_cores()} cores before the benchmark started): threads that share their cores with "
                    "other programs lose far more than single-threaded processes do, so these figures measure that "
                    "contention more than data-parallel training; measure on an idle machine.")
    return {"rows": rows, "verdict": verdict, "load_average_before": load, "batch_size": batch_size, "train_images": n, "epochs": epochs,
            "processes": processes, "steps_per_epoch": steps, "allreduce_ms": parallel["allreduce_ms"],
            "gradient_numbers": parallel["gradient_numbers"],
            "numpy_reductions_per_step": parallel.get("numpy_reductions_per_step")}


def format_data_parallel_table(result: dict) -> str:
    """The rows as a text table, then the verdict."""
    lines = [f"{'engine':<7} {'layout':<26} {'s/epoch':>8} {'speed-up':>9} {'all-reduce ms/step':>19} "
             f"{'share of epoch':>15}"]
    for r in result["rows"]:
        ms = "" if r["allreduce_ms_per_step"] is None else f"{r['allreduce_ms_per_step']:.3f}"
        share = "" if r.get("allreduce_share") is None else f"{100 * r['allreduce_share']:.0f} %"
        lines.append(f"{r['engine']:<7} {r['layout']:<26} {r['s_per_epoch']:>8.3f} {r['speedup']:>8.2f}x {ms:>19} "
                     f"{share:>15}")
    lines.append("")
    lines.append(result["verdict"])
    return "\n".join(lines)


if __name__ == "__main__":  # one rank, under torchrun (see data_parallel)
    worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
