"""Checkpoints: one ``.safetensors`` file holds everything a run needs to go on bit for bit.

Tensors (never pickle):

=========================  ===============================================================
name                       what
=========================  ===============================================================
``0.weight``, ``1.bias``…  the model's parameters and buffers, named as torch's ``state_dict()``
``optimizer.<param>.<k>``  the optimizer's state under torch's names (``momentum_buffer``,
                           ``exp_avg``, ``step``…)
``engine.steps``           optimisation steps done
``trainer.step_loss``,     every step's loss and learning rate so far (float64)
``trainer.step_lr``
``trainer.schedule.*``     the schedule cursor (epochs done, plateau's counters)
``trainer.early_stopping.*``, ``best.*``   early stopping's counters and the best epoch's state
=========================  ===============================================================

Metadata (strings): ``format`` (``nnscratch-checkpoint``), ``version``, ``engine``, ``spec``
(the model, JSON), ``config`` (the whole resolved run configuration, JSON), ``data`` (the dataset
and the split sizes it was trained on), ``trainer`` (position: epoch, step within it; the epochs'
records; counters; the gradient-flow samples of the epoch in flight) and ``payload_sha256``, the
SHA-256 of the tensor bytes: a damaged file is refused before anything of it is used.

In plain PyTorch::

    from safetensors.torch import load_file
    state = load_file("runs/x/checkpoints/last.safetensors")
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith(CHECKPOINT_PREFIXES)})
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError

from nnscratch.errors import DataError, OutputError, UsageError
from nnscratch.files.atomic import atomic_path
from nnscratch.files.json_text import parse_json
from nnscratch.files.safetensors_file import read_header, read_tensors, write_safetensors
from nnscratch.model.registry import state_shapes
from nnscratch.model.spec import ModelSpec

FORMAT = "nnscratch-checkpoint"
VERSION = 1
#: Tensor-name prefixes that are not the model's: what to leave out for ``load_state_dict``.
CHECKPOINT_PREFIXES = ("optimizer.", "engine.", "trainer.", "best.")
_NUMBERED = re.compile(r"^(epoch|step)-(\d+)\.safetensors$")


class CheckpointWriteError(OutputError):
    """A checkpoint could not be written (disk full, folder gone): the previous one is intact."""


@dataclass
class Checkpoint:
    """A checkpoint read back: its tensors and what its metadata says."""

    path: Path
    engine: str
    spec: ModelSpec
    config: dict
    data: dict
    trainer: dict
    tensors: dict[str, np.ndarray]

    def model_state(self) -> dict[str, np.ndarray]:
        """Parameters and buffers only (what a model file holds)."""
        return {k: v for k, v in self.tensors.items() if not k.startswith(CHECKPOINT_PREFIXES)}


class CheckpointWriter:
    """Writes a trainer's checkpoints into ``folder`` when they are due.

    * ``last.safetensors``: after every epoch, at the end of the run and on an interruption;
    * ``best.safetensors``: after an epoch with the best validation loss so far (early stopping on);
    * ``epoch-K.safetensors``: every ``every_epochs`` epochs; ``step-N.safetensors`` (N the global
      step) every ``every_steps`` steps, also inside an epoch; ``keep`` keeps the newest K of
      these numbered files (None: all).

    Each file is written atomically (temp file in the same folder, fsync, rename, folder fsync);
    a failed write leaves the previous file intact and raises :class:`CheckpointWriteError`.
    ``meta`` holds the run's strings (``spec``, ``config``, ``data``) written into every file.
    """

    def __init__(self, folder: str | Path, meta: dict[str, str], *, every_epochs: int | None = None,
                 every_steps: int | None = None, keep: int | None = None) -> None:
        self.folder, self.meta = Path(folder), dict(meta)
        self.every_epochs, self.every_steps, self.keep = every_epochs, every_steps, keep

    def names_after_epoch(self, epoch: int, step: int, best: bool) -> tuple[str, ...]:
        names = ["last"]
        if best:
            names.append("best")
        if self.every_epochs and epoch % self.every_epochs == 0:
            names.append(f"epoch-{epoch}")
        if self.every_steps and step % self.every_steps == 0:
            names.append(f"step-{step}")
        return tuple(names)

    def write(self, engine: str, tensors: dict[str, np.ndarray], trainer: dict, names: tuple[str, ...],
              step: int, epoch: int) -> Path:
        """Write one checkpoint under each of ``names``; returns the first file's path."""
        metadata = {**self.meta, "format": FORMAT, "version": str(VERSION), "engine": engine,
                    "trainer": json.dumps(trainer)}
        metadata["metadata_sha256"] = metadata_sha256(metadata)
        paths = [self.folder / f"{name}.safetensors" for name in names]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_safetensors(paths[0], tensors, metadata, digest_key="payload_sha256")
            for other in paths[1:]:
                with atomic_path(other) as tmp:
                    shutil.copyfile(paths[0], tmp)
        except (OSError, SafetensorError) as exc:
            where = getattr(exc, "filename", None) or paths[0]
            raise CheckpointWriteError(f"could not write the checkpoint {where} "
                                       f"({getattr(exc, 'strerror', None) or exc}); the previous checkpoint is intact") from None
        self._prune()
        return paths[0]

    def _prune(self) -> None:
        """Keep the newest ``keep`` numbered checkpoints of each kind (``epoch-K``, ``step-N``)."""
        if not self.keep:
            return
        for kind in ("epoch", "step"):
            numbered = sorted((int(m.group(2)), p) for p in self.folder.iterdir()
                              if (m := _NUMBERED.match(p.name)) and m.group(1) == kind)
            for _, p in numbered[:-self.keep]:
                p.unlink(missing_ok=True)


