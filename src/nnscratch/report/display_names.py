"""Display names: the one place an engine key or a dataset name becomes what a person reads.

The results table, ``report.md`` and every figure take their names from here, so "PyTorch" or
"Fashion-MNIST" is spelled once. A built-in dataset's title comes from its registry entry
(:data:`nnscratch.data.DATASETS`); your own data is titled by its folder's or file's name.
"""

from __future__ import annotations

import re
from pathlib import PurePath

#: Engine key -> display name.
ENGINE_NAMES = {"numpy": "NumPy", "torch": "PyTorch"}


def engine_label(engine: str) -> str:
    """Display name of an engine key: ``"numpy"`` -> ``"NumPy"``, ``"torch"`` -> ``"PyTorch"``."""
    return ENGINE_NAMES.get(engine, engine)


def dataset_title(name: str, title: str | None = None) -> str:
    """The display name of a dataset.

    ``title`` when given (what :class:`~nnscratch.data.Dataset` recorded); otherwise the built-in
    registry's title (``"mnist"`` -> ``"MNIST"``, ``"cifar10"`` -> ``"CIFAR-10"``), the last part
    of the path of your own data (``"folder:/data/pets"`` -> ``"pets"``), or ``name`` as given.
    Older ``metrics.json`` files record only the name, hence the fallbacks.
    """
    if title:
        return str(title)
    from nnscratch.data.datasets import CUSTOM_KINDS, DATASETS

    name = str(name)
    spec = DATASETS.get(name.lower())
    if spec is not None:
        return spec.display_name
    kind, sep, path = name.partition(":")
    if sep and kind in CUSTOM_KINDS and PurePath(path).name:
        return PurePath(path).name
    return name


def dataset_slug(name: str, title: str | None = None) -> str:
    """A file-name-safe form of a dataset's name: ``"fashion-mnist"``, ``"cifar10"``, ``"pets"``.

    Lower case, every run of other characters than ``a-z0-9`` turned into one ``-``. Your own
    data (``folder:/data/pets``) is named by its title, not its whole path.
    """
    name = str(name)
    base = dataset_title(name, title) if ":" in name else name
    return re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-") or "dataset"


def class_noun(name: str) -> str:
    """What one class of the dataset is called in prose: ``"digit"`` for MNIST, else ``"class"``."""
    return "digit" if str(name).lower() == "mnist" else "class"
