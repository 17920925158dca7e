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
from nnscratch.data.common import note
from nnscratch.data.preprocess import ChannelStats, channel_stats, scale_pixels, standardize, to_features
from nnscratch.engines import make_engine
from nnscratch.errors import DataError, OutputError, RunInterrupted, Terminated, UsageError, clear_pending_stops
from nnscratch.files.atomic import write_json
from nnscratch.files.run_folder import RunFolder
from nnscratch.training.metrics import classification_report, softmax
from nnscratch.files.model_files import save_model
from nnscratch.model.footprint import check_memory
from nnscratch.model.registry import dropout_layers, initial_state
from nnscratch.model.spec import ModelSpec
from nnscratch.training.loop import EpochRecord, History, ScheduleCursor
from nnscratch.run.finetune import Transfer, start_from
from nnscratch.training import distributed
from nnscratch.training.streams import init_rng


@dataclass
class SplitArrays:
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
    """What both engines share: the network and its initial state. (The batch orders and dropout
    masks are keyed by ``cfg.seed``: :mod:`nnscratch.training.streams`.) ``transfer`` says what a
    fine-tuning run took from its source model (None otherwise)."""

    spec: ModelSpec
    initial: dict[str, np.ndarray]
    transfer: Transfer | None = None


@dataclass
class EngineResult:
    """One trained engine: its history, test-set logits and final parameters and buffers."""

    history: History
    logits: np.ndarray
    state: dict[str, np.ndarray]


def prepare_arrays(data: Dataset, cfg: RunConfig) -> SplitArrays:
    """The splits as model inputs: ``cfg.train_subset`` applied, scaled to [0, 1] and, with
    ``cfg.standardize``, standardised per channel with statistics of the training images only."""
    n = len(data.train_labels)
    if cfg.train_subset is not None and cfg.train_subset > n:
        raise UsageError(f"--train-subset {cfg.train_subset} is larger than the {n:,} training images")
    keep = slice(0, cfg.train_subset or n)
    dt = cfg.np_dtype.type
    stats = channel_stats(data.train_images[keep]) if cfg.standardize else None
    train_pixels = data.train_images[keep].reshape(-1, data.train_images[0].size)
    return SplitArrays(train_pixels, data.train_labels[keep].astype(np.int64),
                  to_features(data.val_images, dt, stats), data.val_labels.astype(np.int64),
                  to_features(data.test_images, dt, stats), data.test_labels.astype(np.int64),
                  stats, tuple(data.image_shape))


def plan_run(cfg: RunConfig, n_train: int, input_dim: int, num_classes: int) -> RunPlan:
    """The spec and initial state (drawn from ``cfg.seed``'s init stream; with ``cfg.finetune_from``,
    the source model's tensors put over it: :func:`nnscratch.run.finetune.start_from`)."""
    spec = cfg.model_spec(input_dim, num_classes)
    check_memory(spec, cfg.np_dtype.itemsize, min(cfg.batch_size, n_train), len(cfg.engines),
                 fix="choose smaller --hidden layers or a smaller --batch-size")
    if cfg.batch_norm and n_train % cfg.batch_size == 1:
        raise UsageError(f"--batch-norm needs at least 2 samples per batch, but {n_train:,} training images in "
                         f"batches of {cfg.batch_size} leave a last batch of 1: change --batch-size or --train-subset")
    if distributed.active() is not None:
        distributed.check_shards(n_train, cfg.batch_size, distributed.active().world_size)
    initial = initial_state(spec, init_rng(cfg.seed), cfg.init)
    if not cfg.finetune_from:
        return RunPlan(spec, initial)
    return RunPlan(spec, *start_from(cfg.finetune_from, spec, initial, cfg.reset_head))


def build_engines(cfg: RunConfig, plan: RunPlan) -> dict:
    """Every engine of the run, built before any training so that a bad device fails at once.

    The torch twin always applies the loop's dropout masks (keyed by the seed, see
    :mod:`nnscratch.training.streams`): torch's own random stream is never used, so a run of it
    alone can be resumed bit for bit too.
    """
    engines = {}
    for name in cfg.engines:
        options: dict = {"label_smoothing": cfg.label_smoothing, "optimizer": cfg.optimizer,
                         "optimizer_options": cfg.optimizer_options(), "l1": cfg.l1, "l2": cfg.l2,
                         "clip_grad_norm": cfg.clip_grad_norm, "freeze": cfg.freeze, "max_norm": cfg.max_norm,
                         "precision": cfg.precision}
        if name == "numpy" and cfg.jit:
            options["jit"] = True
        if name == "torch":
            options["shared_masks"] = True
        if distributed.active() is not None:  # one rank of a data-parallel run (--distributed)
            options["communicator"] = distributed.active()
        engines[name] = make_engine(name, plan.spec, plan.initial, cfg.np_dtype, device=cfg.device, **options)
    return engines


