"""One experiment: load data, train the chosen engines from one initialisation and one batch
order, evaluate them on the test set, and write every output (metrics, report, figures, models).

This is the code behind ``nnscratch compare`` and ``nnscratch train``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from nnscratch.config import RunConfig
from nnscratch.data import Dataset, load_dataset
from nnscratch.engines import make_engine
from nnscratch.errors import UsageError
from nnscratch.io import write_json
from nnscratch.metrics import classification_report
from nnscratch.model_io import save_model
from nnscratch.numpy_engine import initial_state
from nnscratch.spec import ModelSpec
from nnscratch.train import EpochRecord, batch_orders, fit, scale_pixels


@dataclass
class Arrays:
    """The splits, flattened. ``x_val``/``x_test`` are model inputs (scaled to [0, 1], in the run's
    dtype); ``x_train`` stays ``uint8`` pixels, scaled batch by batch as training gathers them
    (see :class:`~nnscratch.train.BatchGatherer`): the same numbers, a quarter of the memory."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def to_features(images: np.ndarray, dtype) -> np.ndarray:
    """``uint8 (N, H, W)`` -> ``(N, H*W)`` floats in ``[0, 1]`` (pixel / 255), C-ordered."""
    pixels = images.reshape(len(images), -1)
    return scale_pixels(pixels, np.empty(pixels.shape, dtype=dtype))


def prepare_arrays(data: Dataset, cfg: RunConfig) -> Arrays:
    n = len(data.train_labels)
    if cfg.train_subset is not None and cfg.train_subset > n:
        raise UsageError(f"--train-subset {cfg.train_subset} is larger than the {n:,} training images")
    keep = slice(0, cfg.train_subset or n)
    dt = cfg.np_dtype.type
    train_pixels = data.train_images[keep].reshape(-1, data.train_images[0].size)
    return Arrays(train_pixels, data.train_labels[keep].astype(np.int64),
                  to_features(data.val_images, dt), data.val_labels.astype(np.int64),
                  to_features(data.test_images, dt), data.test_labels.astype(np.int64))


def seeded_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Two independent streams from one seed: one for the initial weights, one for the batch order."""
    init_seq, order_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(init_seq), np.random.default_rng(order_seq)


def twin_agreement(results: dict) -> dict:
    """How closely the NumPy engine and the torch twin agree (both started from the same weights
    and saw the same batches, so any difference is floating-point rounding)."""
    a, b = (np.asarray(results[e]["history"].step_loss) for e in ("numpy", "torch"))
    sa, sb = results["numpy"]["state"], results["torch"]["state"]
    rel_w = max(float(np.max(np.abs(sa[k].astype(np.float64) - sb[k])) / max(float(np.max(np.abs(sb[k]))), 1e-300))
                for k in sa)
    pa, pb = (results[e]["logits"].argmax(axis=1) for e in ("numpy", "torch"))
    return {"max_abs_step_loss_diff": float(np.max(np.abs(a - b))),
            "max_rel_step_loss_diff": float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))),
            "max_rel_weight_diff": rel_w,
            "test_prediction_agreement": float(np.mean(pa == pb))}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def run_experiment(cfg: RunConfig, out_dir: Path, progress: bool = True,
                   on_epoch: Callable[[str, EpochRecord], None] | None = None,
                   data: Dataset | None = None) -> dict:
    """Train ``cfg.engines`` and write everything into ``out_dir``; return the metrics dict."""
    from nnscratch.report import machine_info, write_figures, write_report

    data = data or load_dataset(cfg.dataset, cfg.data_dir, progress=progress)
    arrays = prepare_arrays(data, cfg)
    spec = ModelSpec(input_dim=arrays.x_train.shape[1], hidden=cfg.hidden, num_classes=len(data.class_names))
    init_rng, order_rng = seeded_generators(cfg.seed)
    initial = initial_state(spec, init_rng)
    orders = batch_orders(order_rng, len(arrays.y_train), cfg.epochs)
    out_dir.mkdir(parents=True, exist_ok=True)

    results: dict = {}
    for name in cfg.engines:
        options = {"jit": True} if cfg.jit and name == "numpy" else {}
        engine = make_engine(name, spec, initial, cfg.lr, cfg.np_dtype, device=cfg.device, **options)
        history = fit(engine, (arrays.x_train, arrays.y_train), (arrays.x_val, arrays.y_val), orders,
                      cfg.batch_size, spec.num_classes, progress=progress, dtype=cfg.np_dtype,
                      on_epoch=(lambda rec, n=name: on_epoch(n, rec)) if on_epoch else None)
        logits = engine.predict_logits(arrays.x_test)
        state = engine.state_dict()
        save_model(out_dir / f"{name}_model.safetensors", state, spec, engine=name, dtype=cfg.dtype,
                   dataset=cfg.dataset, seed=cfg.seed, epochs=cfg.epochs)
        results[name] = {"history": history, "logits": logits, "state": state}

    metrics = {
        "config": cfg.to_dict() | {"model": spec.describe()},
        "dataset": {"name": data.name, "train": int(len(arrays.y_train)), "val": int(len(arrays.y_val)),
                    "test": int(len(arrays.y_test)), "source": str(data.source)},
        "engines": {name: {"test": classification_report(arrays.y_test, r["logits"].argmax(axis=1),
                                                         data.class_names),
                           "train_time_s": r["history"].train_time_s,
                           "wall_time_s": r["history"].wall_time_s,
                           "step_loss": r["history"].step_loss,
                           "history": r["history"].records()}
                    for name, r in results.items()},
        "machine": machine_info(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if "numpy" in results and "torch" in results:
        metrics["twin"] = twin_agreement(results)
    write_json(out_dir / "metrics.json", metrics)
    figures = write_figures(out_dir, metrics, test_images=data.test_images, test_labels=arrays.y_test,
                            probabilities={n: softmax(r["logits"]) for n, r in results.items()},
                            class_names=data.class_names, train_images=data.train_images,
                            train_labels=data.train_labels)
    write_report(out_dir / "report.md", metrics, [Path(f).name for f in figures])
    return metrics
