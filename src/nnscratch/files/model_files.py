"""Trained models on disk: safetensors files (never pickle) with the model spec in their metadata.

Tensor names are those of the torch twin's ``state_dict()`` (``0.weight``, ``0.bias``,
``1.running_mean``...), so a file written by either engine loads into either engine, or into
plain PyTorch::

    from safetensors.torch import load_file
    nn.Sequential(nn.Linear(784, 533), nn.ReLU(), nn.Linear(533, 10)).load_state_dict(load_file(path))
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from nnscratch.errors import DataError, UsageError
from nnscratch.files.atomic import atomic_path
from nnscratch.model.registry import INTEGER_BUFFERS, state_shapes
from nnscratch.model.spec import ModelSpec

_DTYPES = {"int64": (np.int64,), "float32/float64": (np.float32, np.float64)}


def _allowed(name: str) -> str:
    return "int64" if name.rsplit(".", 1)[-1] in INTEGER_BUFFERS else "float32/float64"

#: The format tag written now. Version 2 holds a layer-list spec (see :mod:`nnscratch.model.spec`) and
#: buffers; files of version 1 (``hidden`` + ``activation`` spec, dense parameters only) still load.
FORMAT = "nnscratch-model/2"
READABLE_FORMATS = ("nnscratch-mlp/1", FORMAT)


def save_model(path: str | Path, state: dict[str, np.ndarray], spec: ModelSpec, **info) -> Path:
    """Write ``state`` and ``spec`` (plus ``info``, e.g. engine and dtype) atomically to ``path``."""
    metadata = {"format": FORMAT, "spec": spec.to_json(), "info": json.dumps(info, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file({k: np.array(v, order="C") for k, v in state.items()}, str(tmp), metadata=metadata)
    return Path(path)


def load_model(path: str | Path) -> tuple[dict[str, np.ndarray], ModelSpec, dict]:
    """Return ``(state, spec, info)`` from a file written by :func:`save_model`."""
    path = Path(path)
    if not path.is_file():
        problem = "is not a file" if path.exists() else "does not exist"
        raise DataError(f"model file {path} {problem}; pass the .safetensors file a run wrote "
                        "(e.g. runs/<timestamp>-compare/numpy_model.safetensors)")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable safetensors file ({exc}); pass a model file written "
                        "by nnscratch train/compare") from None
    if metadata.get("format") not in READABLE_FORMATS or "spec" not in metadata:
        raise DataError(f"{path} has no nnscratch model spec in its metadata; it was not written by "
                        "nnscratch train/compare")
    try:
        spec = ModelSpec.from_json(metadata["spec"])
        info = json.loads(metadata.get("info", "{}"))
    except (ValueError, KeyError, TypeError, UsageError) as exc:
        raise DataError(f"{path}: its model spec is damaged ({exc})") from None
    _check_fits(path, state, spec)
    return state, spec, info


def _check_fits(path: Path, state: dict[str, np.ndarray], spec: ModelSpec) -> None:
    expected = state_shapes(spec)
    problems = [f"missing {n}" for n in expected if n not in state]
    problems += [f"unexpected {n}" for n in state if n not in expected]
    problems += [f"{n} has shape {tuple(state[n].shape)}, not {shape}" for n, shape in expected.items()
                 if n in state and tuple(state[n].shape) != shape]
    problems += [f"{n} is {state[n].dtype}, not {_allowed(n)}" for n in expected
                 if n in state and state[n].dtype not in _DTYPES[_allowed(n)]]
    if problems:
        raise DataError(f"{path}: its tensors do not fit its spec {spec.describe()}: {'; '.join(problems)}")
