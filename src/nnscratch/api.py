"""The Python API: build a run configuration, train one engine or both twins, get plain data back.

The same runs as ``nnscratch train`` and ``nnscratch compare`` (both call
:func:`nnscratch.run.experiment.run_experiment`), for notebooks and scripts::

    from nnscratch import api

    run = api.compare(epochs=1, train_subset=2000, dtype="float64")  # or api.train(engine="numpy")
    run.test["numpy"]["accuracy"], run.twin["max_rel_step_loss_diff"]
    run.history["torch"]["epochs"][-1]["val_loss"]
    probs = run.predict(images)              # (N, C) probabilities from uint8 images (N, H, W, C)
    api.write_report(run, "runs/notebook")   # metrics.json, report.md, figures, models
    api.compare(epochs=3, tensorboard="runs/tb")  # also TensorBoard logs: runs/tb/numpy, runs/tb/torch

Settings are the keys of :class:`~nnscratch.run.config.RunConfig` (every ``--flag`` of the command
line, ``_`` for ``-``); a TOML file gives a base that keyword settings override, as flags override
it on the command line. What comes back is plain Python (lists, dicts, floats) except the model
weights, which are NumPy arrays. Mistakes raise :class:`~nnscratch.errors.UsageError` (a bad
setting) or :class:`~nnscratch.errors.DataError` (data missing or corrupt), with the one-line
message the command line prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from nnscratch.run.config import _FLOAT_KEYS, _OTHER_NAMES, CONFIG_KEYS, RunConfig, resolve_config
from nnscratch.data import Dataset, load_dataset
from nnscratch.data.preprocess import model_inputs
from nnscratch.engines import ENGINES, Engine, make_engine
from nnscratch.errors import UsageError
from nnscratch.files.run_folder import RunFolder
from nnscratch.run.experiment import (EngineResult, check_engines, check_tensorboard, open_run_folder, plan_run,
                                      prepare_arrays, run_experiment, write_run_folder)
from nnscratch.training.loop import record_dict
from nnscratch.training.metrics import softmax
from nnscratch.threads import set_threads

__all__ = ["Run", "compare", "config", "train", "write_report"]

#: What a run configuration may come from: the settings themselves, a TOML file, or a mapping
#: such as ``Run.config`` of an earlier run.
ConfigLike = RunConfig | str | Path | Mapping[str, Any] | None


@dataclass(repr=False, eq=False)
class Run:
    """A finished run: everything ``metrics.json`` holds, as plain Python, plus the trained weights.

    Attributes
    ----------
    config : dict
        The resolved settings (every key of :class:`~nnscratch.run.config.RunConfig`, tuples as
        lists) and ``model``, the network in words. ``train(run.config, epochs=5)`` repeats it.
    metrics : dict
        The ``metrics.json`` dict: config, architecture, dataset, engines, twin, machine.
    history : dict[str, dict]
        Per engine: ``epochs`` (one dict per epoch: ``epoch, train_loss, train_accuracy,
        val_loss, val_accuracy, val_f1, time_s`` and, unless ``gradient_flow=False``,
        ``gradient_flow``: docs/gradient-flow.md), ``step_loss`` and ``step_lr`` (one float per
        optimisation step, length ``n_steps``), ``train_time_s``, ``wall_time_s`` and
        ``early_stopping`` (None unless it was on).
    test : dict[str, dict]
        Per engine, the test-set report: ``accuracy``, weighted ``precision``/``recall``/``f1``,
        ``macro``, ``per_class``, ``confusion_matrix`` (C x C lists), ``errors``.
    twin : dict or None
        With both engines, how closely they agree (``max_abs_step_loss_diff``,
        ``max_rel_step_loss_diff``, ``max_rel_weight_diff``, ``test_prediction_agreement``).
    models : dict[str, dict[str, numpy.ndarray]]
        Per engine, the trained parameters and buffers with torch's names and shapes
        (``"0.weight"`` is ``(D_hidden, D_in)``).
    out : pathlib.Path or None
        The folder the outputs were written to, or None.
    """

    config: dict
    metrics: dict
    history: dict[str, dict]
    test: dict[str, dict]
    twin: dict | None
    models: dict[str, dict[str, np.ndarray]]
    out: Path | None = None
    # what predict() and write_report() need; not part of the run's data
    _settings: RunConfig = field(default=None, repr=False, compare=False)
    _data: Dataset = field(default=None, repr=False, compare=False)
    _results: dict[str, EngineResult] = field(default_factory=dict, repr=False, compare=False)
    _predictors: dict[str, Engine] = field(default_factory=dict, repr=False, compare=False)

    def __repr__(self) -> str:
        accuracy = ", ".join(f"{name} {t['accuracy']:.4f}" for name, t in self.test.items())
        twin = f", twin max_rel_step_loss_diff={self.twin['max_rel_step_loss_diff']:.1e}" if self.twin else ""
        return (f"Run({self.metrics['dataset']['title']}, {self.config['model']}, {self.config['epochs']} epochs, "
                f"test accuracy {accuracy}{twin}, out={str(self.out) if self.out else None!r})")

    @property
    def engines(self) -> tuple[str, ...]:
        """The engines this run trained, in order."""
        return tuple(self.history)

    def predict(self, x: np.ndarray, engine: str | None = None) -> np.ndarray:
        """Class probabilities of the trained model (evaluation mode: running statistics, no dropout).

        Parameters
        ----------
        x : numpy.ndarray
            uint8 images ``(N, H, W, C)`` (or ``(N, H, W)``) as the dataset gives them
            (``Dataset.test_images``): scaled and standardised as in training (a run with
            ``deskew=True`` loads them deskewed; deskew images of your own first:
            :func:`nnscratch.data.deskew.deskew`). Or float model inputs ``(N, D)``, already
            scaled as the engine sees them, used as they are.
        engine : str, optional
            ``"numpy"`` or ``"torch"``; default: the run's first engine.

        Returns
        -------
        numpy.ndarray
            ``(N, C)`` float64 probabilities, each row summing to 1.
        """
        name = self._engine_name(engine)
        if name not in self._predictors:
            self._predictors[name] = make_engine(name, self._spec(), self.models[name],
                                                 dtype=self._settings.np_dtype,
                                                 device=self._settings.device).eval()
        return softmax(self._predictors[name].predict_logits(self._inputs(x)))

    def predict_classes(self, x: np.ndarray, engine: str | None = None) -> np.ndarray:
        """The most probable class of each row, int64 ``(N,)``; ``x`` as for :meth:`predict`."""
        return self.predict(x, engine).argmax(axis=1)

    def _engine_name(self, engine: str | None) -> str:
        if engine is None:
            return self.engines[0]
        if engine not in self.models:
            raise UsageError(f"this run trained {', '.join(self.engines)}, not {engine!r}")
        return engine

    def _spec(self):
        shape = self.metrics["dataset"]["image_shape"]
        return self._settings.model_spec(int(np.prod(shape)), len(self.metrics["dataset"]["class_names"]))

    def _inputs(self, x) -> np.ndarray:
        """``x`` as model inputs ``(N, D)`` in the run's dtype (see :meth:`predict`)."""
        x = np.asarray(x)
        shape = tuple(self.metrics["dataset"]["image_shape"])
        dim = int(np.prod(shape))
        if x.ndim < 2 or x[0].size != dim:
            raise UsageError(f"predict() takes a batch of images (N, {', '.join(map(str, shape))}) or inputs "
                             f"(N, {dim}), got shape {x.shape}; one image x is x[None]")
        if x.dtype == np.uint8:
            return model_inputs(x.reshape(len(x), *shape), self._settings.np_dtype.type,
                                self.metrics["dataset"]["standardization"], "this run")
        if x.ndim != 2 or x.dtype.kind != "f":
            raise UsageError(f"predict() takes uint8 images or float inputs (N, {dim}), got {x.dtype} {x.shape}")
        return np.ascontiguousarray(x, dtype=self._settings.np_dtype)


