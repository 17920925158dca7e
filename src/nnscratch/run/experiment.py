"""One experiment: load data, train the chosen engines from one initialisation, one batch order
and one set of dropout masks, evaluate them on the test set, and write every output (metrics,
report, figures, models).

Each step is its own function, in the order :func:`run_experiment` calls them:
:func:`prepare_arrays` -> :func:`plan_run` -> :func:`build_engines` -> :func:`train_engines` ->
:func:`assemble_metrics` -> :func:`write_run_folder` (:func:`write_outputs`, then the commit).
This is the code behind ``nnscratch compare`` and ``nnscratch train`` and the Python API
(:mod:`nnscratch.api`).

The outputs go into a :class:`~nnscratch.files.run_folder.RunFolder`, checked before any work and
put in place whole at the end: a failure leaves the output folder as it was, Ctrl-C or SIGTERM
keeps only the run's checkpoints (if any), marked as interrupted.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

from nnscratch.run.config import RunConfig
from nnscratch.data import Dataset, load_dataset
from nnscratch.data.preprocess import ChannelStats, channel_stats, standardize, to_features
from nnscratch.engines import make_engine
from nnscratch.errors import OutputError, Terminated, UsageError
from nnscratch.files.atomic import write_json
from nnscratch.files.run_folder import RunFolder
from nnscratch.training.metrics import classification_report, softmax
from nnscratch.files.model_files import save_model
from nnscratch.model.registry import dropout_layers, initial_state
from nnscratch.model.spec import ModelSpec
from nnscratch.training.loop import EpochRecord, History, LearningRate, batch_orders, fit, random_streams


@dataclass
class Arrays:
    """The splits, flattened. ``x_val``/``x_test`` are model inputs (scaled to [0, 1], in the run's
    dtype); ``x_train`` stays ``uint8`` pixels, scaled batch by batch as training gathers them
    (see :class:`~nnscratch.training.loop.BatchGatherer`): the same numbers, a quarter of the memory."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    stats: ChannelStats | None = None   # the standardisation, when the run asks for one
    image_shape: tuple[int, ...] = ()

    def train_transform(self):
        """What :func:`~nnscratch.training.loop.fit` applies to each scaled training batch (or None)."""
        if self.stats is None:
            return None
        stats, shape = self.stats, self.image_shape
        return lambda rows: standardize(rows, stats, shape, out=rows)


@dataclass
class RunPlan:
    """What both engines share: the network, its initial state, the batch order, the dropout stream."""

    spec: ModelSpec
    initial: dict[str, np.ndarray]
    orders: list[np.ndarray]
    dropout_seed: np.random.SeedSequence


@dataclass
class EngineResult:
    """One trained engine: its history, test-set logits and final parameters and buffers."""

    history: History
    logits: np.ndarray
    state: dict[str, np.ndarray]


def prepare_arrays(data: Dataset, cfg: RunConfig) -> Arrays:
    """The splits as model inputs: ``cfg.train_subset`` applied, scaled to [0, 1] and, with
    ``cfg.standardize``, standardised per channel with statistics of the training images only."""
    n = len(data.train_labels)
    if cfg.train_subset is not None and cfg.train_subset > n:
        raise UsageError(f"--train-subset {cfg.train_subset} is larger than the {n:,} training images")
    keep = slice(0, cfg.train_subset or n)
    dt = cfg.np_dtype.type
    stats = channel_stats(data.train_images[keep]) if cfg.standardize else None
    train_pixels = data.train_images[keep].reshape(-1, data.train_images[0].size)
    return Arrays(train_pixels, data.train_labels[keep].astype(np.int64),
                  to_features(data.val_images, dt, stats), data.val_labels.astype(np.int64),
                  to_features(data.test_images, dt, stats), data.test_labels.astype(np.int64),
                  stats, tuple(data.image_shape))


