"""The run configuration: the reference project's hyperparameters as defaults, flags and TOML
config files as two spellings of the same keys, validated with one-line errors.

Every key is also a flag: ``batch_norm = true`` in a file is ``--batch-norm`` on the command line.
A file is read with the standard library's ``tomllib``; flags given on the command line override
the file; whatever is left takes the default below. The resolved configuration goes into
``metrics.json`` and ``report.md``.
"""

from __future__ import annotations

import difflib
import math
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from nnscratch.errors import ParameterError, UsageError
from nnscratch.files.json_text import TOO_DEEP

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DTYPES = {"float32": np.float32, "float64": np.float64}
#: Config key -> the parameter(s) of the schedules (training/schedules.py, torch's names) it sets.
#: The one table of that mapping: what each schedule is given, which keys a schedule refuses, and
#: the flag an error from a schedule names all come from it.
SCHEDULE_PARAMETERS: dict[str, tuple[str, ...]] = {
    "lr_step_size": ("step_size",), "lr_gamma": ("gamma",), "lr_milestones": ("milestones",),
    "t_max": ("T_max",), "min_lr": ("eta_min", "min_lr"), "max_lr": ("max_lr",),
    "step_size_up": ("step_size_up",), "step_size_down": ("step_size_down",), "cyclic_mode": ("mode",),
    "total_steps": ("total_steps",), "pct_start": ("pct_start",), "anneal_strategy": ("anneal_strategy",),
    "div_factor": ("div_factor",), "final_div_factor": ("final_div_factor",), "three_phase": ("three_phase",),
    "plateau_factor": ("factor",), "plateau_patience": ("patience",), "plateau_threshold": ("threshold",),
    "plateau_threshold_mode": ("threshold_mode",), "plateau_cooldown": ("cooldown",), "plateau_eps": ("eps",),
}
#: The optimizers' hyperparameters: each config key is the parameter's own name (numpy_engine/optimizers.py).
OPTIMIZER_KEYS = ("momentum", "dampening", "nesterov", "betas", "eps", "alpha", "centered", "amsgrad", "weight_decay")


def flag(key: str) -> str:
    """The command-line flag of config key ``key``: ``weight_decay`` -> ``--weight-decay``."""
    return "--" + key.replace("_", "-")


@contextmanager
def _naming_flags(keys: Mapping[str, str]) -> Iterator[None]:
    """Turn a library's :class:`ParameterError` (``betas must ...``) into the same line naming the
    flag (``--betas must ...``); ``keys`` maps the library's parameter names to config keys where
    they differ (a parameter not listed is its own key)."""
    try:
        yield
    except ParameterError as exc:
        raise UsageError(f"{flag(keys.get(exc.parameter, exc.parameter))} {exc.problem}") from None


#: Parameter of make_optimizer / make_schedule -> config key, where the two names differ.
_OPTIMIZER_FLAGS = {"name": "optimizer"}
_SCHEDULE_FLAGS = {"name": "lr_schedule", "base_lr": "lr"} | {
    parameter: key for key, parameters in SCHEDULE_PARAMETERS.items() for parameter in parameters}
#: Settings left out of the echoed command line while they have their default value.
_QUIET_DEFAULTS = ("jit", "precision", "augment", "val_size", "standardize", "deskew", "verify", "image_size", "color", "strict", "label_column",
                   "image_shape", "classes", "freeze", "reset_head", "momentum", "dampening", "nesterov", "betas", "eps", "alpha", "centered",
                   "amsgrad", "weight_decay", "lr_schedule_unit", "warmup_steps", "warmup_start_factor",
                   "lr_step_size", "lr_gamma", "lr_milestones", "t_max", "min_lr", "max_lr", "step_size_up",
                   "step_size_down", "cyclic_mode", "total_steps", "pct_start", "anneal_strategy", "div_factor",
                   "final_div_factor", "three_phase", "plateau_factor", "plateau_patience", "plateau_threshold",
                   "plateau_threshold_mode", "plateau_cooldown", "plateau_eps", "l1", "l2", "clip_grad_norm",
                   "max_norm", "input_dropout",
                   "early_stopping", "early_stopping_min_delta", "checkpoints", "checkpoint_every",
                   "checkpoint_every_steps", "keep_checkpoints", "gradient_flow", "gradient_flow_samples")