def config(file: str | Path | None = None, **settings: Any) -> RunConfig:
    """A checked run configuration: defaults, then ``file``'s values, then ``settings``.

    Parameters
    ----------
    file : str or pathlib.Path, optional
        A TOML file such as ``configs/seed.toml`` (keys as below).
    **settings
        Any key of :class:`~nnscratch.run.config.RunConfig`: ``epochs=3``, ``hidden=[512, 256]``,
        ``optimizer="adam"``, ``dataset="fashion-mnist"``... None leaves a key to the file or the
        default.

    Returns
    -------
    RunConfig
        For both engines (``train`` and ``compare`` choose the engines).

    Raises
    ------
    UsageError
        An unknown key (with the likely one it meant) or a bad value, in one line.

    Examples
    --------
    >>> cfg = config(epochs=3, hidden=[256, 128])
    >>> cfg.epochs, cfg.hidden, cfg.lr
    (3, (256, 128), 0.01)
    """
    return resolve_config(file, _checked(settings), ENGINES)


def train(cfg: ConfigLike = None, *, engine: str = "numpy", out: str | Path | RunFolder | None = None,
          overwrite: bool = False, progress: bool = False, data: Dataset | None = None,
          on_epoch: Callable[[str, dict], None] | None = None, resume: str | Path | None = None,
          **settings: Any) -> Run:
    """Train one engine, evaluate it on the test set and, with ``out``, write every output.

    Parameters
    ----------
    cfg : RunConfig, str, pathlib.Path or mapping, optional
        The base settings: a :func:`config`, a TOML file, or a mapping such as an earlier
        ``Run.config``. Default: the reference project's set-up (:class:`RunConfig`'s defaults).
    engine : {"numpy", "torch"}
        The engine to train.
    out : str, pathlib.Path or RunFolder, optional
        Folder for ``metrics.json``, ``report.md``, figures and the model, as the command line
        writes them: new, empty, or holding an earlier run of ours (see ``overwrite``); put in
        place whole when the run ends, left as it was when it fails (see
        :mod:`nnscratch.files.run_folder`). Default: write nothing (:func:`write_report` can
        write them later).
    overwrite : bool
        Replace a finished run at ``out`` (else refused). An interrupted run there is replaced
        either way.
    progress : bool
        tqdm progress bars (data download, epochs).
    data : Dataset, optional
        An already loaded :func:`~nnscratch.data.load_dataset` result, to train on it again
        without reading the files. It must be the dataset the settings name.
    on_epoch : callable, optional
        Called after every epoch as ``on_epoch(engine, record)``, ``record`` as in ``Run.history``.
    resume : str or pathlib.Path, optional
        A checkpoint (``OUT/checkpoints/last.safetensors``) or a run folder to continue from, bit
        for bit. Its settings are the base (``cfg`` must be None); ``settings`` may change only
        ``epochs`` (to extend the run), threads, device, data folder and the checkpoint options.
    **settings
        Keys of :class:`~nnscratch.run.config.RunConfig` that override ``cfg`` (``epochs=3``); None
        leaves a key as ``cfg`` has it.

    Returns
    -------
    Run

    Raises
    ------
    UsageError
        A bad setting, engine or output folder (another run writing it, a finished run without
        ``overwrite``, a folder of other files...).
    DataError
        The dataset is missing or corrupt.

    Notes
    -----
    Sets the thread count of BLAS and torch to ``threads`` (default: every usable core) for the
    process, as the command line does.
    """
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)} (or compare() for both)")
    return _run(cfg, (engine,), out, overwrite, progress, data, on_epoch, settings, resume)


