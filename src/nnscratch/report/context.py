"""What the figures and the report both read out of a ``metrics.json`` dict, read once.

:func:`dataset_view` resolves the dataset's title, class names and image shape (with fallbacks for
older files that record only the name); :func:`step_lrs` and :func:`lr_varies` tell whether the
learning rate changed during training, which decides whether ``lr_schedule.png`` is drawn and
described.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from nnscratch.report.display_names import class_noun, dataset_slug, dataset_title


@dataclass(frozen=True)
class DatasetView:
    """A run's dataset as the report shows it.

    Attributes
    ----------
    name : str            the dataset name as recorded (``"mnist"``, ``"folder:/data/pets"``)
    title : str           its display name (``"MNIST"``, ``"pets"``)
    slug : str            file-name form (``"mnist"`` -> ``mnist_samples.png``)
    class_names : tuple of str   indexed by label (empty when nothing records them)
    image_shape : tuple of int or None   ``(H, W, C)`` of one image when recorded
    noun : str            ``"digit"`` for MNIST, ``"class"`` otherwise
    """

    name: str
    title: str
    slug: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, ...] | None
    noun: str


def dataset_view(
    metrics: Mapping[str, Any], class_names: Sequence[str] | None = None
) -> DatasetView:
    """The run's dataset, from ``metrics["dataset"]``.

    Class names come from ``class_names`` when given, else the dataset block, else the
    ``per_class`` entries of the first engine's test results (older ``metrics.json`` files).
    """
    dataset = metrics.get("dataset") or {}
    name = str(dataset.get("name") or "dataset")
    title = dataset.get("title") or None
    names = class_names if class_names is not None else dataset.get("class_names")
    if not names:
        names = _per_class_names(metrics)
    shape = dataset.get("image_shape")
    return DatasetView(name=name, title=dataset_title(name, title), slug=dataset_slug(name, title),
                       class_names=tuple(str(c) for c in names or ()),
                       image_shape=tuple(int(s) for s in shape) if shape else None,
                       noun=class_noun(name))


def _per_class_names(metrics: Mapping[str, Any]) -> list[str]:
    """Class names from the longest ``per_class`` list among the engines' test results."""
    lists = [r.get("test", {}).get("per_class") or [] for r in metrics.get("engines", {}).values()]
    longest = max(lists, key=len, default=[])
    return [str(entry.get("class", k)) for k, entry in enumerate(longest)]


def step_lrs(metrics: Mapping[str, Any]) -> dict[str, list[float]]:
    """Each engine's per-step learning rates (``engines[e]["step_lr"]``), where recorded."""
    return {engine: [float(v) for v in result["step_lr"]]
            for engine, result in metrics.get("engines", {}).items() if result.get("step_lr")}


def lr_varies(metrics: Mapping[str, Any]) -> bool:
    """Whether any engine's learning rate took more than one value during training."""
    return any(min(lrs) != max(lrs) for lrs in step_lrs(metrics).values())


def image_kind(shape: Sequence[int] | None) -> str:
    """``"32×32 colour"``, ``"28×28 greyscale"``, ``"8×8×2"``; empty when unknown."""
    if not shape:
        return ""
    dims = list(shape)
    channels = dims[2] if len(dims) > 2 else 1
    size = "×".join(str(d) for d in dims[:2])
    return {1: f"{size} greyscale", 3: f"{size} colour", 4: f"{size} colour (with alpha)"}.get(
        channels, f"{size}×{channels}")
