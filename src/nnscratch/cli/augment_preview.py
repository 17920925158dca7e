"""``nnscratch augment-preview``: what an augmentation (``--augment``, or a config's ``augment``)
does to a dataset's training images, as two figures in a run folder (``--out``):

* ``augment_preview.png``: a row per class (its name from the dataset), the first ``--per-class``
  training images of each, each followed by ``--versions`` augmented versions;
* ``augment_transforms.png``: one training image under each transform of the spec alone (at its
  strength), then under all of them together.

The dataset options are the train verb's (``--dataset``, ``--data-dir``, ``--classes``, ...);
without ``--augment`` (or a config's) the dataset's preset (``auto``) is shown. The draws come
from ``--seed``; the figures' titles give the spec.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from nnscratch.errors import UsageError

DEFAULT_PER_CLASS, DEFAULT_VERSIONS = 2, 5
#: Most classes drawn (one row each); the first ones, said so in the title.
MAX_CLASSES = 20


def add_augment_preview_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the preview (docs/augmentation.md)")
    g.add_argument("--per-class", type=int, default=DEFAULT_PER_CLASS, metavar="K",
                   help=f"training images shown per class (default: {DEFAULT_PER_CLASS})")
    g.add_argument("--versions", type=int, default=DEFAULT_VERSIONS, metavar="V",
                   help=f"augmented versions of each (default: {DEFAULT_VERSIONS})")


def run_augment_preview(args: argparse.Namespace, cfg, folder_flags: Mapping[str, str], augment_given: bool) -> int:
    """Check, load the data, draw, write the two figures and a ``metrics.json`` through a run folder."""
    import dataclasses

    from nnscratch.data import load_dataset
    from nnscratch.data.augment import parse_augment
    from nnscratch.files.atomic import write_json
    from nnscratch.run.experiment import check_augment, open_run_folder

    for name in ("per_class", "versions"):
        if not 1 <= getattr(args, name) <= 20:
            raise UsageError(f"--{name.replace('_', '-')} must be a whole number from 1 to 20, got {getattr(args, name)}")
    if args.resume:
        raise UsageError("augment-preview draws from the data, not a run: drop --resume")
    if cfg.augment == "none":
        if augment_given:
            raise UsageError("augment-preview needs an augmentation: --augment none shows nothing; "
                             "give a spec such as rotate=10,shift=2 or auto")
        cfg = dataclasses.replace(cfg, augment="auto")  # resolved to the dataset's preset (or a one-line error)
    out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-augment-preview")
    folder = open_run_folder(cfg, out, args.overwrite, names=folder_flags)
    augmentation = parse_augment(cfg.augment, cfg.dataset)
    print(f"nnscratch augment-preview: {cfg.dataset}, --augment {augmentation.spec()}, seed {cfg.seed}; output: {out}/")
    data = load_dataset(cfg.dataset, cfg.data_dir, progress=not args.quiet, **cfg.data_options())
    check_augment(cfg, data.image_shape)
    rng = np.random.default_rng(cfg.seed)
    grid, shown = _grid(data, augmentation, rng, args.per_class, args.versions)
    rows, image = _transform_rows(data, augmentation, rng, max(args.versions, 8))
    from nnscratch.report.augment_plot import plot_augment_grid, plot_augment_transforms

    spec = augmentation.spec()
    more = f" (the first {len(shown)} of {data.num_classes} classes)" if len(shown) < data.num_classes else ""
    more += ", deskewed" if cfg.deskew else ""
    with folder:
        plot_augment_grid(*grid, [data.class_names[c] for c in shown], folder.staging / "augment_preview.png",
                          title=f"{data.title}{more}: --augment {spec}\n"
                                f"each training image (framed), then {args.versions} augmented versions (seed {cfg.seed})")
        plot_augment_transforms(image, rows, folder.staging / "augment_transforms.png",
                                title=f"{data.title}{', deskewed' if cfg.deskew else ''}: each transform of --augment {spec} "
                                      "alone, then all together")
        write_json(folder.staging / "metrics.json", {"config": cfg.to_dict(), "engines": {},
                                                     "augment_preview": {"augment": spec, "classes": shown,
                                                                         "per_class": args.per_class,
                                                                         "versions": args.versions}})
        folder.commit()
    print(f"wrote {out}/augment_preview.png and augment_transforms.png")
    return 0


def _grid(data, augmentation, rng, per_class: int, versions: int):
    """``((originals, augmented), classes shown)``: the first ``per_class`` training images of each
    class (of the first :data:`MAX_CLASSES`), each augmented ``versions`` times in one batch."""
    shown = [c for c in range(min(data.num_classes, MAX_CLASSES)) if np.any(data.train_labels == c)]
    picks = [np.flatnonzero(data.train_labels == c)[:per_class] for c in shown]
    k = min(len(p) for p in picks)
    originals = np.stack([data.train_images[p[:k]] for p in picks])               # (classes, k, H, W, C)
    batch = np.repeat(originals.reshape(-1, *originals.shape[2:]), versions, axis=0)
    augmented = augmentation.apply(np.ascontiguousarray(batch), rng)
    return (originals, augmented.reshape(len(shown), k, versions, *originals.shape[2:])), shown


def _transform_rows(data, augmentation, rng, versions: int):
    """``([(label, versions of the first training image)], that image)``: each transform alone, then all."""
    from nnscratch.data.augment import TRANSFORMS, transform_label

    image = data.train_images[0]
    batch = np.repeat(image[None], versions, axis=0)
    rows = [(transform_label(name, augmentation), augmentation.only(name).apply(batch, rng))
            for name in TRANSFORMS if augmentation.only(name).active]
    if len(rows) > 1:
        rows.append(("all together", augmentation.apply(batch, rng)))
    return rows, image
