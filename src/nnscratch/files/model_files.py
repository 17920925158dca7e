"""Trained models on disk: safetensors files (never pickle) with the model spec in their metadata.

Tensor names are those of the torch twin's ``state_dict()`` (``0.weight``, ``0.bias``,
``1.running_mean``...), so a file written by either engine loads into either engine, or into
plain PyTorch::

    from safetensors.torch import load_file
    nn.Sequential(nn.Linear(784, 533), nn.ReLU(), nn.Linear(533, 10)).load_state_dict(load_file(path))

Loading trusts nothing in the file (:func:`load_model`): the header is checked by
:mod:`~nnscratch.files.safetensors_file`, then the metadata (format, spec, ``info``: an object whose
dtype, data options and standardisation are ones :func:`load_model`'s callers can use), then every
tensor's name, shape and dtype against the spec, all before a byte of tensor data is read; the
tensor data is then checked against its SHA-256 (stored in the metadata since files of format 2 have
it) and must be finite: a model with NaN or infinite weights (a diverged run's) is refused rather
than evaluated to chance.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import numpy as np

from nnscratch.errors import DataError, UsageError
from nnscratch.files.json_text import parse_json
from nnscratch.files.safetensors_file import DTYPES, SafetensorsHeader, read_header, read_tensors, write_safetensors
from nnscratch.model.registry import INTEGER_BUFFERS, state_shapes
from nnscratch.model.spec import ModelSpec

_DTYPES = {"int64": ("I64",), "float32/float64": ("F32", "F64")}

#: The metadata key of the SHA-256 of the tensor data (files written before it was added lack it).
DIGEST_KEY = "sha256"

#: What ``info["dtype"]`` may be: the float types the engines compute in.
FLOAT_DTYPES = ("float32", "float64")


def _allowed(name: str) -> str:
    return "int64" if name.rsplit(".", 1)[-1] in INTEGER_BUFFERS else "float32/float64"

#: The format tag written now. Version 2 holds a layer-list spec (see :mod:`nnscratch.model.spec`) and
#: buffers; files of version 1 (``hidden`` + ``activation`` spec, dense parameters only) still load.
FORMAT = "nnscratch-model/2"
READABLE_FORMATS = ("nnscratch-mlp/1", FORMAT)


def save_model(path: str | Path, state: dict[str, np.ndarray], spec: ModelSpec, **info) -> Path:
    """Write ``state`` and ``spec`` (plus ``info``, e.g. engine and dtype) atomically to ``path``, with
    the SHA-256 of the tensor data in the metadata (key :data:`DIGEST_KEY`)."""
    metadata = {"format": FORMAT, "spec": spec.to_json(), "info": json.dumps(info, sort_keys=True)}
    return write_safetensors(path, {k: np.array(v, order="C") for k, v in state.items()}, metadata,
                             digest_key=DIGEST_KEY)


def load_model(path: str | Path) -> tuple[dict[str, np.ndarray], ModelSpec, dict]:
    """Return ``(state, spec, info)`` from a file written by :func:`save_model`.

    Everything is checked before it is used (see the module docstring); whatever is wrong is one
    :class:`~nnscratch.errors.DataError` line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        problem = "is not a file" if path.exists() else "does not exist"
        raise DataError(f"model file {path} {problem}; pass the .safetensors file a run wrote "
                        "(e.g. runs/<timestamp>-compare/numpy_model.safetensors)")
    try:
        header = read_header(path, what="model file")
    except DataError as exc:
        raise DataError(f"{exc}; pass a safetensors model file written by nnscratch train/compare") from None
    metadata = header.metadata
    if metadata.get("format") not in READABLE_FORMATS or "spec" not in metadata:
        raise DataError(f"{path} has no nnscratch model spec in its metadata; it was not written by "
                        "nnscratch train/compare")
    try:
        spec = ModelSpec.from_json(metadata["spec"])
        expected = state_shapes(spec)
    except (ValueError, KeyError, TypeError, AttributeError, UsageError) as exc:
        raise DataError(f"{path}: its model spec is damaged ({exc})") from None
    info = _check_info(path, metadata.get("info", "{}"))
    _check_fits(path, header, expected, spec)
    state, digest = read_tensors(header)
    if DIGEST_KEY in metadata and metadata[DIGEST_KEY] != digest:
        raise DataError(f"{path}: its tensor data is damaged (SHA-256 {digest}, the file's metadata says "
                        f"{metadata[DIGEST_KEY]}); train the model again or restore the file")
    check_finite(path, state)
    return state, spec, info