def run_meta(spec: ModelSpec, config: dict, data: dict) -> dict[str, str]:
    """The metadata strings every checkpoint of a run carries (spec, config, data)."""
    return {"spec": spec.to_json(), "config": json.dumps(config, sort_keys=True),
            "data": json.dumps(data, sort_keys=True)}


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a safetensors file whose metadata says it is a checkpoint (header only)."""
    try:
        return read_header(path, "checkpoint").metadata.get("format") == FORMAT
    except DataError:
        return False


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a checkpoint: header, format and version, spec, the model tensors' shapes
    (before the payload is read), then the payload against its SHA-256. ``DataError`` otherwise."""
    path = Path(path)
    header = read_header(path, "checkpoint")
    meta = header.metadata
    if meta.get("format") != FORMAT:
        hint = " (it is a model file: use it with evaluate --model)" if str(meta.get("format", "")).startswith(
            "nnscratch-model") else ""
        raise DataError(f"{path} is not a checkpoint of nnscratch{hint}; pass OUT/checkpoints/last.safetensors "
                        "of a run")
    if meta.get("version") != str(VERSION):
        raise DataError(f"{path} is a checkpoint of format version {meta.get('version')!r}; this nnscratch reads "
                        f"version {VERSION}: use the nnscratch that wrote it")
    if meta.get("metadata_sha256") != metadata_sha256(meta):
        raise DataError(f"{path} is damaged: its metadata (settings, position, history) does not match the "
                        "SHA-256 recorded with it; use another checkpoint")
    try:
        spec = ModelSpec.from_json(meta["spec"])
        config, data, trainer = (parse_json(meta[k]) for k in ("config", "data", "trainer"))
        engine = meta["engine"]
    except (KeyError, ValueError, TypeError, UsageError) as exc:
        raise DataError(f"{path}: its checkpoint metadata is damaged ({type(exc).__name__}: {exc})") from None
    if not all(isinstance(v, dict) for v in (config, data, trainer)) or "payload_sha256" not in meta:
        raise DataError(f"{path}: its checkpoint metadata is damaged (config, data, trainer or payload_sha256)")
    problem = position_problem(trainer, header.tensors)
    if problem:
        raise DataError(f"{path}: its checkpoint metadata is damaged ({problem})")
    problems = _misfits(header.tensors, spec)
    if problems:
        raise DataError(f"{path}: its tensors do not fit its model {spec.describe()}: {'; '.join(problems[:4])}")
    tensors, digest = read_tensors(header)
    if digest != meta["payload_sha256"]:
        raise DataError(f"{path} is damaged: its tensor data's SHA-256 is {digest[:12]}..., the checkpoint "
                        f"recorded {meta['payload_sha256'][:12]}...; use another checkpoint")
    return Checkpoint(path, engine, spec, config, data, trainer, tensors)