def plan_run(cfg: RunConfig, n_train: int, input_dim: int, num_classes: int) -> RunPlan:
    """The spec, initial state, batch orders and dropout stream, all from ``cfg.seed``."""
    spec = cfg.model_spec(input_dim, num_classes)
    if cfg.batch_norm and n_train % cfg.batch_size == 1:
        raise UsageError(f"--batch-norm needs at least 2 samples per batch, but {n_train:,} training images in "
                         f"batches of {cfg.batch_size} leave a last batch of 1: change --batch-size or --train-subset")
    init_rng, order_rng, dropout_seed = random_streams(cfg.seed)
    return RunPlan(spec, initial_state(spec, init_rng, cfg.init), batch_orders(order_rng, n_train, cfg.epochs),
                   dropout_seed)


def build_engines(cfg: RunConfig, plan: RunPlan) -> dict:
    """Every engine of the run, built before any training so that a bad device fails at once.

    In a comparison the torch twin applies the loop's dropout masks; trained alone it uses
    ``nn.Dropout`` and torch's own random stream (seeded with ``cfg.seed``).
    """
    engines = {}
    for name in cfg.engines:
        options: dict = {"label_smoothing": cfg.label_smoothing, "optimizer": cfg.optimizer,
                         "optimizer_options": cfg.optimizer_options(), "l1": cfg.l1, "l2": cfg.l2,
                         "clip_grad_norm": cfg.clip_grad_norm}
        if name == "numpy" and cfg.jit:
            options["jit"] = True
        if name == "torch":
            options["shared_masks"] = "numpy" in cfg.engines
        engines[name] = make_engine(name, plan.spec, plan.initial, cfg.np_dtype, device=cfg.device, **options)
        if name == "torch":
            import torch

            torch.manual_seed(cfg.seed)
    return engines


def train_engines(cfg: RunConfig, plan: RunPlan, engines: dict, arrays: Arrays, progress: bool = True,
                  on_epoch: Callable[[str, EpochRecord], None] | None = None,
                  run_folder: RunFolder | None = None) -> dict[str, EngineResult]:
    """Train each engine in turn on the same batches and masks; evaluate it on the test set.

    ``run_folder`` is the run's output folder (None: nothing is written); checkpoints belong in
    its ``checkpoint_dir``. Not used yet."""
    from nnscratch.training.early_stopping import EarlyStopping

    results = {}
    steps_per_epoch = -(-len(arrays.y_train) // cfg.batch_size)
    for name, engine in engines.items():
        rate = LearningRate(cfg.make_schedule(steps_per_epoch), cfg.schedule_unit())
        stopper = EarlyStopping(cfg.early_stopping, cfg.early_stopping_min_delta) if cfg.early_stopping else None
        history = fit(engine, (arrays.x_train, arrays.y_train), (arrays.x_val, arrays.y_val), plan.orders,
                      cfg.batch_size, plan.spec.num_classes, lr=rate, early_stopping=stopper,
                      dropout=dropout_layers(plan.spec),
                      dropout_seed=plan.dropout_seed, label_smoothing=cfg.label_smoothing, progress=progress,
                      dtype=cfg.np_dtype, transform=arrays.train_transform(),
                      on_epoch=(lambda rec, n=name: on_epoch(n, rec)) if on_epoch else None)
        engine.eval()
        results[name] = EngineResult(history, engine.predict_logits(arrays.x_test), engine.state_dict())
    return results


def twin_agreement(results: dict[str, EngineResult]) -> dict:
    """How closely the NumPy engine and the torch twin agree (both started from the same weights
    and saw the same batches and masks, so any difference is floating-point rounding)."""
    a, b = (np.asarray(results[e].history.step_loss) for e in ("numpy", "torch"))
    n = min(len(a), len(b))  # early stopping may end the twins at different epochs (float32)
    a, b = a[:n], b[:n]
    return {"max_abs_step_loss_diff": float(np.max(np.abs(a - b))),
            "max_rel_step_loss_diff": float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))),
            "max_rel_weight_diff": max_rel_state_diff(results["numpy"].state, results["torch"].state),
            "test_prediction_agreement": float(np.mean(results["numpy"].logits.argmax(axis=1)
                                                       == results["torch"].logits.argmax(axis=1)))}


