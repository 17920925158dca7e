"""A saved model and the test set it is evaluated on: what ``evaluate`` and ``inspect`` both read.

The model file (or checkpoint) gives the weights, the spec and what the model was trained on:
its dtype, dataset, data options (split, resizing, colour, classes, a CSV's layout) and
standardisation statistics. Those data options apply to whatever dataset is read, so the test
images are converted to what the model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnscratch.errors import UsageError


@dataclass(frozen=True, eq=False)
class ModelAndTestSet:
    """``state``, ``spec`` and ``info`` of the model file
    (:func:`~nnscratch.files.checkpoint.load_model_or_checkpoint`), the ``dtype`` it is run in,
    the loaded ``data`` (a :class:`~nnscratch.data.datasets.Dataset`) and ``x``, the model inputs
    of its test images ``(N, D)``."""

    path: Path
    state: dict
    spec: object
    info: dict
    dtype: np.dtype
    data: object
    x: np.ndarray


def load_model_and_test_set(model: str | Path, dataset: str | None = None, data_dir: str | None = None, *,
                            verify: bool | None = None, dtype: str | None = None,
                            progress: bool = True) -> ModelAndTestSet:
    """Read the model at ``model`` and the test set of ``dataset`` (default: the one it was trained
    on), checked against each other: a model for other inputs or another class count is a
    :class:`~nnscratch.errors.UsageError`. ``dtype`` default: the model's own."""
    from nnscratch.data import load_dataset
    from nnscratch.data.preprocess import model_inputs
    from nnscratch.files.checkpoint import load_model_or_checkpoint

    state, spec, info = load_model_or_checkpoint(model)
    dtype = np.dtype(dtype or info.get("dtype", "float32"))
    options = dict(info.get("data_options") or {})
    if verify is not None:
        options["verify"] = verify
    data = load_dataset(dataset or info.get("dataset", "mnist"), data_dir, progress=progress, **options)
    x = model_inputs(data.test_images, dtype.type, info.get("standardization"), str(model))
    if x.shape[1] != spec.input_dim:
        raise UsageError(f"{model} expects {spec.input_dim} inputs, the {data.title} images have {x.shape[1]}; "
                         "pass the --dataset it was trained on")
    if spec.num_classes != data.num_classes:
        raise UsageError(f"{model} predicts {spec.num_classes} classes, {data.title} has {data.num_classes}")
    return ModelAndTestSet(Path(model), state, spec, info, dtype, data, x)
