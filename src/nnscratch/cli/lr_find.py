"""``nnscratch lr-find``'s command line: the learning-rate range test
(:mod:`nnscratch.analysis.lr_find`) on a fresh model of any run's settings (the train flags or a
config), its figure and JSON written into ``--out`` through a run folder (with a ``metrics.json``
that names no trained engine, so that ``--overwrite`` may replace it), the suggested rate
printed as a flag and as the ``nnscratch train`` line to copy.

The sweep trains a throwaway engine built from a copy of the run's initial state: nothing a later
``train`` starts from changes.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path
from typing import Mapping

from nnscratch.errors import NNScratchError, UsageError

DEFAULT_START_LR, DEFAULT_END_LR, DEFAULT_STEPS = 1e-7, 10.0, 100


def add_lr_find_arguments(p: argparse.ArgumentParser) -> None:
    """The sweep's own flags (the run's flags come from the train verb's set)."""
    g = p.add_argument_group("the sweep (docs/lr-find.md)")
    g.add_argument("--start-lr", type=float, default=DEFAULT_START_LR, metavar="LR",
                   help=f"first learning rate (default: {DEFAULT_START_LR:g})")
    g.add_argument("--end-lr", type=float, default=DEFAULT_END_LR, metavar="LR",
                   help=f"last learning rate, reached unless the loss diverges first (default: {DEFAULT_END_LR:g})")
    g.add_argument("--steps", type=int, default=DEFAULT_STEPS, metavar="N",
                   help=f"mini-batches of the sweep, rates evenly spaced on a log axis (default: {DEFAULT_STEPS})")


def _check_sweep_flags(args: argparse.Namespace) -> None:
    if not (math.isfinite(args.start_lr) and args.start_lr > 0):
        raise UsageError(f"--start-lr must be a finite number > 0, got {args.start_lr}")
    if not (math.isfinite(args.end_lr) and args.end_lr > args.start_lr):
        raise UsageError(f"--end-lr must be a finite number above --start-lr {args.start_lr:g}, got {args.end_lr}")
    if args.steps < 2:
        raise UsageError(f"--steps must be an integer >= 2 (a sweep has a first and a last rate), got {args.steps}")
    if args.resume:
        raise UsageError("lr-find starts from a fresh model: drop --resume (--from starts it from a trained one)")


def run_lr_find(args: argparse.Namespace, cfg, folder_flags: Mapping[str, str]) -> int:
    """Check everything, sweep, write ``lr_find.json`` and ``lr_find.png``, print the suggestion."""
    import numpy as np

    from nnscratch.analysis.lr_find import lr_sweep, training_batches
    from nnscratch.data import load_dataset
    from nnscratch.files.atomic import write_json
    from nnscratch.model.registry import dropout_layers
    from nnscratch.run.experiment import RunPlan, augmented_batches, build_engines, check_augment, check_engines, \
        open_run_folder, plan_run, prepare_arrays
    from nnscratch.threads import set_threads

    _check_sweep_flags(args)
    out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-lr-find")
    folder = open_run_folder(cfg, out, args.overwrite, names=folder_flags)
    check_engines(cfg)
    np.seterr(all="ignore")  # the sweep is meant to diverge at the end: said once, by the sweep
    threads = set_threads(cfg.threads)
    engine_name = cfg.engines[0]
    print(f"nnscratch lr-find: {cfg.dataset}, engine {engine_name}, {threads} threads"
          + (f", config {args.config}" if args.config else ""))
    print(f"  {cfg.describe()}")
    print(f"  sweep: {args.steps} steps, lr {args.start_lr:g} to {args.end_lr:g} (exponential); output: {out}/")
    if cfg.augment and cfg.augment != "none":
        print(f"  on augmented batches ({cfg.augment}), as training would see them")
    data = load_dataset(cfg.dataset, cfg.data_dir, progress=not args.quiet, **cfg.data_options())
    arrays = prepare_arrays(data, cfg)
    check_augment(cfg, arrays.image_shape)
    plan = plan_run(cfg, len(arrays.y_train), arrays.x_train.shape[1], len(data.class_names))
    copy = RunPlan(plan.spec, {k: np.array(v, copy=True) for k, v in plan.initial.items()})  # the sweep's own
    engine = build_engines(cfg, copy)[engine_name]
    batches = training_batches(arrays.x_train, arrays.y_train, cfg.batch_size, seed=cfg.seed,
                               dropout=dropout_layers(plan.spec), dtype=cfg.np_dtype, transform=arrays.train_transform(),
                               augment=augmented_batches(cfg, arrays))  # None without --augment
    sweep = lr_sweep(engine, batches, args.start_lr, args.end_lr, args.steps)
    tips = sweep["suggestions"]
    if tips["steepest"] is None:
        raise NNScratchError(f"no suggestion: the loss was not finite from the first steps of the sweep "
                             f"({len(sweep['losses'])} finite); try a smaller --start-lr")
    train_line = "nnscratch train " + (f"--engine {engine_name} " if engine_name != "numpy" else "") \
        + dataclasses.replace(cfg, lr=float(f"{tips['steepest']:.3g}")).describe()
    record = {"config": cfg.to_dict() | {"model": plan.spec.describe()}, "engine": engine_name,
              "dataset": data.name, "train": int(len(arrays.y_train)), **sweep, "train_command": train_line}
    from nnscratch.report.lr_find_plot import plot_lr_find  # imports matplotlib: only once there is a result

    with folder:
        write_json(folder.staging / "lr_find.json", record)
        # what makes the folder a finished run of ours (replaced with --overwrite): no engine was trained
        write_json(folder.staging / "metrics.json", {"config": record["config"], "engines": {},
                                                     "lr_find": "lr_find.json"})
        plot_lr_find(sweep, folder.staging / "lr_find.png",
                     title=f"Learning-rate range test: {plan.spec.describe()}, {engine_name}, {data.title} "
                           f"({len(arrays.y_train):,} images)")
        folder.commit()
    _say(sweep, train_line, out)
    return 0


def _say(sweep: dict, train_line: str, out: Path) -> None:
    tips, n = sweep["suggestions"], len(sweep["lrs"])
    if sweep["stop_reason"] == "nan":
        end = f"stopped at step {sweep['stopped_at'] + 1}: the loss became NaN or infinite (not used)"
    elif sweep["stop_reason"] == "diverged":
        end = (f"stopped at step {sweep['stopped_at'] + 1} (lr {sweep['lrs'][-1]:.3g}): smoothed loss above "
               f"{sweep['diverge_factor']:g}x the best")
    else:
        end = f"ran all {n} steps"
    print(f"  {end}; lowest smoothed loss {sweep['best']:.4f} at lr {tips['minimum']:.3g}")
    print(f"suggested: --lr {tips['steepest']:.3g} (steepest); min/10: {tips['min_over_10']:.3g}")
    print(train_line)
    print(f"wrote {out}/lr_find.png and lr_find.json")
