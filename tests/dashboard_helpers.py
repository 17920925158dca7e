"""Run folders for the dashboard tests, written with the trainer's own event classes and
:class:`~nnscratch.training.sinks.JsonlWriter` (so the format is the one real runs write)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from nnscratch.training.events import Evaluation, EpochEnd, GradientFlow, RunEnd, RunStart, StepEnd
from nnscratch.training.sinks import JsonlWriter

CONFIG = {"dataset": "mnist", "hidden": [16], "activation": "relu", "optimizer": "sgd", "lr": 0.1,
          "batch_size": 32, "epochs": 3, "lr_schedule": "none", "augment": "none"}


def loss_at(engine: str, step: int) -> float:
    """A made-up loss curve; the twin differs by a tiny, step-dependent amount."""
    return 2.3 * math.exp(-step / 40) + 0.1 + (1e-7 * (step % 7) if engine == "torch" else 0.0)


def epoch_events(engine: str, epoch: int, steps_per_epoch: int) -> list:
    first = (epoch - 1) * steps_per_epoch + 1
    events = [StepEnd(engine, k, epoch, loss_at(engine, k), 0.1 / epoch, 32) for k in range(first, first + steps_per_epoch)]
    acc = 0.5 + 0.1 * epoch
    events.append(GradientFlow(engine, epoch, [first], {"0.weight": {"grad_norm": 1.0 / epoch}, "0.bias": {"grad_norm": 0.1 / epoch}},
                               {"0": {"kind": "dense", "mean": 0.0, "std": 1.0}}))
    events.append(Evaluation(engine, epoch, "val", 1.0 / epoch, acc, acc))
    events.append(EpochEnd(engine, {"epoch": epoch, "train_loss": 1.0 / epoch, "train_accuracy": acc - 0.05,
                                    "val_loss": 1.0 / epoch, "val_accuracy": acc, "val_f1": acc, "time_s": 0.1,
                                    "gradient_flow": None}))
    return events


def write_run(folder: Path, epochs: int = 3, steps_per_epoch: int = 50, engines=("numpy", "torch"),
              finished: bool = True) -> Path:
    """A comparison's folder: its metrics.jsonl (both engines in lockstep, as compare writes it)
    and, when ``finished``, a metrics.json and one figure."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = JsonlWriter(folder / "metrics.jsonl", flush_s=0.0)
    for engine in engines:
        writer(RunStart(engine, CONFIG, epochs, steps_per_epoch, 32, 32 * steps_per_epoch))
    for epoch in range(1, epochs + 1):
        for engine in engines:
            for event in epoch_events(engine, epoch, steps_per_epoch):
                writer(event)
    if finished:
        for engine in engines:
            writer(RunEnd(engine, "finished", epochs, epochs * steps_per_epoch))
        (folder / "metrics.json").write_text(json.dumps({"config": CONFIG, "engines": {}}))
        write_png(folder / "numpy_loss_curve.png")
    writer.close()
    return folder


def write_png(path: Path, size: int = 24) -> None:
    from PIL import Image

    Image.new("RGB", (size, size), (200, 30, 30)).save(path)


def write_huge_run(folder: Path, steps: int = 100_000) -> Path:
    """One engine, ``steps`` steps in lines of 1,000 (written directly: fast), a spike at step 77,777."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"kind": "run_start", "engine": "numpy", "config": CONFIG, "epochs": 1,
                            "steps_per_epoch": steps, "batch_size": 32, "train_size": 32 * steps}) + "\n")
        for first in range(1, steps + 1, 1000):
            loss = [9.0 if k == 77_777 else 1.0 + 0.5 * math.sin(k / 500) for k in range(first, first + 1000)]
            f.write(json.dumps({"kind": "steps", "engine": "numpy", "first_step": first, "loss": loss,
                                "lr": [0.01] * 1000}) + "\n")
    return folder


def staging_of(runs_dir: Path, name: str, pid: int | None = None) -> Path:
    """The staging folder of a run NAME being written (with its lock naming ``pid``)."""
    staging = runs_dir / f".{name}.staging-test1234"
    staging.mkdir(parents=True)
    (runs_dir / f".{name}.nnscratch-lock").write_text(f"{pid or os.getpid()}\n")
    return staging
