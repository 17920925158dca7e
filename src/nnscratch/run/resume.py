"""Resuming a run from its checkpoints: which files, which settings, and whether they still fit.

A checkpoint carries its run's whole configuration, so resuming needs only the checkpoint: its
settings are the base, as a config file is, and a setting given again must agree with it, except
those in :data:`~nnscratch.run.config.RESUMABLE_KEYS` (``epochs`` to extend the run, threads,
device, data folder, checkpoint options). After the data is loaded, :func:`check_fits` makes sure
it is the data and the network the checkpoint was trained on, and says what differs.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from nnscratch.errors import DataError, UsageError
from nnscratch.files.checkpoint import Checkpoint, find_checkpoint, read_checkpoint
from nnscratch.files.model_files import check_finite
from nnscratch.run.config import CONFIG_KEYS, RESUMABLE_KEYS, RunConfig, check_value, flag

#: Schedules whose length is the run's (unless their own length is set): extending a run stretches them.
_RUN_LENGTH_SCHEDULES = {"cosine": "t_max", "onecycle": "total_steps", "cyclic": None}


def resume_command(engines: tuple[str, ...], checkpoints: Path) -> str:
    """The command that resumes a run whose checkpoints are in ``checkpoints`` (``OUT/checkpoints``),
    into the same folder (the folder form: :func:`~nnscratch.files.checkpoint.find_checkpoint`
    takes ``last.safetensors``, or the newest numbered one if a second Ctrl-C cut the last short)."""
    out = shlex.quote(str(checkpoints.parent))
    verb = "compare" if len(engines) > 1 else f"train --engine {engines[0]}"
    return f"nnscratch {verb} --resume {out} --out {out}"


def load_checkpoints(path: str | Path, engines: tuple[str, ...]) -> dict[str, Checkpoint | None]:
    """Each engine's checkpoint to resume from (None: that engine had not started; it starts fresh)."""
    found = {engine: find_checkpoint(path, engine, engines) for engine in engines}
    if not any(found.values()):
        raise UsageError(f"resume: no checkpoint in {path}; pass OUT/checkpoints/last.safetensors of a run "
                         "(or its folder)")
    checkpoints = {engine: read_checkpoint(p) if p else None for engine, p in found.items()}
    for engine, ck in checkpoints.items():
        if ck is None:
            continue
        check_finite(ck.path, ck.model_state())  # a diverged run is not worth resuming
        if not isinstance(ck.config.get("engines"), list) or not all(isinstance(e, str) for e in ck.config["engines"]):
            raise DataError(f"{ck.path}: its checkpoint metadata is damaged (engines {ck.config.get('engines')!r})")
        if ck is not None and ck.engine != engine:
            raise UsageError(f"resume: {ck.path} is a checkpoint of the {ck.engine} engine, not of {engine}; "
                             f"resume it with the command that started its run ({' and '.join(ck.config['engines'])})")
        if ck is not None and tuple(ck.config.get("engines", ())) != engines:
            was = " and ".join(ck.config.get("engines", ()))
            raise UsageError(f"resume: {ck.path} comes from a run of {was}, this one trains {' and '.join(engines)}; "
                             "resume it with the command that started it")
    return checkpoints


def resumed_config(checkpoints: dict[str, Checkpoint | None], given: dict, engines: tuple[str, ...]) -> RunConfig:
    """The checkpoint's settings with ``given`` (settings passed again) applied; a given setting
    that differs from the checkpoint's and may not change on resume is an error naming it."""
    first = next(ck for ck in checkpoints.values() if ck is not None)
    base = {k: tuple(v) if isinstance(v, list) else v for k, v in first.config.items() if k not in ("engines", "model")}
    unknown = sorted(set(base) - set(CONFIG_KEYS))
    bad = [f"{k} {problem}" for k, v in base.items() if k in CONFIG_KEYS and (problem := check_value(k, v))]
    if unknown or bad:
        raise DataError(f"{first.path}: its settings are damaged or not this nnscratch's "
                        f"({'; '.join(bad + [f'unknown {k}' for k in unknown][:3])})")
    try:
        saved = RunConfig(**base, engines=engines)
        wanted = RunConfig(**{**base, **given}, engines=engines)
    except TypeError as exc:
        raise DataError(f"{first.path}: its settings are not this nnscratch's ({exc})") from None
    s, w = saved.to_dict(), wanted.to_dict()
    clashes = [f"{flag(k)} {w[k]!r} (the checkpoint has {s[k]!r})" for k in given
               if k in s and w[k] != s[k] and k not in RESUMABLE_KEYS]
    if clashes:
        raise UsageError(f"resume: {'; '.join(clashes)} contradicts the checkpoint; on resume only "
                         f"{', '.join(flag(k) for k in RESUMABLE_KEYS)} (and --out) may change")
    started = max(ck.trainer["epoch"] + (ck.trainer["step_in_epoch"] > 0) for ck in checkpoints.values()
                  if ck is not None)  # an epoch in flight counts: its steps are in the weights
    if wanted.epochs < started:
        raise UsageError(f"resume: the checkpoint has trained (into) {started} epochs; --epochs must be at least "
                         f"{started}, got {wanted.epochs}")
    return wanted


