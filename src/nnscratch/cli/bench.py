"""``nnscratch bench``'s command line: its flags, their checks, and the command a result records.

The measurement itself is :func:`nnscratch.run.benchmark.run_benchmark`.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from nnscratch.errors import UsageError
from nnscratch.data.augment import PRESETS
from nnscratch.run.benchmark import ALL_ENGINES, AUGMENTED, SETTLE_S, format_table, run_benchmark

#: The augmentation of the row "seed configuration + augmentation": MNIST's preset.
BENCH_AUGMENT = PRESETS["mnist"]


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=3, help="measured epochs per engine, after one warm-up (default: 3)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024], metavar="B",
                   help="batch sizes for the seed architecture (default: 64 256 1024)")
    p.add_argument("--deep", type=int, nargs="*", default=[1024, 1024], metavar="N",
                   help="hidden sizes of the deeper net, measured at the first batch size "
                        "(default: 1024 1024; give no value to skip)")
    p.add_argument("--engines", nargs="+", default=list(ALL_ENGINES), choices=ALL_ENGINES, metavar="E",
                   help=f"engines to measure (default: all of {', '.join(ALL_ENGINES)})")
    p.add_argument("--settle", type=float, default=SETTLE_S, metavar="SECONDS",
                   help=f"pause before every timed epoch and peak measurement, so that the thread pools of the "
                        f"previous engine are idle (default: {SETTLE_S})")
    p.add_argument("--jit", action="store_true", help="also measure the NumPy engine with Numba element-wise kernels")
    p.add_argument("--config", action="append", default=[], metavar="FILE.toml",
                   help="also measure the network and training options of a config file (e.g. configs/best.toml) at "
                        "its batch size: its optimizer, dropout, batch norm, penalties (scikit-learn has none of "
                        "them); repeat it for more configs")
    p.add_argument("--augment", default=BENCH_AUGMENT, metavar="SPEC",
                   help=f"also measure the seed network at the first batch size on batches augmented so "
                        f"(row {AUGMENTED}; default: {BENCH_AUGMENT}, the MNIST preset; none: skip)")
    p.add_argument("--train-subset", type=int, default=None, metavar="N", help="use the first N training images")
    p.add_argument("--peak-size", type=int, default=4096, metavar="N",
                   help="side of the square products that measure the GEMM peak (default: 4096; smaller is quicker, "
                        "for a smoke test, and under-states the peak)")
    p.add_argument("--threads", type=int, default=None, help="threads for every engine (default: all usable cores)")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="folder holding the MNIST files")
    p.add_argument("--distributed", action="store_true",
                   help="instead: data-parallel on the CPU, N processes x 1 thread (started with torchrun) against "
                        "1 process x N threads on the same N cores, with the all-reduce cost per step "
                        "(docs/distributed.md)")
    p.add_argument("--nproc", type=int, default=2, metavar="N", help="with --distributed: processes (default: 2)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the table and machine facts as JSON")
    p.add_argument("--plot", default=None, metavar="PATH", help="write a bar chart (e.g. docs/benchmark.png)")


def command_line(args: argparse.Namespace) -> str:
    """The measurement settings of this run as an ``nnscratch bench`` command (output paths left out)."""
    parts = ["nnscratch bench", f"--epochs {args.epochs}", "--batch-sizes " + " ".join(map(str, args.batch_sizes)),
             "--deep " + " ".join(map(str, args.deep or [])), "--engines " + " ".join(args.engines)]
    parts += [f"--settle {args.settle:g}"] if args.settle != SETTLE_S else []
    parts += ["--jit"] if args.jit else []
    parts += [f"--config {path}" for path in getattr(args, "config", None) or []]
    parts += [f"--augment {args.augment}"] if getattr(args, "augment", BENCH_AUGMENT) != BENCH_AUGMENT else []
    parts += [f"--train-subset {args.train_subset}"] if args.train_subset else []
    parts += [f"--threads {args.threads}"] if args.threads else []
    parts += [f"--peak-size {args.peak_size}"] if getattr(args, "peak_size", 4096) != 4096 else []
    return " ".join(p.strip() for p in parts)


def _subset(args: argparse.Namespace, data) -> int:
    """``--train-subset``, within the training images (all of them when not given)."""
    if args.train_subset is not None and args.train_subset > len(data.train_labels):
        raise UsageError(f"--train-subset {args.train_subset} is larger than the {len(data.train_labels):,} "
                         "training images")
    return args.train_subset or len(data.train_labels)


def _check_sizes(args: argparse.Namespace, configs: list) -> None:
    """Every network measured, and the GEMM probe's three ``--peak-size`` squares, fit in memory."""
    from nnscratch.model.footprint import check_memory, physical_memory
    from nnscratch.model.spec import mlp_spec

    if args.deep and any(h < 1 for h in args.deep):
        raise UsageError(f"--deep takes positive layer sizes, got {args.deep}")
    engines = len(args.engines) + 2  # the twins of each row, the JIT and the augmented runner alike
    for name, spec, batch in ([("--deep", mlp_spec(784, tuple(args.deep), 10), max(args.batch_sizes))]
                              if args.deep else []) + [
            (f"--config {path}", cfg.model_spec(784, 10), cfg.batch_size) for path, cfg in configs]:
        check_memory(spec, 8, batch, engines, fix=f"choose a smaller network ({name})")
    memory = physical_memory()
    if memory is not None and 3 * 8 * args.peak_size ** 2 > memory:
        raise UsageError(f"--peak-size {args.peak_size:,}: the GEMM probe's three {args.peak_size:,}x{args.peak_size:,} "
                         f"float64 matrices need {24 * args.peak_size ** 2 / 1e9:,.1f} GB, more than this machine's "
                         f"{memory / 1e9:,.1f} GB of memory; the default 4096 is enough to reach the peak")