def train_engines(cfg: RunConfig, plan: RunPlan, engines: dict, arrays: SplitArrays, progress: bool = True,
                  on_epoch: Callable[[str, EpochRecord], None] | None = None, *, sinks: tuple = (),
                  checkpoints: Path | None = None, meta: dict[str, str] | None = None,
                  resume: dict | None = None) -> dict[str, EngineResult]:
    """Train the engines on the same batches and masks, epoch by epoch in turn; evaluate them on the test set.

    Each engine gets a :class:`~nnscratch.training.trainer.Trainer` whose events go to ``sinks``
    (and to a progress bar and ``on_epoch``). With ``checkpoints`` (a folder) each trainer writes
    its checkpoints there (``checkpoints/<engine>/`` in a comparison), ``meta`` being the run's
    metadata strings; ``resume`` maps engines to the :class:`~nnscratch.files.checkpoint.Checkpoint`
    each continues from. Ctrl-C/SIGTERM raise :class:`~nnscratch.errors.RunInterrupted` after the
    step in flight and its checkpoint (the other engine's ``last`` checkpoint is that of the epoch it
    had finished).
    """
    from nnscratch.training.interrupts import StopRequest, stop_on_signals

    with stop_on_signals(stop := StopRequest()):
        return _train_each(cfg, plan, engines, arrays, progress, on_epoch, sinks, checkpoints, meta, resume, stop)


def _train_each(cfg, plan, engines, arrays, progress, on_epoch, sinks, checkpoints, meta, resume, stop):
    """:func:`train_engines`' loop, under its signal handling (``stop``): one engine alone, or
    several epoch by epoch in turn (:func:`~nnscratch.training.trainer.run_in_lockstep`: numpy 1,
    torch 1, numpy 2, ...), so that a live view (``metrics.jsonl``, the dashboard) shows both
    curves growing together, and an augmented epoch is computed once for all of them. Each
    trainer clocks its own epochs only, so each engine's time is its own."""
    from nnscratch.training.trainer import run_in_lockstep

    augment = augmented_batches(cfg, arrays, share=len(engines) > 1)
    trainers = {name: _trainer(cfg, plan, name, engine, arrays, progress, on_epoch, sinks, checkpoints, meta,
                               tuple(engines), augment) for name, engine in engines.items()}
    for name, trainer in trainers.items():
        if resume and resume.get(name) is not None:
            checkpoint = resume[name]
            try:
                trainer.load_state(checkpoint.tensors, checkpoint.trainer)
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{checkpoint.path}: cannot resume from it ({exc})") from None
    if len(trainers) > 1:  # a comparison: both curves (and their divergence) grow together
        run_in_lockstep(list(trainers.values()), stop)
    else:
        for name, trainer in trainers.items():
            if stop.signum is not None:  # asked before the run started: nothing to keep
                raise RunInterrupted(stop.signum, name)
            stop.trainer = trainer
            trainer.run()
            if stop.signum is not None:  # asked once the run's last step was done: honoured all the same
                raise RunInterrupted(stop.signum, name, trainer.last_checkpoint)
    results = {}
    for name, engine in engines.items():
        engine.eval()
        results[name] = EngineResult(trainers[name].history, engine.predict_logits(arrays.x_test), engine.state_dict())
    return results


def augmented_batches(cfg: RunConfig, arrays: SplitArrays, share: bool = False):
    """The run's :class:`~nnscratch.training.augmented.AugmentedBatches` (None without
    augmentation); ``share``: one epoch memo for several engines."""
    from nnscratch.data.augment import parse_augment
    from nnscratch.training.augmented import AugmentedBatches, prefetch_plan

    augmentation = parse_augment(cfg.augment, cfg.dataset)
    if not augmentation.active:
        return None
    prefetch, engine_threads = prefetch_plan(cfg.threads)
    return AugmentedBatches(arrays.x_train, arrays.image_shape, augmentation, cfg.seed,
                            min(cfg.batch_size, len(arrays.y_train)), share=share,
                            prefetch=prefetch, engine_threads=engine_threads)