def extension_note(checkpoints: dict[str, Checkpoint | None], cfg: RunConfig) -> str | None:
    """What a longer run means for a schedule whose length is the run's, or None."""
    first = next(ck for ck in checkpoints.values() if ck is not None)
    before = int(first.config.get("epochs", cfg.epochs))
    if cfg.epochs == before or cfg.lr_schedule not in _RUN_LENGTH_SCHEDULES:
        return None
    own = _RUN_LENGTH_SCHEDULES[cfg.lr_schedule]
    if own is None or getattr(cfg, own) is not None:
        return None
    return (f"the {cfg.lr_schedule} schedule spans the run: extended from {before} to {cfg.epochs} epochs it is "
            f"stretched to the new length, so the rates from here on follow the longer curve (the steps already "
            f"done keep the rates they had); set {own} to fix its length")


def check_fits(checkpoint: Checkpoint, spec, data_facts: dict) -> None:
    """The checkpoint was trained on this network and this data (sizes, classes), or say what differs."""
    if checkpoint.spec.to_json() != spec.to_json():
        raise DataError(f"{checkpoint.path}: its network is {checkpoint.spec.describe()}, this run's is "
                        f"{spec.describe()}; resume with the settings it was trained with")
    differ = [f"{k} {checkpoint.data.get(k)!r} in the checkpoint, {v!r} now" for k, v in data_facts.items()
              if checkpoint.data.get(k) != v]
    if differ:
        raise DataError(f"{checkpoint.path}: it was trained on other data: {'; '.join(differ)}")


def carry_over(checkpoints: dict[str, Checkpoint | None], checkpoint_dir: Path, staging: Path,
               engines: tuple[str, ...]) -> None:
    """Bring the resumed run's history into the new run folder, so that resuming into the same
    ``--out`` loses nothing: the checkpoint resumed from (as ``last.safetensors``), the numbered and
    best checkpoints of the run up to that point, and its ``metrics.jsonl`` (when resuming from its
    ``last``: the log then ends where the new events begin)."""
    import shutil

    from nnscratch.files.atomic import atomic_path
    from nnscratch.files.checkpoint import checkpoint_folder

    from_last = all(ck is None or ck.path.name == "last.safetensors" for ck in checkpoints.values())
    for engine, ck in checkpoints.items():
        if ck is None:
            continue
        dst = checkpoint_folder(checkpoint_dir, engine, engines)
        dst.mkdir(parents=True, exist_ok=True)
        for src in sorted(ck.path.parent.glob("*.safetensors")):
            if src.name == "last.safetensors" or src == ck.path or not _not_after(src, ck.trainer["step"]):
                continue
            with atomic_path(dst / src.name) as tmp:
                shutil.copyfile(src, tmp)
        with atomic_path(dst / "last.safetensors") as tmp:
            shutil.copyfile(ck.path, tmp)
    run_dir = next(ck for ck in checkpoints.values() if ck is not None).path.parent
    run_dir = run_dir.parent.parent if len(engines) > 1 else run_dir.parent
    log = run_dir / "metrics.jsonl"
    if from_last and log.is_file():
        with atomic_path(staging / "metrics.jsonl") as tmp:
            shutil.copyfile(log, tmp)


def _not_after(path: Path, step: int) -> bool:
    """Whether the checkpoint ``path`` was written at or before global step ``step`` (unreadable: no)."""
    from nnscratch.files.checkpoint import read_header
    from nnscratch.files.json_text import parse_json

    try:
        trainer = parse_json(read_header(path, "checkpoint").metadata.get("trainer", "{}"))
        return isinstance(trainer, dict) and isinstance(trainer.get("step"), int) and trainer["step"] <= step
    except (DataError, ValueError):
        return False