def max_rel_state_diff(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> float:
    """The largest ``max|a - b| / max|b|`` over the float tensors of two states (counters must be equal).

    A tensor that is zero up to rounding by construction (the bias of a dense layer feeding batch
    norm: its gradient is exactly zero in exact arithmetic) is measured against a millionth of the
    largest tensor's scale instead of its own, or rounding noise would read as a 100 % difference.
    """
    floats = [k for k in sb if np.asarray(sb[k]).dtype.kind == "f"]
    for k in set(sb) - set(floats):
        if not np.array_equal(sa[k], sb[k]):
            return float("inf")
    floor = 1e-6 * max((float(np.max(np.abs(sb[k]))) for k in floats if np.size(sb[k])), default=1.0)
    return max((float(np.max(np.abs(sa[k].astype(np.float64) - sb[k]))) / max(float(np.max(np.abs(sb[k]))), floor)
                for k in floats if np.size(sb[k])), default=0.0)


def assemble_metrics(cfg: RunConfig, plan: RunPlan, data: Dataset, arrays: Arrays,
                     results: dict[str, EngineResult]) -> dict:
    """The ``metrics.json`` dict: resolved config, architecture, data, per-engine results, twin, machine."""
    from nnscratch.report import machine_info

    metrics = {
        "config": cfg.to_dict() | {"model": plan.spec.describe()},
        "architecture": [{"index": i, "kind": kind, "args": args, "parameters": count}
                         for i, kind, args, count in plan.spec.layer_table()],
        "dataset": {"name": data.name, "title": data.title, "class_names": [str(c) for c in data.class_names],
                    "image_shape": list(data.image_shape), "train": int(len(arrays.y_train)),
                    "val": int(len(arrays.y_val)), "test": int(len(arrays.y_test)), "source": str(data.source),
                    "notes": list(data.notes), "split_rule": data.split_rule,
                    "standardization": None if arrays.stats is None else
                    {"mean": arrays.stats.mean.tolist(), "std": arrays.stats.std.tolist()}},
        "engines": {name: {"test": classification_report(arrays.y_test, r.logits.argmax(axis=1), data.class_names),
                           "train_time_s": r.history.train_time_s,
                           "wall_time_s": r.history.wall_time_s,
                           "step_loss": r.history.step_loss,
                           "step_lr": r.history.step_lr,
                           "loss_includes_penalty": bool(cfg.l1 or cfg.l2),
                           "history": r.history.records()}
                          | ({"early_stopping": r.history.early_stopping} if r.history.early_stopping else {})
                    for name, r in results.items()},
        "machine": machine_info(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if "numpy" in results and "torch" in results:
        metrics["twin"] = twin_agreement(results)
    return metrics


def write_outputs(out_dir: Path, cfg: RunConfig, plan: RunPlan, metrics: dict, data: Dataset, arrays: Arrays,
                  results: dict[str, EngineResult]) -> list[Path]:
    """Models, ``metrics.json``, figures and ``report.md`` into ``out_dir`` (each written atomically).

    ``out_dir`` is a run folder's staging folder (see :func:`write_run_folder`): the set becomes
    visible at once, or not at all. A model file the disk refuses is an ``OSError`` naming it,
    like every other file; what matplotlib warns about while drawing is one line of ours
    (:func:`figure_warnings`)."""
    from nnscratch.report import write_figures, write_report

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [_save_model(out_dir / f"{name}_model.safetensors", r.state, plan.spec, engine=name, dtype=cfg.dtype,
                           dataset=data.name, data_options=cfg.data_options(), epochs=len(r.history.epochs),
                           seed=cfg.seed,
                           standardization=metrics["dataset"]["standardization"])
               for name, r in results.items()]
    written.append(write_json(out_dir / "metrics.json", metrics))
    with figure_warnings():
        figures = write_figures(out_dir, metrics, test_images=data.test_images, test_labels=arrays.y_test,
                                probabilities={n: softmax(r.logits) for n, r in results.items()},
                                class_names=data.class_names, train_images=data.train_images,
                                train_labels=data.train_labels)
    written += [Path(f) for f in figures]
    written.append(write_report(out_dir / "report.md", metrics, [Path(f).name for f in figures]))
    return written


def _save_model(path: Path, *args, **kwargs) -> Path:
    """:func:`~nnscratch.files.model_files.save_model`, with safetensors' own error for a failing
    write (``SafetensorError: ... No space left on device``) turned into the ``OSError`` it is."""
    from safetensors import SafetensorError

    try:
        return save_model(path, *args, **kwargs)
    except SafetensorError as exc:
        if "IoError" not in str(exc):
            raise
        code = re.search(r"code: (\d+)", str(exc))
        number = int(code.group(1)) if code else 5  # EIO: an input/output error of some kind
        raise OSError(number, os.strerror(number), str(path)) from exc


@contextlib.contextmanager
def figure_warnings() -> Iterator[None]:
    """Library warnings while drawing figures, as one line of ours on stderr (none reach the user
    raw). The usual one: a class name with characters the figures' font lacks (drawn as boxes)."""
    from nnscratch.data.common import warn

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    messages = [str(w.message) for w in caught]
    glyphs = sorted({chr(int(m.group(1))) for m in map(re.compile(r"Glyph (\d+)").match, messages) if m})
    others = [m for m in dict.fromkeys(messages) if not re.match(r"Glyph \d+", m)]
    if glyphs:
        warn(f"the figures' font lacks {len(glyphs)} character(s) of the class names ({''.join(glyphs[:10])}"
             f"{'...' if len(glyphs) > 10 else ''}): they are drawn as boxes; report.md has the names whole")
    if others:
        first = " ".join(others[0].split())
        more = f" (and {len(others) - 1} more)" if len(others) > 1 else ""
        warn(f"while drawing the figures: {first[:200]}{more}")


def default_resume_hint(checkpoints: Path) -> str:
    """What an interrupted run's ``INTERRUPTED.md`` says about resuming, when the caller knows no command."""
    return f"the checkpoints in {checkpoints} (this version has no resume command yet)"


def protected_paths(cfg: RunConfig) -> list[Path]:
    """What the run reads and its outputs must keep away from: the folder or file of a
    ``folder:``/``csv:``/``npz:`` dataset (an output folder inside a ``folder:`` dataset would
    make the next run train on its own figures)."""
    from nnscratch.data.datasets import CUSTOM_KINDS

    kind, sep, target = cfg.dataset.partition(":")
    return [Path(target).expanduser()] if sep and kind in CUSTOM_KINDS and target else []


def open_run_folder(cfg: RunConfig, out: str | os.PathLike | RunFolder | None, overwrite: bool = False,
                    names: Mapping[str, str] | None = None) -> RunFolder | None:
    """The run folder of ``out`` for a run of ``cfg``, checked now (None when ``out`` is None; a
    RunFolder is used as it is)."""
    if out is None or isinstance(out, RunFolder):
        return out
    return RunFolder(out, overwrite=overwrite, protected=protected_paths(cfg), names=names)


def write_run_folder(folder: RunFolder, cfg: RunConfig, plan: RunPlan, metrics: dict, data: Dataset,
                     arrays: Arrays, results: dict[str, EngineResult]) -> Path:
    """:func:`write_outputs` into ``folder``'s staging folder, then put it in place whole
    (:meth:`RunFolder.commit`). A write the disk refuses is an :class:`~nnscratch.errors.OutputError`
    naming the file; the run folder is then left as it was."""
    try:
        write_outputs(folder.staging, cfg, plan, metrics, data, arrays, results)
        return folder.commit()
    except OSError as exc:
        folder.abort()
        name = Path(exc.filename).name if exc.filename else "the outputs"
        raise OutputError(f"cannot write the run into {folder.out}: {exc.strerror or exc} (writing {name}); "
                          f"nothing of this run was kept, {folder.out} is as it was") from None


def check_out_dir(out_dir: Path, flag: str = "--out") -> None:
    """Prove now, before any work, that ``out_dir`` can be created and written, leaving nothing
    behind: an existing folder gets a probe file (removed at once); a new one, a probe folder in
    its nearest existing parent (removed at once). For single files such as ``evaluate --json``;
    a run's folder is checked by :class:`~nnscratch.files.run_folder.RunFolder`."""
    out_dir = Path(out_dir)
    existing = out_dir
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, f"{existing} is a file, not a folder")
        if existing == out_dir:
            probe = tempfile.NamedTemporaryFile(dir=out_dir, prefix=".nnscratch-probe-")
            probe.close()
        else:
            os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".nnscratch-probe-"))
    except OSError as exc:
        raise UsageError(f"{flag} {out_dir} cannot be written ({exc.strerror or exc}); "
                         "choose a folder you can write to") from None


