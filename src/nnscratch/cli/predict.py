"""``nnscratch predict``'s command line: a trained model's top classes for your own image files.

The preparation of each image (MNIST's, for MNIST models) is :mod:`nnscratch.data.handwriting`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from nnscratch.errors import DataError, UsageError
from nnscratch.files.json_text import parse_json

TOP = 3  #: classes printed per image


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="PNG, JPEG, BMP or GIF files, or folders of them, any size, dark-on-light or light-on-dark")
    p.add_argument("--model", required=True, metavar="PATH",
                   help="a *_model.safetensors file or a checkpoint, of either engine")
    p.add_argument("--engine", choices=["numpy", "torch"], default="numpy",
                   help="engine to run the model with (default: numpy)")
    p.add_argument("--json", action="store_true",
                   help='print [{"file": ..., "top": [[class, probability], ...]}] on stdout, and nothing else')
    p.add_argument("--show", default=None, metavar="DIR",
                   help="save each image beside what the model sees, as DIR/<name>.png")


def run_predict(args: argparse.Namespace) -> int:
    from nnscratch.data.deskew import deskew
    from nnscratch.data.handwriting import image_files, input_shape, prepare_for_model, read_image
    from nnscratch.data.preprocess import model_inputs
    from nnscratch.engines import make_engine
    from nnscratch.files.checkpoint import load_model_or_checkpoint
    from nnscratch.threads import set_threads
    from nnscratch.training.metrics import softmax

    show = _show_folder(args.show)
    files = image_files(args.images)
    originals = [read_image(path) for path in files]  # a file that is no image is said before the model loads
    state, spec, info = load_model_or_checkpoint(args.model)
    dataset = info.get("dataset")
    shape = input_shape(spec.input_dim, dataset, info.get("data_options"), info.get("standardization"))
    names = class_names(args.model, dataset, spec.num_classes, (info.get("data_options") or {}).get("classes"))
    prepared = [prepare_for_model(image, dataset, shape, str(path)) for path, image in zip(files, originals)]
    if (info.get("data_options") or {}).get("deskew"):   # as its training images were (data/deskew.py)
        if shape[-1] != 1:
            raise DataError(f"{args.model}: its metadata asks for deskewed inputs, but the model reads "
                            f"{shape[-1]}-channel images, and deskewing takes greyscale ones; the file is damaged")
        prepared = list(deskew(np.stack(prepared)))
    dtype = np.dtype(info.get("dtype", "float32"))
    x = model_inputs(np.stack(prepared), dtype.type, info.get("standardization"), str(args.model))
    set_threads(None)
    engine = make_engine(args.engine, spec, state, dtype=dtype, device="auto")
    probabilities = softmax(engine.eval().predict_logits(x))
    results = [{"file": str(path), "top": top_classes(p, names)} for path, p in zip(files, probabilities)]
    if show is not None:
        _write_show(show, files, originals, prepared)
    if args.json:
        print("[" + ",".join(f"\n  {json.dumps(r)}" for r in results) + "\n]")  # valid JSON, one file a line
        return 0
    print(f"{args.model}: {spec.describe()}, trained on {dataset or 'an unknown dataset'}, engine {args.engine}")
    for r in results:
        print(f"{r['file']}: " + ", ".join(f"{name} {p:.3f}" for name, p in r["top"]))
    if show is not None:
        print(f"wrote what the model saw to {show}/")
    return 0


def top_classes(probabilities: np.ndarray, names: list[str], k: int = TOP) -> list[list]:
    """The ``k`` most probable classes, most probable first: ``[[name, probability], ...]``."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [[names[i], round(float(probabilities[i]), 6)] for i in order]


def class_names(model: str | Path, dataset: str | None, num_classes: int, classes: str | None = None) -> list[str]:
    """The model's class names: a built-in dataset's (those of its ``classes`` data option, when the
    model was trained on some classes only), else those in the ``metrics.json`` of the run folder
    the model (or its checkpoint) sits in, else the class indices ``"0"``, ``"1"``, ..."""
    from nnscratch.data.common import parse_classes
    from nnscratch.data.datasets import DATASETS

    if dataset in DATASETS:
        names = list(DATASETS[dataset].class_names)
        if classes is not None:
            try:
                names = [names[c] for c in parse_classes(classes)]
            except (UsageError, IndexError):
                names = []
        if len(names) == num_classes:
            return names
    for folder in list(Path(model).resolve().parents)[:3]:  # OUT/, OUT/checkpoints/, OUT/checkpoints/numpy/
        try:
            recorded = parse_json((folder / "metrics.json").read_text(encoding="utf-8"))["dataset"]
            if recorded["name"] == dataset and len(recorded["class_names"]) == num_classes:
                return [str(n) for n in recorded["class_names"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return [str(k) for k in range(num_classes)]


def _show_folder(show: str | None) -> Path | None:
    """``--show DIR``, checked before any work: a folder, or a name where one can be made."""
    if show is None:
        return None
    path = Path(show)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--show {show} is a file; pass a folder for the side-by-side pictures")
    return path


def _write_show(folder: Path, files: list[Path], originals, prepared) -> None:
    """Each side-by-side picture as ``folder/<name>.png`` (``<name>-2.png``... when names repeat), atomically."""
    from nnscratch.data.handwriting import side_by_side
    from nnscratch.files.atomic import atomic_path

    used: set[str] = set()
    for path, original, array in zip(files, originals, prepared):
        stem, k = path.stem, 1
        while f"{stem}.png" in used:
            k += 1
            stem = f"{path.stem}-{k}"
        used.add(f"{stem}.png")
        with atomic_path(folder / f"{stem}.png") as tmp:
            side_by_side(original, array).save(tmp, format="PNG")
