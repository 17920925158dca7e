"""Trained models on disk: safetensors files (never pickle) with the model spec in their metadata.

Tensor names are those of the torch twin's ``state_dict()`` (``0.weight``, ``0.bias``, ...), so a
file written by either engine loads into either engine, or into plain PyTorch::

    from safetensors.torch import load_file
    nn.Sequential(nn.Linear(784, 533), nn.ReLU(), nn.Linear(533, 10)).load_state_dict(load_file(path))
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from nnscratch.errors import DataError
from nnscratch.io import atomic_path
from nnscratch.spec import ModelSpec

FORMAT = "nnscratch-mlp/1"


def save_model(path: str | Path, state: dict[str, np.ndarray], spec: ModelSpec, **info) -> Path:
    """Write ``state`` and ``spec`` (plus ``info``, e.g. engine and dtype) atomically to ``path``."""
    metadata = {"format": FORMAT, "spec": spec.to_json(), "info": json.dumps(info, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(tmp), metadata=metadata)
    return Path(path)


def load_model(path: str | Path) -> tuple[dict[str, np.ndarray], ModelSpec, dict]:
    """Return ``(state, spec, info)`` from a file written by :func:`save_model`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"model file {path} does not exist; pass the .safetensors file a run wrote "
                        "(e.g. runs/<timestamp>-compare/numpy_model.safetensors)")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable safetensors file ({exc}); pass a model file written "
                        "by nnscratch train/compare") from None
    if metadata.get("format") != FORMAT or "spec" not in metadata:
        raise DataError(f"{path} has no nnscratch model spec in its metadata; it was not written by "
                        "nnscratch train/compare")
    try:
        spec = ModelSpec.from_json(metadata["spec"])
        info = json.loads(metadata.get("info", "{}"))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: its model spec is damaged ({exc})") from None
    return state, spec, info