def check_engines(cfg: RunConfig) -> None:
    """Everything the engines need, before any data is read: torch and its device, numba for --jit."""
    from nnscratch.engines import no_cuda_device, torch_available

    if "torch" in cfg.engines:
        if cfg.device == "cuda" and no_cuda_device():  # answered without importing torch (seconds)
            raise UsageError("--device cuda: this machine has no NVIDIA GPU driver; use --device cpu or auto")
        if not torch_available():
            raise UsageError("the torch engine needs PyTorch: pip install torch==2.13.0 "
                             "then pip install 'nnscratch[torch]'")
        from nnscratch.torch_engine import resolve_device

        resolve_device(cfg.device)
    elif cfg.device == "cuda":
        raise UsageError("--device cuda applies to the torch engine; the NumPy engine runs on the CPU")
    if cfg.jit:
        if "numpy" not in cfg.engines:
            raise UsageError("--jit applies to the NumPy engine only")
        try:
            import numba  # noqa: F401
        except ImportError:
            raise UsageError("--jit needs numba: pip install 'nnscratch[bench]' (or run without --jit)") from None


def run_experiment(cfg: RunConfig, out_dir: str | os.PathLike | RunFolder | None, progress: bool = True,
                   on_epoch: Callable[[str, EpochRecord], None] | None = None,
                   data: Dataset | None = None, *, overwrite: bool = False,
                   resume_hint: Callable[[Path], str] = default_resume_hint) -> tuple[dict, dict[str, EngineResult]]:
    """Train ``cfg.engines`` and, unless ``out_dir`` is None, write everything into it.

    ``out_dir`` is a folder (checked at once; a finished run there is replaced with
    ``overwrite`` only) or a :class:`RunFolder` (already checked, perhaps already entered).
    Everything is written into its staging folder and put in place at the end; an exception
    leaves ``out_dir`` as it was, Ctrl-C (``KeyboardInterrupt``) or SIGTERM
    (:class:`~nnscratch.errors.Terminated`) keeps the run's checkpoints, if any, with
    ``resume_hint(checkpoint folder)`` in its ``INTERRUPTED.md`` (:meth:`RunFolder.interrupt`),
    and the exception goes on.

    Returns the ``metrics.json`` dict and each engine's :class:`EngineResult`.
    """
    folder = open_run_folder(cfg, out_dir, overwrite)
    with contextlib.nullcontext() if folder is None or folder.locked else folder:
        try:
            check_engines(cfg)
            data = data or load_dataset(cfg.dataset, cfg.data_dir, progress=progress, **cfg.data_options())
            arrays = prepare_arrays(data, cfg)
            plan = plan_run(cfg, len(arrays.y_train), arrays.x_train.shape[1], len(data.class_names))
            engines = build_engines(cfg, plan)
            results = train_engines(cfg, plan, engines, arrays, progress, on_epoch, run_folder=folder)
            metrics = assemble_metrics(cfg, plan, data, arrays, results)
            if folder is not None:
                write_run_folder(folder, cfg, plan, metrics, data, arrays, results)
        except (KeyboardInterrupt, Terminated):
            if folder is not None:
                folder.interrupt(resume_hint)
            raise
        except BaseException:
            if folder is not None:
                folder.abort()
            raise
    return metrics, results
