"""The run configuration: the seed project's hyperparameters as defaults, validated with clear errors."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from nnscratch.errors import UsageError

DTYPES = {"float32": np.float32, "float64": np.float64}


@dataclass
class RunConfig:
    """Everything that defines a training run. Defaults are the reference (seed) project's."""

    dataset: str = "mnist"
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.01
    hidden: tuple[int, ...] = (533,)
    seed: int = 0
    dtype: str = "float32"
    train_subset: int | None = None
    device: str = "auto"
    threads: int | None = None
    data_dir: str | None = None
    engines: tuple[str, ...] = field(default=("numpy", "torch"))
    jit: bool = False  # NumPy engine only: Numba element-wise kernels

    def __post_init__(self) -> None:
        self.hidden = tuple(self.hidden)
        self.engines = tuple(self.engines)
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.lr > 0 and np.isfinite(self.lr), f"--lr must be a positive number, got {self.lr}"),
            (len(self.hidden) >= 1 and all(h >= 1 for h in self.hidden),
             f"--hidden takes one or more positive layer sizes, got {list(self.hidden)}"),
            (self.dtype in DTYPES, f"--dtype must be float32 or float64, got {self.dtype!r}"),
            (self.train_subset is None or self.train_subset >= 1,
             f"--train-subset must be at least 1, got {self.train_subset}"),
            (self.threads is None or self.threads >= 1, f"--threads must be at least 1, got {self.threads}"),
            (self.seed >= 0, f"--seed must be a non-negative integer, got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(DTYPES[self.dtype])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"], d["engines"] = list(self.hidden), list(self.engines)
        return d

    def describe(self) -> str:
        """The flags as they were used, for the start of a run and the report."""
        subset = self.train_subset if self.train_subset else "all"
        return (f"--epochs {self.epochs} --batch-size {self.batch_size} --lr {self.lr} "
                f"--hidden {' '.join(map(str, self.hidden))} --seed {self.seed} --dtype {self.dtype} "
                f"--train-subset {subset}")
