"""The ``nnscratch`` command line: parses, validates, calls. No math lives here.

Verbs: ``compare`` (both engines), ``train`` (one engine), ``evaluate`` (a saved model on the
test set), ``bench`` (speed of every engine against this machine's BLAS limit).
Errors are one line on stderr: exit 2 for bad usage or input, 1 for other failures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from nnscratch import __version__
from nnscratch.errors import NNScratchError, UsageError


def _add_run_flags(p: argparse.ArgumentParser, default_out: str) -> None:
    g = p.add_argument_group("hyperparameters (defaults: the reference project's)")
    g.add_argument("--epochs", type=int, default=20, help="passes over the training set (default: 20)")
    g.add_argument("--batch-size", type=int, default=64, help="mini-batch size (default: 64)")
    g.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (default: 0.01)")
    g.add_argument("--hidden", type=int, nargs="+", default=[533], metavar="N",
                   help="hidden layer sizes, e.g. --hidden 512 256 (default: 533)")
    g.add_argument("--seed", type=int, default=0, help="seed of the initial weights and batch order (default: 0)")
    g.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="floating-point type of both engines (default: float32)")
    g.add_argument("--train-subset", type=int, default=None, metavar="N",
                   help="train on the first N of the 50,000 training images (default: all)")
    r = p.add_argument_group("run")
    r.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder holding the dataset files (else $NNSCRATCH_DATA_DIR/<dataset>/, "
                        "the user cache, then a download)")
    r.add_argument("--out", default=None, metavar="DIR", help=f"output folder (default: {default_out})")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="device of the torch twin (default: auto = cuda if available)")
    r.add_argument("--threads", type=int, default=None,
                   help="CPU threads for every engine (default: all usable cores)")
    r.add_argument("--jit", action="store_true",
                   help="NumPy engine: Numba-compiled element-wise kernels (needs numba; see README Performance)")
    r.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnscratch",
        description="A neural network written from scratch in NumPy, trained beside its exact PyTorch twin.")
    parser.add_argument("--version", action="version", version=f"nnscratch {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser("compare", help="train the NumPy engine and its PyTorch twin, write the report",
                         description="Train both engines from the same initial weights on the same batches, "
                                     "evaluate them on the test set, write metrics.json, report.md, "
                                     "figures and both models.")
    _add_run_flags(p, "runs/<timestamp>-compare/")

    p = verbs.add_parser("train", help="train one engine", description="Train one engine; write the same "
                         "outputs as compare for that engine.")
    p.add_argument("--engine", choices=["numpy", "torch"], default="numpy", help="engine (default: numpy)")
    _add_run_flags(p, "runs/<timestamp>-train-<engine>/")

    p = verbs.add_parser("evaluate", help="evaluate a saved model on the test set",
                         description="Load a .safetensors model written by train/compare and report its "
                                     "test-set metrics.")
    p.add_argument("--model", required=True, metavar="PATH", help="a *_model.safetensors file")
    p.add_argument("--engine", choices=["numpy", "torch"], default="numpy",
                   help="engine to run the model with (default: numpy)")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="folder holding the dataset files")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help="floating-point type (default: the one the model was trained in)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the metrics as JSON")

    from nnscratch.bench import add_bench_arguments

    p = verbs.add_parser("bench", help="speed of every engine against this machine's BLAS limit",
                         description="Measure seconds per epoch of NumPy (float32/64), PyTorch (eager and "
                                     "compiled) and scikit-learn on the real MNIST training set, against "
                                     "the GEMM peak of this machine.")
    add_bench_arguments(p)
    return parser


def _config_from(args: argparse.Namespace, engines: tuple[str, ...]):
    from nnscratch.config import RunConfig

    return RunConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, hidden=tuple(args.hidden),
                     seed=args.seed, dtype=args.dtype, train_subset=args.train_subset, device=args.device,
                     threads=args.threads, data_dir=args.data_dir, engines=engines, jit=args.jit)


def set_threads(threads: int | None) -> int:
    """Use the same number of CPU threads in every engine's BLAS (and torch); returns it."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = threads or usable
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    return n


def _run(args: argparse.Namespace, engines: tuple[str, ...], label: str) -> int:
    from tqdm.auto import tqdm

    from nnscratch.experiment import run_experiment
    from nnscratch.summary import results_table

    cfg = _config_from(args, engines)
    out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{label}")
    threads = set_threads(cfg.threads)
    print(f"nnscratch {label}: {cfg.dataset}, engines {', '.join(engines)}, {threads} threads")
    print(f"  {cfg.describe()}")
    print(f"  output: {out}/")

    def on_epoch(engine: str, r) -> None:
        if not args.quiet:
            tqdm.write(f"  {engine:>5} epoch {r.epoch:>2}/{cfg.epochs}: train loss {r.train_loss:.4f} "
                       f"acc {r.train_accuracy:.4f} | val loss {r.val_loss:.4f} acc {r.val_accuracy:.4f} "
                       f"f1 {r.val_f1:.4f} | {r.time_s:.2f} s")

    metrics = run_experiment(cfg, out, progress=not args.quiet, on_epoch=on_epoch)
    print()
    print(results_table(metrics))
    print(f"\nwrote {out}/report.md, metrics.json, figures and models")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from nnscratch.data import load_dataset
    from nnscratch.engines import make_engine
    from nnscratch.experiment import to_features
    from nnscratch.io import write_json
    from nnscratch.metrics import classification_report
    from nnscratch.model_io import load_model

    state, spec, info = load_model(args.model)
    dtype = np.dtype(args.dtype or info.get("dtype", "float32"))
    data = load_dataset(info.get("dataset", "mnist"), args.data_dir)
    x = to_features(data.test_images, dtype.type)
    if x.shape[1] != spec.input_dim:
        raise UsageError(f"{args.model} expects {spec.input_dim} inputs, the {data.name} images have {x.shape[1]}")
    set_threads(None)
    engine = make_engine(args.engine, spec, state, lr=0.01, dtype=dtype, device="auto")
    pred = engine.predict_logits(x).argmax(axis=1)
    report = classification_report(data.test_labels, pred, data.class_names)
    print(f"{args.model}: {spec.describe()}, {data.name} test set ({len(pred):,} images), engine {args.engine}")
    print(f"  accuracy {report['accuracy']:.4f}  precision {report['precision']:.4f}  recall "
          f"{report['recall']:.4f}  f1 {report['f1']:.4f}  errors {report['errors']}")
    if args.json:
        write_json(args.json, {"model": str(args.model), "engine": args.engine, "test": report})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.verb == "compare":
            return _run(args, ("numpy", "torch"), "compare")
        if args.verb == "train":
            return _run(args, (args.engine,), f"train-{args.engine}")
        if args.verb == "evaluate":
            return _evaluate(args)
        if args.verb == "bench":
            from nnscratch.bench import run_bench

            return run_bench(args)
    except NNScratchError as exc:
        print(f"nnscratch: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("nnscratch: interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown verb {args.verb}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