def run_bench(args: argparse.Namespace) -> int:
    from nnscratch.threads import set_threads
    from nnscratch.data import load_dataset
    from nnscratch.files.atomic import write_json
    from nnscratch.report import machine_info

    if args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    if not 0 <= args.settle <= 60:  # also refuses nan
        raise UsageError(f"--settle must be between 0 and 60 seconds, got {args.settle}")
    if args.peak_size < 64:
        raise UsageError(f"--peak-size must be at least 64, got {args.peak_size}")
    if any(b < 1 for b in args.batch_sizes):
        raise UsageError(f"--batch-sizes must be positive, got {args.batch_sizes}")
    if args.train_subset is not None and args.train_subset < 1:
        raise UsageError(f"--train-subset must be a whole number >= 1, got {args.train_subset}")
    from nnscratch.run.experiment import check_output_file

    for flag, path, example in (("--json", args.json, "bench.json"), ("--plot", args.plot, "benchmark.png")):
        if path:  # before the benchmark's minutes, not after them
            check_output_file(path, flag, example)
    from nnscratch.data.augment import parse_augment
    from nnscratch.errors import ParameterError
    from nnscratch.training.augmented import prefetch_plan

    try:
        augment = parse_augment(args.augment, "mnist")
    except ParameterError as exc:
        raise UsageError(f"--augment {exc.problem}") from None
    from nnscratch.run.config import resolve_config

    # checked before any data is read
    configs = [(Path(path).name, resolve_config(path, {}, ("numpy", "torch"))) for path in args.config]
    _check_sizes(args, configs)
    if args.distributed:
        return run_distributed_bench(args)
    threads = set_threads(args.threads)
    data = load_dataset("mnist", args.data_dir, progress=True)
    n = _subset(args, data)
    pixels = data.train_images[:n].reshape(n, -1)
    y = data.train_labels[:n].astype(np.int64)
    print(f"nnscratch bench: {n:,} MNIST training images, {threads} threads, {args.epochs} measured epochs "
          "per engine after one warm-up", flush=True)
    result = run_benchmark(pixels, y, engines=args.engines, batch_sizes=args.batch_sizes, deep=args.deep,
                           epochs=args.epochs, jit=args.jit, settle_s=args.settle, configs=configs,
                           peak_size=args.peak_size, augment=augment if augment.active else None,
                           image_shape=tuple(data.train_images.shape[1:]), augment_plan=prefetch_plan(threads), threads=threads)
    result["threads"] = threads
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["machine"] = machine_info()
    result["date"] = time.strftime("%Y-%m-%d")
    result["command"] = command_line(args)
    print()
    print(format_table(result))
    print(f"threads: {threads} for every engine; peak resident memory of this process: {result['peak_rss_mb']:.0f} MB")
    if args.json:
        write_json(args.json, result)
    if args.plot:
        from nnscratch.report.bench_plot import plot_benchmark

        plot_benchmark(result, args.plot)
    return 0


def run_distributed_bench(args: argparse.Namespace) -> int:
    """``nnscratch bench --distributed`` (:mod:`nnscratch.run.data_parallel_bench`)."""
    from nnscratch.data import load_dataset
    from nnscratch.engines import require_torch
    from nnscratch.files.atomic import write_json
    from nnscratch.report import machine_info
    from nnscratch.run.data_parallel_bench import format_data_parallel_table, run_data_parallel_bench
    from nnscratch.threads import usable_cores

    require_torch()
    if args.nproc < 2:
        raise UsageError(f"--nproc must be at least 2, got {args.nproc}")
    if args.nproc > usable_cores():
        raise UsageError(f"--nproc {args.nproc}: this process may use {usable_cores()} cores; the comparison needs "
                         "one core per process")
    data = load_dataset("mnist", args.data_dir, progress=True)
    n = _subset(args, data)
    batch = args.batch_sizes[0]
    print(f"nnscratch bench --distributed: {n:,} MNIST training images, batch {batch}, 784-533-10 float32, "
          f"{args.nproc} processes x 1 thread against 1 process x {args.nproc} threads, {args.epochs} measured "
          "epochs after one warm-up", flush=True)
    result = run_data_parallel_bench(data.train_images[:n].reshape(n, -1), data.train_labels[:n].astype(np.int64),
                                     args.data_dir, batch, args.epochs, args.nproc)
    result["machine"] = machine_info()
    result["date"] = time.strftime("%Y-%m-%d")
    result["command"] = (f"nnscratch bench --distributed --nproc {args.nproc} --epochs {args.epochs} "
                         f"--batch-sizes {batch}" + (f" --train-subset {args.train_subset}" if args.train_subset else ""))
    print()
    print(format_data_parallel_table(result))
    if args.json:
        write_json(args.json, result)
    return 0