def _check_fits(path: Path, header: SafetensorsHeader, expected: dict[str, tuple[int, ...]], spec: ModelSpec) -> None:
    """Names, shapes and dtypes of the file's tensors (from its header) against the spec's."""
    tensors = header.tensors
    problems = [f"missing {n}" for n in expected if n not in tensors]
    problems += [f"unexpected {n}" for n in tensors if n not in expected]
    problems += [f"{n} has shape {tensors[n].shape}, not {shape}" for n, shape in expected.items()
                 if n in tensors and tensors[n].shape != shape]
    problems += [f"{n} is {DTYPES[tensors[n].dtype].name}, not {_allowed(n)}" for n in expected
                 if n in tensors and tensors[n].dtype not in _DTYPES[_allowed(n)]]
    if problems:
        raise DataError(f"{path}: its tensors do not fit its spec {spec.describe()}: {'; '.join(problems)}")


def check_finite(path: Path, state: dict[str, np.ndarray]) -> None:
    bad = {n: int(np.count_nonzero(~np.isfinite(a))) for n, a in state.items() if a.dtype.kind == "f"}
    bad = {n: k for n, k in bad.items() if k}
    if bad:
        first = next(iter(bad))
        raise DataError(f"{path}: its weights are not all finite ({sum(bad.values()):,} NaN or infinite values, "
                        f"{bad[first]:,} of them in {first}); the run that wrote it diverged, train it again "
                        "(e.g. with a smaller learning rate)")


def _data_option_names() -> tuple[str, ...]:
    """The data options a model file may carry: ``load_dataset``'s keyword options, less the two that
    are about the session (download, progress) rather than the data."""
    from nnscratch.data import load_dataset

    return tuple(n for n, p in inspect.signature(load_dataset).parameters.items()
                 if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in ("download", "progress"))


def _check_info(path: Path, text: str) -> dict:
    """``info`` parsed and checked: an object whose ``dtype``, ``dataset``, ``data_options`` and
    ``standardization`` (where present) are what the evaluation can use."""
    try:
        info = parse_json(text)
    except ValueError as exc:
        raise DataError(f"{path}: its info metadata is not JSON ({exc})") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: its info metadata is a JSON {type(info).__name__}, not an object")
    problem = info_problem(info)
    if problem:
        raise DataError(f"{path}: its info metadata is damaged: {problem}")
    return info


def info_problem(info: dict) -> str | None:
    """What is wrong with a model's ``info`` (dtype, dataset, data options, standardisation), or None."""
    if info.get("dtype", "float32") not in FLOAT_DTYPES:
        return f"dtype {info['dtype']!r} is not one of {', '.join(FLOAT_DTYPES)}"
    if not isinstance(info.get("dataset", ""), str):
        return f"dataset {info['dataset']!r} is not a name"
    options = info.get("data_options") or {}
    if not isinstance(options, dict):
        return f"data_options is a JSON {type(options).__name__}, not an object"
    unknown = sorted(set(options) - set(_data_option_names()))
    if unknown:
        return f"unknown data option(s) {', '.join(map(repr, unknown))} (known: {', '.join(_data_option_names())})"
    if not isinstance(options.get("deskew", False), bool):
        return f"data option deskew is {options['deskew']!r}, not true or false"
    return _standardization_problem(info.get("standardization"))


def _standardization_problem(norm) -> str | None:
    """``None`` (no standardisation) or ``{"mean": [...], "std": [...]}``: one finite mean and one
    finite, positive std per channel."""
    if norm is None:
        return None
    if not isinstance(norm, dict) or not {"mean", "std"} <= set(norm):
        return "standardization needs both mean and std"
    mean, std = norm["mean"], norm["std"]
    numbers = (int, float)
    if not (isinstance(mean, list) and isinstance(std, list) and mean and len(mean) == len(std)
            and all(isinstance(v, numbers) and not isinstance(v, bool) for v in mean + std)):
        return "standardization mean and std must be lists of numbers of the same length (one per channel)"
    if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
        return "standardization mean and std must be finite, and every std above 0"
    return None