def check_augment(cfg: RunConfig, image_shape: tuple[int, ...]) -> None:
    """``cfg.augment`` can work on images of ``image_shape`` (or a one-line error naming the flag)."""
    from nnscratch.data.augment import parse_augment
    from nnscratch.errors import ParameterError

    try:
        parse_augment(cfg.augment, cfg.dataset).check_images(tuple(image_shape))
    except ParameterError as exc:
        raise UsageError(f"--augment {exc.problem}") from None


def _trainer(cfg, plan, name, engine, arrays, progress, on_epoch, sinks, checkpoints, meta, names, augment):
    """The :class:`~nnscratch.training.trainer.Trainer` of one engine of the run."""
    from nnscratch.files.checkpoint import CheckpointWriter, checkpoint_folder
    from nnscratch.training.early_stopping import EarlyStopping
    from nnscratch.training.sinks import EpochLines, ProgressBar
    from nnscratch.training.trainer import Trainer

    steps_per_epoch = -(-len(arrays.y_train) // cfg.batch_size)
    writer = None
    if checkpoints is not None and cfg.checkpoints:
        writer = CheckpointWriter(checkpoint_folder(checkpoints, name, names), meta or {},
                                  every_epochs=cfg.checkpoint_every, every_steps=cfg.checkpoint_every_steps,
                                  keep=cfg.keep_checkpoints)
    engine_sinks = [*sinks, *([ProgressBar()] if progress else []),
                    *([EpochLines(lambda n, r: on_epoch(n, EpochRecord(**r)))] if on_epoch else [])]
    return Trainer(engine, (arrays.x_train, arrays.y_train), (arrays.x_val, arrays.y_val), seed=cfg.seed,
                   epochs=cfg.epochs, batch_size=cfg.batch_size, num_classes=plan.spec.num_classes,
                   schedule=ScheduleCursor(cfg.make_schedule(steps_per_epoch), cfg.schedule_unit()),
                   early_stopping=EarlyStopping(cfg.early_stopping, cfg.early_stopping_min_delta)
                   if cfg.early_stopping else None,
                   dropout=dropout_layers(plan.spec), label_smoothing=cfg.label_smoothing, dtype=cfg.np_dtype,
                   transform=arrays.train_transform(), sinks=engine_sinks, checkpoints=writer,
                   config=cfg.to_dict(), gradient_flow=cfg.gradient_flow_samples if cfg.gradient_flow else 0,
                   augment=augment)


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


def assemble_metrics(cfg: RunConfig, plan: RunPlan, data: Dataset, arrays: SplitArrays,
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
    if plan.transfer is not None:
        metrics["finetune"] = plan.transfer.to_dict()
    if distributed.active() is not None:  # --distributed (docs/distributed.md)
        comm = distributed.active()
        metrics["data_parallel"] = {"processes": comm.world_size, "backend": comm.backend}
    if "numpy" in results and "torch" in results:
        metrics["twin"] = twin_agreement(results)
    return metrics


#: The most training rows the plain PyTorch loop preloads (a step's cost does not depend on which),
#: and the most bytes they may take (large images: fewer rows, at least one batch).
PLAIN_TORCH_ROWS, PLAIN_TORCH_BYTES = 8192, 64 * 2 ** 20


def plain_torch_skipped(cfg: RunConfig, resume: dict | None) -> str | None:
    """Why a run with the torch twin gets no "PyTorch's own loop" figure (None: it gets one)."""
    from nnscratch.data.augment import parse_augment

    if distributed.active() is not None:
        return "a data-parallel run"
    if resume:
        return "a resumed run (its time spans sessions)"
    if parse_augment(cfg.augment, cfg.dataset).active:
        return "an augmented run (the plain loop does not augment)"
    return None


def plain_torch_figure(cfg: RunConfig, plan: RunPlan, arrays: SplitArrays, twin: EngineResult) -> dict:
    """PyTorch at its best on this run's work, beside the twin's time: a plain loop
    (:func:`~nnscratch.torch_engine.plain_loop.time_plain_loop`), measured after training, for at
    most as many steps as the twin made (after its warm-up). Returns ``{"step_s", "steps",
    "batch_size", "twin_step_s", "twin_steps", "recorded_steps", "estimated_train_time_s"}``: the
    last is the plain loop's step time times the twin's steps; ``recorded_steps`` the twin's steps
    that also recorded the gradient flow (slower ones)."""
    from nnscratch.torch_engine.plain_loop import MAX_STEPS, time_plain_loop

    n_steps = max(1, len(twin.history.step_loss))
    row_bytes = arrays.x_train.shape[1] * cfg.np_dtype.itemsize
    m = min(len(arrays.y_train), max(cfg.batch_size, min(PLAIN_TORCH_ROWS, PLAIN_TORCH_BYTES // row_bytes)))
    rows = scale_pixels(arrays.x_train[:m], np.empty((m, arrays.x_train.shape[1]), dtype=cfg.np_dtype))
    transform = arrays.train_transform()
    if transform is not None:
        transform(rows)
    figure = time_plain_loop(plan.spec, plan.initial, rows, arrays.y_train[:m], batch_size=cfg.batch_size,
                             lr=cfg.lr, dtype=cfg.np_dtype, max_steps=min(MAX_STEPS, n_steps), seed=cfg.seed,
                             device=cfg.device, label_smoothing=cfg.label_smoothing, optimizer=cfg.optimizer,
                             optimizer_options=cfg.optimizer_options(), l1=cfg.l1, l2=cfg.l2,
                             clip_grad_norm=cfg.clip_grad_norm, freeze=cfg.freeze, max_norm=cfg.max_norm,
                             precision=cfg.precision)
    steps_per_epoch = -(-len(arrays.y_train) // cfg.batch_size)
    recorded = (min(cfg.gradient_flow_samples, steps_per_epoch) * len(twin.history.records())
                if cfg.gradient_flow else 0)
    return figure | {"twin_step_s": twin.history.train_time_s / n_steps, "twin_steps": n_steps,
                     "recorded_steps": min(recorded, n_steps), "estimated_train_time_s": figure["step_s"] * n_steps}


def add_plain_torch(metrics: dict, cfg: RunConfig, plan: RunPlan, arrays: SplitArrays,
                    results: dict[str, EngineResult], resume: dict | None) -> None:
    """``metrics["engines"]["torch"]["plain_torch"]`` (:func:`plain_torch_figure`) when the run
    trained the twin and nothing in :func:`plain_torch_skipped` applies (else, with the twin,
    ``plain_torch_skipped``: the reason). The run is trained
    already: a failure here, or Ctrl-C / SIGTERM during it, only leaves the figure out (one note
    on stderr), the outputs are written all the same."""
    if "torch" not in results:
        return
    skipped = plain_torch_skipped(cfg, resume)
    if skipped:  # said in the report, beside the twin's time
        metrics["engines"]["torch"]["plain_torch_skipped"] = skipped
        return
    try:
        metrics["engines"]["torch"]["plain_torch"] = plain_torch_figure(cfg, plan, arrays, results["torch"])
    except (KeyboardInterrupt, Terminated):
        clear_pending_stops()  # acted on: the run goes on to write its outputs
        note("stopped while timing PyTorch's own loop beside the twin: the report leaves it out; "
             "writing the trained run")
    except Exception as exc:  # noqa: BLE001 - a figure for the report: never lose the trained run
        note(f"PyTorch's own loop could not be timed beside the twin ({type(exc).__name__}: {exc}); "
             "the report leaves it out")


def write_outputs(out_dir: Path, cfg: RunConfig, plan: RunPlan, metrics: dict, data: Dataset, arrays: SplitArrays,
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


def protected_paths(cfg: RunConfig) -> list[Path]:
    """What the run reads and its outputs must keep away from: the folder or file of a
    ``folder:``/``csv:``/``npz:`` dataset (an output folder inside a ``folder:`` dataset would
    make the next run train on its own figures)."""
    return dataset_paths(cfg.dataset)


def dataset_paths(dataset: str) -> list[Path]:
    """The folder or file a ``folder:``/``csv:``/``npz:`` dataset name reads (none for a built-in one)."""
    from nnscratch.data.datasets import CUSTOM_KINDS

    kind, sep, target = dataset.partition(":")
    return [Path(target).expanduser()] if sep and kind in CUSTOM_KINDS and target else []


def open_run_folder(cfg: RunConfig, out: str | os.PathLike | RunFolder | None, overwrite: bool = False,
                    names: Mapping[str, str] | None = None) -> RunFolder | None:
    """The run folder of ``out`` for a run of ``cfg``, checked now (None when ``out`` is None; a
    RunFolder is used as it is)."""
    if out is None or isinstance(out, RunFolder):
        return out
    return RunFolder(out, overwrite=overwrite, protected=protected_paths(cfg), names=names)


def write_run_folder(folder: RunFolder, cfg: RunConfig, plan: RunPlan, metrics: dict, data: Dataset,
                     arrays: SplitArrays, results: dict[str, EngineResult]) -> Path:
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


def check_output_file(path: str | os.PathLike, flag: str, example: str, inputs: tuple = ()) -> None:
    """An output file named by ``flag`` (``--json``, ``OUT``...), checked before any work: not a
    folder (the line suggests ``path/example``), its folder writable (:func:`check_out_dir`), and
    not one of ``inputs`` (the files the command reads: writing the result over its own input
    would destroy it). A link is followed; a stream (``/dev/stdout``, a pipe) is written into."""
    from nnscratch.files.atomic import write_target

    target, in_place = write_target(path)
    if target.is_dir():
        raise UsageError(f"{flag} {path} is a folder; pass a file name such as {Path(path) / example}")
    for given in inputs:
        if not in_place and given is not None and _same_file(target, Path(given)):
            raise UsageError(f"{flag} {path} is the file this command reads ({given}); write the output to "
                             "another file")
    if not in_place:
        check_out_dir(target.parent, flag=flag)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_tensorboard(cfg: RunConfig, out: str | os.PathLike | None = None) -> None:
    """``--tensorboard DIR`` can be used, checked before any work: tensorboardX is installed, DIR
    (created if needed) can be written and is not a file, nor inside the run folder ``out``
    (which is put in place whole at the end: logs written inside it would be lost)."""
    if cfg.tensorboard is None:
        return
    from nnscratch.training.tensorboard_sink import require_tensorboardx

    require_tensorboardx()
    logdir = Path(cfg.tensorboard).expanduser()
    if logdir.exists() and not logdir.is_dir():
        raise UsageError(f"--tensorboard {cfg.tensorboard} is a file, not a folder; "
                         "choose a folder for the TensorBoard logs")
    if out is not None:
        real, run = Path(os.path.realpath(logdir)), Path(os.path.realpath(out))
        if real == run or run in real.parents:
            raise UsageError(f"--tensorboard {cfg.tensorboard} is inside the run folder {out}, which is replaced "
                             "whole at the end; choose a folder outside it, such as runs/tensorboard")
    for engine in cfg.engines:
        if (logdir / engine).exists() and not (logdir / engine).is_dir():
            raise UsageError(f"--tensorboard {cfg.tensorboard}: {logdir / engine} is a file, but the {engine} "
                             "engine's logs go into a folder of that name; move it or choose another folder")
    check_out_dir(logdir, flag="--tensorboard")


def check_engines(cfg: RunConfig) -> None:
    """Everything the engines need, before any data is read: torch and its device, numba for --jit."""
    from nnscratch.engines import no_cuda_device, require_numba, require_torch

    if "torch" in cfg.engines:
        if cfg.device == "cuda" and no_cuda_device():  # answered without importing torch (seconds)
            raise UsageError("--device cuda: this machine has no NVIDIA GPU driver; use --device cpu or auto")
        require_torch()
        from nnscratch.torch_engine import resolve_device

        resolve_device(cfg.device)
    if "numpy" in cfg.engines and cfg.device == "cuda":  # a GPU and CuPy, or one line saying which is missing
        if no_cuda_device():
            raise UsageError("--engine numpy --device cuda: this machine has no NVIDIA GPU driver; use --device cpu")
        from nnscratch.numpy_engine.backend import cupy_backend

        cupy_backend()
    if cfg.jit:
        if "numpy" not in cfg.engines:
            raise UsageError("--jit applies to the NumPy engine only")
        require_numba()


def data_facts(data: Dataset, arrays: SplitArrays) -> dict:
    """What a checkpoint records of the data it was trained on (checked again on resume)."""
    return {"dataset": data.name, "train": int(len(arrays.y_train)), "val": int(len(arrays.y_val)),
            "input_dim": int(arrays.x_train.shape[1]), "class_names": [str(c) for c in data.class_names],
            "standardization": None if arrays.stats is None else
            {"mean": arrays.stats.mean.tolist(), "std": arrays.stats.std.tolist()}}


def run_experiment(cfg: RunConfig, out_dir: str | os.PathLike | RunFolder | None, progress: bool = True,
                   on_epoch: Callable[[str, EpochRecord], None] | None = None,
                   data: Dataset | None = None, *, overwrite: bool = False,
                   resume: dict | None = None) -> tuple[dict, dict[str, EngineResult]]:
    """Train ``cfg.engines`` and, unless ``out_dir`` is None, write everything into it.

    ``out_dir`` is a folder (checked at once; a finished run there is replaced with
    ``overwrite`` only) or a :class:`RunFolder` (already checked, perhaps already entered).
    Everything is written into its staging folder and put in place at the end: ``metrics.jsonl``
    (every event, as it happens) and the checkpoints (``checkpoints/``, unless ``cfg.checkpoints``
    is off) while the run trains, the rest after. With ``cfg.tensorboard``, TensorBoard logs go
    to that folder as the run trains (:mod:`nnscratch.training.tensorboard_sink`), with or
    without ``out``. ``resume`` maps engines to the checkpoints they
    continue from (:func:`nnscratch.run.resume.load_checkpoints`).

    An exception leaves ``out_dir`` as it was. Ctrl-C or SIGTERM during training
    (:class:`~nnscratch.errors.RunInterrupted`, after the step in flight and its checkpoint),
    before it (``KeyboardInterrupt``, :class:`~nnscratch.errors.Terminated`) or a checkpoint the
    disk refused keep the run's checkpoints, if any, with the command that resumes them in
    ``INTERRUPTED.md`` (:meth:`RunFolder.interrupt`); the exception goes on, a ``RunInterrupted``
    naming the checkpoint where it now is and that command (``.command``).

    Returns the ``metrics.json`` dict and each engine's :class:`EngineResult`.
    """
    from nnscratch.files.checkpoint import CheckpointWriteError, run_meta
    from nnscratch.run.resume import carry_over, check_fits, resume_command
    from nnscratch.training.sinks import JsonlWriter

    folder = open_run_folder(cfg, out_dir, overwrite)
    with contextlib.nullcontext() if folder is None or folder.locked else folder:
        try:
            check_engines(cfg)
            check_tensorboard(cfg, folder.out if folder is not None else None)
            data = data or load_dataset(cfg.dataset, cfg.data_dir, progress=progress, **cfg.data_options())
            if data.deskewed != cfg.deskew:   # a Dataset given by the caller, loaded with other options
                raise UsageError(f"the dataset given was loaded {'with' if data.deskewed else 'without'} deskew=True "
                                 f"and the settings say deskew={cfg.deskew}: load it as the settings say")
            arrays = prepare_arrays(data, cfg)
            check_augment(cfg, arrays.image_shape)
            facts = data_facts(data, arrays)
            for checkpoint in (resume or {}).values():  # before the settings' network is built
                if checkpoint is not None:
                    check_fits(checkpoint, cfg.model_spec(arrays.x_train.shape[1], len(data.class_names)), facts)
            plan = plan_run(cfg, len(arrays.y_train), arrays.x_train.shape[1], len(data.class_names))
            if plan.transfer is not None:
                note(plan.transfer.line())
            engines = build_engines(cfg, plan)
            if resume and folder is not None:  # the run so far comes along into the new folder
                carry_over(resume, folder.checkpoint_dir, folder.staging, cfg.engines)
            sinks = [JsonlWriter(folder.staging / "metrics.jsonl")] if folder is not None else []
            if cfg.tensorboard is not None:
                from nnscratch.training.tensorboard_sink import TensorBoardWriter

                sinks.append(TensorBoardWriter(Path(cfg.tensorboard).expanduser(), plan.spec, arrays.image_shape))
            meta = run_meta(plan.spec, cfg.to_dict(), {**facts, "data_options": cfg.data_options()})
            try:
                results = train_engines(cfg, plan, engines, arrays, progress, on_epoch, sinks=tuple(sinks),
                                        checkpoints=folder.checkpoint_dir if folder is not None else None,
                                        meta=meta, resume=resume)
            finally:
                for sink in sinks:
                    sink.close()
            metrics = assemble_metrics(cfg, plan, data, arrays, results)
            engines = None  # the trained engines' memory back before another model is built (results keep copies)
            add_plain_torch(metrics, cfg, plan, arrays, results, resume)
            if folder is not None:
                write_run_folder(folder, cfg, plan, metrics, data, arrays, results)
        except (KeyboardInterrupt, Terminated, RunInterrupted, CheckpointWriteError) as stop:
            if folder is not None:
                staging = folder.staging
                kept = folder.interrupt(lambda ck: resume_command(cfg.engines, ck))
                if isinstance(stop, RunInterrupted) and kept is not None:
                    if stop.checkpoint:
                        stop.checkpoint = str(kept / Path(stop.checkpoint).relative_to(staging))
                    stop.command = resume_command(cfg.engines, kept / "checkpoints")
            raise
        except BaseException:
            if folder is not None:
                folder.abort()
            raise
    return metrics, results