def metadata_sha256(metadata: dict[str, str]) -> str:
    """The SHA-256 of every metadata string but the two digests, in a canonical order: a changed
    setting, position or history is a damaged file, like a changed weight."""
    body = {k: v for k, v in metadata.items() if k not in ("metadata_sha256", "payload_sha256")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


#: The record of one epoch in a checkpoint's history (an EpochRecord), and what it may hold besides.
_RECORD_KEYS = {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_f1", "time_s"}
_OPTIONAL_RECORD_KEYS = {"gradient_flow"}
_FINISHED = (None, "finished", "early_stop")


def position_problem(trainer: dict, entries: dict) -> str | None:
    """What is inconsistent in a checkpoint's position and history, or None.

    The step count is the epochs done times the steps per epoch plus the steps of the epoch in
    flight; each step has one loss and one rate; each epoch done has one record.
    """
    def whole(key, low=0):
        v = trainer.get(key)
        return isinstance(v, int) and not isinstance(v, bool) and v >= low

    for key, low in (("epoch", 0), ("step_in_epoch", 0), ("step", 0), ("epochs", 1), ("steps_per_epoch", 1),
                     ("batch_size", 1), ("train_size", 1), ("epoch_correct", 0)):
        if not whole(key, low):
            return f"trainer {key} must be a whole number >= {low}, got {trainer.get(key)!r}"
    e, s, spe = trainer["epoch"], trainer["step_in_epoch"], trainer["steps_per_epoch"]
    if s >= spe or e > trainer["epochs"] or trainer["step"] != e * spe + s:
        return (f"position epoch {e}, step {s} of {spe} per epoch does not give step {trainer['step']} "
                f"within {trainer['epochs']} epochs")
    if trainer.get("finished") not in _FINISHED:
        return f"trainer finished must be one of {_FINISHED}, got {trainer.get('finished')!r}"
    history = trainer.get("history")
    if not isinstance(history, dict) or not isinstance(history.get("epochs"), list):
        return "trainer history must hold a list of epochs"
    records = history["epochs"]
    allowed = _RECORD_KEYS | _OPTIONAL_RECORD_KEYS
    if len(records) != e or not all(isinstance(r, dict) and _RECORD_KEYS <= set(r) <= allowed for r in records):
        return f"trainer history must hold {e} epoch records with {sorted(_RECORD_KEYS)}"
    flow = trainer.get("gradient_flow", [])
    if not isinstance(flow, list) or not all(isinstance(f, dict) for f in flow):
        return "trainer gradient_flow must be a list of the epoch's sampled steps"
    for key in ("trainer.step_loss", "trainer.step_lr", "engine.steps"):
        if key not in entries:
            return f"tensor {key} is missing"
    for key in ("trainer.step_loss", "trainer.step_lr"):
        if tuple(entries[key].shape) != (trainer["step"],):
            return f"{key} has shape {entries[key].shape}, not ({trainer['step']},): one entry per step"
    return None


def _misfits(entries: dict, spec: ModelSpec) -> list[str]:
    expected = state_shapes(spec)
    problems = [f"missing {n}" for n in expected if n not in entries]
    problems += [f"{n} has shape {entries[n].shape}, not {shape}" for n, shape in expected.items()
                 if n in entries and tuple(entries[n].shape) != tuple(shape)]
    for prefix in ("best.",):
        problems += [f"{k} has shape {e.shape}, not {expected.get(k[len(prefix):])}" for k, e in entries.items()
                     if k.startswith(prefix) and k[len(prefix):] in expected
                     and tuple(e.shape) != tuple(expected[k[len(prefix):]])]
    return problems


def find_checkpoint(path: str | Path, engine: str, engines: tuple[str, ...]) -> Path | None:
    """The checkpoint to resume ``engine`` from, given what the user passed.

    ``path`` may be a checkpoint file, a run's ``checkpoints`` folder or the run folder itself.
    A compare run keeps one folder per engine (``checkpoints/numpy/``, ``checkpoints/torch/``); a
    single-engine run writes into ``checkpoints/``. In a folder, ``last.safetensors`` is taken, or,
    if it is missing (a second Ctrl-C cut its write short), the newest numbered checkpoint. A file
    of one twin in a comparison names the same file of the other (``checkpoints/torch/step-40...``).
    None: no checkpoint of that engine yet (in a comparison, the torch twin had not started).
    """
    p = Path(path)
    if p.is_file():
        if len(engines) > 1 and p.parent.name in engines:
            twin = p.parent.parent / engine / p.name
            return twin if twin.is_file() else None
        return p
    if not p.is_dir():
        raise UsageError(f"resume {p}: no such file or folder; pass OUT/checkpoints/last.safetensors or the "
                         "run's folder")
    folder = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    folder = folder / engine if len(engines) > 1 else folder
    if (folder / "last.safetensors").is_file():
        return folder / "last.safetensors"
    numbered = [q for q in folder.glob("*.safetensors") if _NUMBERED.match(q.name)] if folder.is_dir() else []
    return max(numbered, key=lambda q: q.stat().st_mtime_ns) if numbered else None


def checkpoint_folder(run_checkpoints: Path, engine: str, engines: tuple[str, ...]) -> Path:
    """Where ``engine``'s checkpoints go: ``checkpoints/`` alone, ``checkpoints/<engine>/`` in a comparison."""
    return run_checkpoints / engine if len(engines) > 1 else run_checkpoints



def load_model_or_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], ModelSpec, dict]:
    """``(state, spec, info)`` of a model file (:func:`~nnscratch.files.model_files.load_model`)
    or of a checkpoint (its parameters and buffers; ``info`` as a model file's: engine, dtype,
    dataset, data options, standardisation, epochs), whichever ``path`` is."""
    from nnscratch.files.model_files import check_finite, info_problem, load_model

    if not is_checkpoint(path):
        return load_model(path)
    ck = read_checkpoint(path)
    info = {"engine": ck.engine, "dtype": ck.config.get("dtype", "float32"), "dataset": ck.data.get("dataset"),
            "data_options": ck.data.get("data_options") or {}, "standardization": ck.data.get("standardization"),
            "epochs": len(ck.trainer.get("history", {}).get("epochs", [])), "seed": ck.config.get("seed")}
    problem = info_problem(info)
    if problem:
        raise DataError(f"{ck.path}: its checkpoint metadata is damaged ({problem})")
    state = ck.model_state()
    check_finite(ck.path, state)
    return state, ck.spec, info