#: What may differ between a checkpoint's settings and the run that resumes it (the rest must match).
RESUMABLE_KEYS = ("epochs", "threads", "data_dir", "device", "checkpoints", "checkpoint_every",
                  "checkpoint_every_steps", "keep_checkpoints", "verify", "tensorboard")


@dataclass
class RunConfig:
    """Everything that defines a training run. Defaults are the reference (seed) project's."""

    dataset: str = "mnist"
    val_size: int | None = None       # None: 10,000, or a sixth of the pool when that is smaller
    standardize: bool = False         # per-channel (x - mean) / std, statistics of the training split
    deskew: bool = False              # shear each greyscale image upright by its moments (data/deskew.py)
    verify: bool = True               # check built-in dataset files against their SHA-256
    image_size: str | None = None     # "HxW": resize folder images
    color: str | None = None          # "grayscale" | "rgb": convert folder images
    strict: bool = False              # folder: an unreadable image is an error, not skipped
    label_column: str | None = None   # csv: the label column's name or 0-based index
    image_shape: str | None = None    # csv: "HxW" or "HxWxC"
    classes: str | None = None        # "0-4" or "0,2,5-9": keep those classes only, relabelled 0..k-1
    augment: str = "none"             # "rotate=10,shift=2,elastic=34:4", "auto" (the dataset's preset): data/augment.py
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.01
    hidden: tuple[int, ...] = (533,)
    activation: str = "relu"
    dropout: float = 0.0
    input_dropout: float = 0.0        # dropout on the network's input (a dropout layer 0 in front of everything)
    batch_norm: bool = False
    init: str = "he_normal"
    label_smoothing: float = 0.0
    # optimizer (torch's defaults where a value is None; see numpy_engine/optimizers.py)
    optimizer: str = "sgd"
    momentum: float | None = None
    dampening: float | None = None
    nesterov: bool | None = None
    betas: tuple[float, float] | None = None
    eps: float | None = None
    alpha: float | None = None
    centered: bool | None = None
    amsgrad: bool | None = None
    weight_decay: float | None = None
    # learning-rate schedule (see training/schedules.py); None: the schedule's default
    lr_schedule: str = "none"
    lr_schedule_unit: str | None = None   # "step" (batch) or "epoch"; default: epoch for step/multistep/
    #                                       exponential/cosine/plateau, step for cyclic/onecycle and warm-up only
    warmup_steps: int = 0
    warmup_start_factor: float | None = None
    lr_step_size: int | None = None
    lr_gamma: float | None = None
    lr_milestones: tuple[int, ...] | None = None
    t_max: int | None = None              # default: every schedule step after the warm-up
    min_lr: float | None = None
    max_lr: float | None = None
    step_size_up: int | None = None
    step_size_down: int | None = None
    cyclic_mode: str | None = None
    total_steps: int | None = None        # default: every schedule step of the run
    pct_start: float | None = None
    anneal_strategy: str | None = None
    div_factor: float | None = None
    final_div_factor: float | None = None
    three_phase: bool | None = None
    plateau_factor: float | None = None
    plateau_patience: int | None = None
    plateau_threshold: float | None = None
    plateau_threshold_mode: str | None = None
    plateau_cooldown: int | None = None
    plateau_eps: float | None = None
    # regularisation and stopping
    l1: float = 0.0
    l2: float = 0.0
    clip_grad_norm: float | None = None
    max_norm: float | None = None         # after every update: each unit's incoming weights to 2-norm <= this
    early_stopping: int | None = None     # patience in epochs; None: train every epoch
    early_stopping_min_delta: float = 0.0
    seed: int = 0
    dtype: str = "float32"
    precision: str = "fp32"   # fp16 | bf16: mixed precision (float32 master weights; docs/precision.md)
    train_subset: int | None = None
    device: str = "auto"
    threads: int | None = None
    data_dir: str | None = None
    jit: bool = False  # NumPy engine only: Numba element-wise kernels
    # fine-tuning (run/finetune.py): start from a trained model's weights instead of a fresh initialisation
    finetune_from: str | None = None   # a model file or checkpoint
    freeze: int = 0                    # hold the first N dense layers (and their batch norm) fixed
    reset_head: bool = False           # a fresh output layer (seeded), also when the class counts agree
    # checkpoints (OUT/checkpoints/): last.safetensors after every epoch, best.safetensors with early stopping
    checkpoints: bool = True
    checkpoint_every: int | None = None        # also epoch-K.safetensors every K epochs
    checkpoint_every_steps: int | None = None  # also step-N.safetensors every N steps, inside epochs too
    keep_checkpoints: int | None = None        # keep the newest K epoch-/step- files (None: all)
    # per-layer gradient statistics every epoch (training/gradient_flow.py), measured on a few sampled steps
    gradient_flow: bool = True
    gradient_flow_samples: int = 4             # steps sampled per epoch (all of them in a shorter epoch)
    # TensorBoard logs (training/tensorboard_sink.py) into this folder, a run per engine (DIR/numpy, DIR/torch)
    tensorboard: str | None = None
    engines: tuple[str, ...] = field(default=("numpy", "torch"))

    def __post_init__(self) -> None:
        for key in _SEQUENCE_KEYS:  # lists become tuples; anything else is left for check_value to name
            if isinstance(getattr(self, key), list):
                setattr(self, key, tuple(getattr(self, key)))
        for key, value in asdict(self).items():
            problem = check_value(key, value)
            if problem:
                raise UsageError(f"{flag(key)} {problem}")
        self.augment = _resolved_augment(self.augment, self.dataset)
        # the optimizer's and the schedule's own checks, now rather than after loading the data
        from nnscratch.numpy_engine.optimizers import OPTIMIZERS, hyperparameters_of, make_optimizer

        for key in self.optimizer_options():
            if key not in hyperparameters_of(OPTIMIZERS[self.optimizer]):
                raise UsageError(f"{flag(key)} does not apply to --optimizer {self.optimizer}")
        with _naming_flags(_OPTIMIZER_FLAGS):
            make_optimizer(self.optimizer, {}, **self.optimizer_options())
        self.make_schedule(steps_per_epoch=None)  # the schedule's own checks; the run's length comes later
        if self.freeze > len(self.hidden):
            raise UsageError(f"--freeze {self.freeze} is more than the network's {len(self.hidden)} hidden dense "
                             f"layer(s) (--hidden {' '.join(map(str, self.hidden))}); the output layer always "
                             f"trains: freeze at most {len(self.hidden)}")
        if self.precision != "fp32" and self.dtype != "float32":
            raise UsageError(f"--precision {self.precision} keeps float32 master weights: it needs --dtype float32 "
                             f"(got --dtype {self.dtype})")
        if self.reset_head and not self.finetune_from:
            raise UsageError("--reset-head replaces the output layer of the model a run starts from: "
                             "it needs --from PATH (nnscratch finetune)")
        if self.batch_norm and self.batch_size < 2:
            raise UsageError("--batch-norm needs batches of at least 2 samples (batch statistics); "
                             f"got --batch-size {self.batch_size}")

    def optimizer_options(self) -> dict:
        """The optimizer's hyperparameters that were set (torch's defaults apply to the rest)."""
        return {k: getattr(self, k) for k in OPTIMIZER_KEYS if getattr(self, k) is not None}

    def schedule_unit(self) -> str:
        """``"step"`` (the schedule advances every batch) or ``"epoch"``."""
        if self.lr_schedule_unit:
            return self.lr_schedule_unit
        if self.lr_schedule in ("cyclic", "onecycle") or self.lr_schedule == "none":
            return "step"
        return "epoch"

    def make_schedule(self, steps_per_epoch: int | None):
        """The learning-rate schedule of this run (:mod:`nnscratch.training.schedules`), in :meth:`schedule_unit` units.

        Each schedule gets the settings :data:`SCHEDULE_PARAMETERS` maps to its parameters; a
        setting it does not read is a one-line error. ``steps_per_epoch=None`` only checks the
        settings (the run's length is not known yet)."""
        from nnscratch.training.schedules import make_schedule, parameters

        name, unit = self.lr_schedule, self.schedule_unit()
        if name == "plateau" and unit != "epoch":
            raise UsageError("--lr-schedule plateau steps once per epoch (on the validation loss): "
                             "drop --lr-schedule-unit step")
        if self.warmup_steps and unit == "epoch" and name != "plateau":  # plateau: no warm-up at all
            raise UsageError(f"--warmup-steps counts optimisation steps (batches), but --lr-schedule {name} "
                             "advances once per epoch here: add --lr-schedule-unit step (its step counts then "
                             "count batches too) or leave out --warmup-steps")
        accepted = parameters(name)
        params = {}
        for key, names in SCHEDULE_PARAMETERS.items():
            used = [p for p in names if p in accepted]
            if getattr(self, key) is not None and not used:
                raise UsageError(f"{flag(key)} does not apply to --lr-schedule {name}")
            params.update({p: getattr(self, key) for p in used})
        if params.get("milestones") is not None:
            params["milestones"] = list(params["milestones"])
        known = steps_per_epoch is not None
        units = self.epochs * ((steps_per_epoch or 1) if unit == "step" else 1)
        if name == "cosine" and params["T_max"] is None:
            params["T_max"] = max(units - self.warmup_steps, 1)
        if name == "onecycle":
            if known and self.total_steps is not None and self.total_steps < units:
                raise UsageError(f"--total-steps {self.total_steps} is shorter than the run's {units:,} schedule "
                                 f"steps ({self.epochs} epochs x {units // self.epochs:,}): leave it out to span the run")
            params["total_steps"] = self.total_steps or units
        for key, required in accepted.items():
            if required and params.get(key) is None:
                raise UsageError(f"--lr-schedule {name} needs {flag(_SCHEDULE_FLAGS[key])}")
        with _naming_flags(_SCHEDULE_FLAGS):
            return make_schedule(name, self.lr, warmup_steps=self.warmup_steps,
                                 warmup_start_factor=self.warmup_start_factor, **params)

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(DTYPES[self.dtype])

    def data_options(self) -> dict:
        """The keyword arguments of :func:`nnscratch.data.load_dataset` these settings give (also what
        model files record; ``deskew`` only when on, so that files without it stay readable by
        versions before it)."""
        return {"verify": self.verify, "val_size": self.val_size, "seed": self.seed, "image_size": self.image_size,
                "color": self.color, "strict": self.strict, "label_column": self.label_column,
                "image_shape": self.image_shape, "classes": self.classes, **({"deskew": True} if self.deskew else {})}

    def model_spec(self, input_dim: int, num_classes: int):
        """The network these settings describe, for ``input_dim`` features and ``num_classes``."""
        from nnscratch.model.spec import mlp_spec

        return mlp_spec(input_dim, self.hidden, num_classes, self.activation, self.dropout, self.batch_norm,
                        self.input_dropout)

    def to_dict(self) -> dict:
        """Plain JSON-able data (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def describe(self) -> str:
        """The settings as the flags that give them, for the start of a run (defaults included,
        but for the rarely used ones): a valid ``nnscratch`` command line. Where the run reads
        and logs (data folder, device, threads, TensorBoard folder) is left out."""
        d = RunConfig().to_dict()
        parts = [setting_as_flag(key, value) for key, value in self.to_dict().items()
                 if key not in ("engines", "data_dir", "device", "threads", "tensorboard")
                 and not (key in _QUIET_DEFAULTS and value == d[key])]
        return " ".join(p for p in parts if p)


def _resolved_augment(value, dataset: str) -> str:
    """``augment`` as its canonical spec, ``auto`` resolved to ``dataset``'s preset (what the run
    records), or a one-line error naming ``--augment``."""
    from nnscratch.data.augment import augment_spec, parse_augment

    with _naming_flags({}):
        return parse_augment(augment_spec(value), dataset).spec()


def setting_as_flag(key: str, value: Any) -> str | None:
    """One setting as the command-line flag that sets it (None when there is nothing to write)."""
    if value is None:
        return None
    if key == "color":  # spelled --grayscale / --rgb
        return f"--{value}"
    name = flag(key)
    if isinstance(value, bool):
        return name if value else f"--no-{key.replace('_', '-')}"
    if isinstance(value, (list, tuple)):
        return f"{name} {' '.join(map(str, value))}"
    return f"{name} {value}"


#: The settings that hold a list of values (a tuple; a list is accepted and converted).
_SEQUENCE_KEYS = ("hidden", "betas", "lr_milestones", "engines")
#: Seeds are what every engine accepts: torch's and NumPy's generators take 64-bit seeds, and
#: anything above 2**63 - 1 overflows a signed 64-bit integer somewhere on the way.
MAX_SEED = 2**63 - 1


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool))


def check_value(key: str, value: Any) -> str | None:
    """What is wrong with ``value`` for ``key`` ("must be ..., got ..."), or None if it is fine."""
    from nnscratch.model.registry import ACTIVATIONS, INITIALIZERS
    from nnscratch.numpy_engine.optimizers import OPTIMIZERS
    from nnscratch.training.schedules import SCHEDULES, CyclicLR, OneCycleLR, ReduceLROnPlateau

    def number(low, high=None, low_open=False, high_open=True):
        if not _is_number(value) or not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        if (value <= low if low_open else value < low) or \
                (high is not None and (value >= high if high_open else value > high)):
            if high is None:
                return f"must be a number {'>' if low_open else '>='} {low:g}, got {value!r}"
            lo = "(" if low_open else "["
            hi = f"{high:g})" if high_open else f"{high:g}]"
            return f"must be in {lo}{low:g}, {hi}, got {value!r}"
        return None

    def integer(low, optional=False):
        if value is None and optional:
            return None
        if not _is_int(value) or value < low:
            return f"must be an integer >= {low}, got {value!r}"
        return None

    def optional_number():  # the range is the optimizer's or schedule's own check (they name the flag)
        if value is None or (_is_number(value) and math.isfinite(value)):
            return None
        return f"must be a finite number, got {value!r}"

    def optional_positive(off):  # None is "off"; a bad value says so, since 0 might be taken for off
        problem = None if value is None else number(0.0, low_open=True)
        return problem and f"{problem} (leave it out for {off})"

    def optional_boolean():
        return None if value is None else boolean()

    def boolean():
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"

    def size(parts):
        if value is None:
            return None
        from nnscratch.data.common import parse_size

        try:
            parse_size(value, "", parts)
        except UsageError:
            forms = " or ".join({2: "HxW like 28x28", 3: "HxWxC like 32x32x3"}[p] for p in parts)
            return f"must be {forms}, got {value!r}"
        return None

    def sequence(check, wanted):  # a list (tuple) whose items all pass ``check``; None is "not set"
        if value is None or (isinstance(value, (list, tuple)) and value and all(check(v) for v in value)):
            return None
        shown = list(value) if isinstance(value, tuple) else value
        return f"takes {wanted}, got {shown!r}"

    def classes():
        from nnscratch.data.common import parse_classes

        try:
            if isinstance(value, str):
                parse_classes(value)
                return None
        except UsageError as exc:
            if "limit" in str(exc):
                return str(exc).partition(": ")[2]
        return f"takes class indices and ranges such as 0-4 or 0,2,5-9, got {value!r}"

    def choice(options):
        return None if value in options else f"must be one of {', '.join(options)}, got {value!r}"

    def augment():
        from nnscratch.data.augment import augment_spec, check_spec

        try:
            check_spec(augment_spec(value))
        except ParameterError as exc:
            return exc.problem
        return None

    checks = {
        "dataset": lambda: None if isinstance(value, str) and value else f"must be a dataset name, got {value!r}",
        "val_size": lambda: integer(1, optional=True),
        "standardize": lambda: boolean(),
        "deskew": lambda: boolean(),
        "verify": lambda: boolean(),
        "image_size": lambda: size((2,)),
        "color": lambda: None if value is None else choice(("grayscale", "rgb")),
        "strict": lambda: boolean(),
        "label_column": lambda: None if value is None or isinstance(value, str) else
        f"must be a column name or index, got {value!r}",
        "image_shape": lambda: size((2, 3)),
        "classes": lambda: None if value is None else classes(),
        "augment": augment,
        "epochs": lambda: integer(1),
        "batch_size": lambda: integer(1),
        "lr": lambda: number(0.0, low_open=True),
        "hidden": lambda: "takes one or more positive layer sizes, got None" if value is None else
        sequence(lambda h: _is_int(h) and h >= 1, "one or more positive layer sizes"),
        "activation": lambda: choice(tuple(ACTIVATIONS)),
        "dropout": lambda: number(0.0, 1.0),
        "input_dropout": lambda: number(0.0, 1.0),
        "batch_norm": lambda: boolean(),
        "init": lambda: choice(INITIALIZERS),
        "label_smoothing": lambda: number(0.0, 1.0, high_open=False),
        "optimizer": lambda: choice(tuple(OPTIMIZERS)),
        "momentum": lambda: optional_number(),
        "dampening": lambda: optional_number(),
        "nesterov": lambda: optional_boolean(),
        "betas": lambda: sequence(_is_number, "two numbers like 0.9 0.999") or
        (None if value is None or len(value) == 2 else f"takes two numbers like 0.9 0.999, got {list(value)!r}"),
        "eps": lambda: optional_number(),
        "alpha": lambda: optional_number(),
        "centered": lambda: optional_boolean(),
        "amsgrad": lambda: optional_boolean(),
        "weight_decay": lambda: optional_number(),
        "lr_schedule": lambda: choice(tuple(SCHEDULES)),
        "lr_schedule_unit": lambda: None if value is None else choice(("step", "epoch")),
        "warmup_steps": lambda: integer(0),
        "warmup_start_factor": lambda: optional_number(),
        "lr_step_size": lambda: integer(1, optional=True),
        "lr_gamma": lambda: optional_number(),
        "lr_milestones": lambda: sequence(lambda m: _is_int(m) and m >= 1, "positive step numbers like 10 20"),
        "t_max": lambda: integer(1, optional=True),
        "min_lr": lambda: optional_number(),
        "max_lr": lambda: optional_number(),
        "step_size_up": lambda: integer(1, optional=True),
        "step_size_down": lambda: integer(1, optional=True),
        "cyclic_mode": lambda: None if value is None else choice(CyclicLR.MODES),
        "total_steps": lambda: integer(1, optional=True),
        "pct_start": lambda: optional_number(),
        "anneal_strategy": lambda: None if value is None else choice(OneCycleLR.ANNEAL_STRATEGIES),
        "div_factor": lambda: optional_number(),
        "final_div_factor": lambda: optional_number(),
        "three_phase": lambda: optional_boolean(),
        "plateau_factor": lambda: optional_number(),
        "plateau_patience": lambda: integer(0, optional=True),
        "plateau_threshold": lambda: optional_number(),
        "plateau_threshold_mode": lambda: None if value is None else choice(ReduceLROnPlateau.THRESHOLD_MODES),
        "plateau_cooldown": lambda: integer(0, optional=True),
        "plateau_eps": lambda: optional_number(),
        "l1": lambda: number(0.0),
        "l2": lambda: number(0.0),
        "clip_grad_norm": lambda: None if value is None else number(0.0, low_open=True),
        "max_norm": lambda: optional_positive("no max-norm constraint"),
        "early_stopping": lambda: integer(1, optional=True),
        "early_stopping_min_delta": lambda: number(0.0),
        "seed": lambda: None if _is_int(value) and 0 <= value <= MAX_SEED else
        f"must be a whole number from 0 to 2**63 - 1 ({MAX_SEED}), got {value!r}",
        "dtype": lambda: choice(tuple(DTYPES)),
        "precision": lambda: choice(("fp32", "fp16", "bf16")),
        "train_subset": lambda: integer(1, optional=True),
        "device": lambda: choice(("auto", "cpu", "cuda")),
        "threads": lambda: integer(1, optional=True),
        "data_dir": lambda: None if value is None or isinstance(value, str) else f"must be a folder, got {value!r}",
        "jit": lambda: boolean(),
        "finetune_from": lambda: None if value is None or (isinstance(value, str) and value) else
        f"must be the path of a model file or checkpoint, got {value!r}",
        "freeze": lambda: integer(0),
        "reset_head": lambda: boolean(),
        "checkpoints": lambda: boolean(),
        "checkpoint_every": lambda: integer(1, optional=True),
        "checkpoint_every_steps": lambda: integer(1, optional=True),
        "keep_checkpoints": lambda: integer(1, optional=True),
        "gradient_flow": lambda: boolean(),
        "gradient_flow_samples": lambda: None if integer(1) is None else
        f"{integer(1)} (to record none: --no-gradient-flow)",
        "tensorboard": lambda: None if value is None or (isinstance(value, str) and value.strip()) else
        f"must be a folder for the TensorBoard logs, got {value!r}",
        "engines": lambda: sequence(lambda e: isinstance(e, str), "engine names"),
    }
    return checks[key]()


#: The keys a config file may set: every field but ``engines`` (the verb chooses those).
CONFIG_KEYS = tuple(f.name for f in fields(RunConfig) if f.name != "engines")
#: Flags of compare/train that are not settings of the experiment.
_COMMAND_LINE_ONLY = ("out", "overwrite", "quiet", "config", "resume", "distributed", "dist_timeout")
#: Names other tools use for our keys, suggested when a file uses them.
_OTHER_NAMES = {"learning_rate": "lr", "num_epochs": "epochs", "n_epochs": "epochs", "hidden_sizes": "hidden",
                "hidden_layers": "hidden", "hidden_layer_sizes": "hidden", "batchnorm": "batch_norm",
                "bn": "batch_norm", "smoothing": "label_smoothing", "initializer": "init",
                "initialization": "init", "amp": "precision", "mixed_precision": "precision"}


_FLOAT_KEYS = tuple(f.name for f in fields(RunConfig) if "float" in str(f.type) and "tuple" not in str(f.type))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The settings of a TOML file, checked key by key; any problem is one line naming the key."""
    from nnscratch.data.limits import MAX_CONFIG_BYTES

    path = Path(path)
    if not path.is_file():
        problem = ("is a folder, not a file" if path.is_dir() else
                   "is not a regular file (a device or a pipe)" if path.exists() else "does not exist")
        raise UsageError(f"--config {path} {problem}; pass a .toml file such as configs/seed.toml")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise UsageError(f"--config {path} is larger than {MAX_CONFIG_BYTES:,} bytes, too large to be a config; "
                             "pass a .toml file such as configs/seed.toml")
        values = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses per level of nesting: [[[[... in a hostile file
        raise UsageError(f"{path} is not a config: {TOO_DEEP}; pass a .toml file such as configs/seed.toml") from None
    except OSError as exc:
        raise UsageError(f"--config {path} cannot be read: {exc.strerror or exc}") from None
    for key, value in values.items():
        if key not in CONFIG_KEYS:
            if key in _COMMAND_LINE_ONLY:
                raise UsageError(f"{path}: {key} is a command-line option (--{key}), not a config key: "
                                 "a config describes the experiment, not where or how it runs")
            close = [_OTHER_NAMES[key]] if key in _OTHER_NAMES else difflib.get_close_matches(key, CONFIG_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(CONFIG_KEYS)}"
            raise UsageError(f"{path}: unknown key {key!r}{hint}")
        if key == "label_column" and _is_int(value):
            values[key] = value = str(value)
        if key == "hidden" and _is_int(value):
            values[key] = value = [value]
        if key == "hidden" and not isinstance(value, list):
            raise UsageError(f"{path}: hidden must be a list of layer sizes like [512, 256], got {value!r}")
        if key in _FLOAT_KEYS and _is_int(value):
            values[key] = value = float(value)
        if key == "betas" and isinstance(value, list):
            values[key] = value = tuple(float(b) if _is_int(b) else b for b in value)
        if key == "lr_milestones" and isinstance(value, list):
            values[key] = value = tuple(value)
        if key == "augment" and isinstance(value, dict):  # a table of transforms: the flag's string
            from nnscratch.data.augment import augment_spec

            try:
                values[key] = value = augment_spec(value)
            except ParameterError as exc:
                raise UsageError(f"{path}: augment {exc.problem}") from None
        problem = check_value(key, value)
        if problem:
            raise UsageError(f"{path}: {key} {problem}")
    return values


def resolve_config(file: str | Path | None, flags: dict[str, Any], engines: tuple[str, ...]) -> RunConfig:
    """Defaults, then the file's values, then the flags that were given (``None`` = not given);
    with ``finetune_from``, the network settings not given are the source model's."""
    from nnscratch.run.finetune import with_source_network

    values = read_config_file(file) if file else {}
    values.update({k: v for k, v in flags.items() if v is not None})
    return RunConfig(**with_source_network(values), engines=engines)