def compare(cfg: ConfigLike = None, *, out: str | Path | RunFolder | None = None, overwrite: bool = False,
            progress: bool = False, data: Dataset | None = None,
            on_epoch: Callable[[str, dict], None] | None = None, resume: str | Path | None = None,
            **settings: Any) -> Run:
    """Train the NumPy engine and its torch twin from the same weights on the same batches.

    The same parameters as :func:`train` but ``engine``; ``Run.twin`` says how closely the two
    agree (in float64, to rounding: about 1e-12).
    """
    return _run(cfg, ENGINES, out, overwrite, progress, data, on_epoch, settings, resume)


def write_report(run: Run, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write a run's outputs into ``out`` as the command line does: models, ``metrics.json``,
    figures and ``report.md``, put in place whole (``out`` as for :func:`train`, ``overwrite``
    too). Returns the path of ``report.md`` (and sets ``run.out``)."""
    if not isinstance(run, Run):
        raise UsageError(f"write_report() takes the Run that train() or compare() returned, got {run!r}")
    if out is None:
        raise UsageError("write_report() needs a folder: out must be a folder path (str or pathlib.Path), got None")
    cfg, data = run._settings, run._data
    if cfg is None or data is None:
        raise UsageError("write_report() needs a Run that train() or compare() returned (this one has no data)")
    with _run_folder(cfg, out, overwrite) as folder:
        arrays = prepare_arrays(data, cfg)
        # the plan (network, initial weights, batch order) is drawn again from cfg.seed: the same one
        plan = plan_run(cfg, len(arrays.y_train), arrays.x_train.shape[1], len(data.class_names))
        write_run_folder(folder, cfg, plan, run.metrics, data, arrays, run._results)
    run.out = folder.out
    return folder.out / "report.md"


def _run_folder(cfg: RunConfig, out, overwrite) -> RunFolder | None:
    """The run folder of ``out``, checked now (see :func:`train`)."""
    if isinstance(out, RunFolder) and overwrite:
        raise UsageError("overwrite is a setting of the RunFolder given as out: RunFolder(path, overwrite=True)")
    return open_run_folder(cfg, out, overwrite)


def _run(cfg: ConfigLike, engines: tuple[str, ...], out, overwrite: bool, progress: bool, data: Dataset | None,
         on_epoch, settings: dict, resume=None) -> Run:
    """Resolve the settings, train ``engines`` through :func:`run_experiment`, wrap the results."""
    checkpoints = None
    if resume is not None:
        from nnscratch.run.resume import load_checkpoints, resumed_config

        if cfg is not None:
            raise UsageError("resume takes its settings from the checkpoint: pass no configuration with it")
        checkpoints = resume if isinstance(resume, dict) else load_checkpoints(resume, engines)
        cfg = resumed_config(checkpoints, _checked(settings), engines)
    else:
        given = _checked(settings)
        if cfg is None:  # fine-tuning: the network settings not given are the source model's
            from nnscratch.run.finetune import with_source_network

            given = with_source_network(given)
        cfg = dataclasses.replace(_base(cfg), **given, engines=engines)
    folder = _run_folder(cfg, out, overwrite)  # checked before any work, like everything below
    check_engines(cfg)  # before the data: a missing GPU or numba fails at once
    check_tensorboard(cfg, folder.out if folder is not None else None)
    set_threads(cfg.threads)
    with contextlib.nullcontext() if folder is None or folder.locked else folder:  # the lock, from here on
        if data is None:  # loaded here, not in run_experiment, so that the Run can write its report later
            data = load_dataset(cfg.dataset, cfg.data_dir, progress=progress, **cfg.data_options())
        hook = (lambda name, record: on_epoch(name, record_dict(record))) if on_epoch else None
        metrics, results = run_experiment(cfg, folder, progress=progress, on_epoch=hook, data=data,
                                          resume=checkpoints)
    out = folder.out if folder is not None else None
    engines_metrics = metrics["engines"]
    return Run(
        config=metrics["config"],
        metrics=metrics,
        history={name: {"epochs": m["history"], "step_loss": m["step_loss"], "step_lr": m["step_lr"],
                        "train_time_s": m["train_time_s"], "wall_time_s": m["wall_time_s"],
                        "early_stopping": m.get("early_stopping")}
                 for name, m in engines_metrics.items()},
        test={name: m["test"] for name, m in engines_metrics.items()},
        twin=metrics.get("twin"),
        models={name: r.state for name, r in results.items()},
        out=out, _settings=cfg, _data=data, _results=results)


def _base(cfg: ConfigLike) -> RunConfig:
    """The RunConfig that ``cfg`` names (see :func:`train`)."""
    if cfg is None:
        return config()
    if isinstance(cfg, RunConfig):
        return cfg
    if isinstance(cfg, (str, Path)):
        return config(cfg)
    if isinstance(cfg, Mapping):
        derived = ("model", "engines")  # in Run.config, but set by the run, not by a setting
        return config(**{k: v for k, v in cfg.items() if k not in derived})
    raise UsageError(f"a run configuration is a RunConfig, a TOML file or a dict of settings, got {type(cfg).__name__}")


def _checked(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword settings with known keys only, None dropped, in the types a config file gives them."""
    values = {}
    for key, value in settings.items():
        if key not in CONFIG_KEYS:
            if key == "engines":
                raise UsageError("choose engines with train(engine=...) or compare(), not a setting")
            close = [_OTHER_NAMES[key]] if key in _OTHER_NAMES else difflib.get_close_matches(key, CONFIG_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "; see nnscratch.RunConfig for the settings"
            raise UsageError(f"unknown setting {key!r}{hint}")
        if value is None:  # not given: the file's value or the default stays, as with an absent flag
            continue
        if key == "hidden" and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            value = (value,)
        elif key in _FLOAT_KEYS and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            value = float(value)  # lr=1 is recorded as 1.0, as the config file and the flag give it
        elif isinstance(value, list):
            value = tuple(value)
        elif key == "label_column" and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            value = str(value)  # a 0-based index, as the config file gives it
        elif key in ("data_dir", "tensorboard") and isinstance(value, os.PathLike):
            value = os.fspath(value)
        values[key] = value
    return values
