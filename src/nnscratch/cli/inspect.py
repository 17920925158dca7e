"""``nnscratch inspect``'s command line: what a trained model has learned, as figures.

The numbers are :mod:`nnscratch.analysis.inspect`'s (the NumPy engine's own layers, evaluation
mode), the figures :mod:`nnscratch.report.inspect_plots`'. Everything goes into ``--out``
through a run folder (staged, then put in place whole, with a ``metrics.json`` that names no
trained engine, so that ``--overwrite`` may replace it): ``first_layer_weights.png``,
``class_units.png``, ``activations.png``, ``saliency.png``, ``top_losses.png``, ``inspect.md``
(the index) and ``inspect.json`` (the numbers). Inputs that are not images (a ``1xD`` CSV row,
a 2x2 "image" of four features) get the top losses only, said in one line.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Mapping


from nnscratch.errors import UsageError

DEFAULT_IMAGES, DEFAULT_SMOOTH, DEFAULT_TOP, DEFAULT_UNITS = "0-5", 50, 16, 6
#: At most this many chosen images (rows of activations.png and saliency.png) and top losses.
MAX_IMAGES, MAX_TOP, MAX_UNITS = 16, 64, 16
MAX_SMOOTH = 10_000  #: noisy copies per image: SmoothGrad needs ~50; each is a row of the batch held in memory
#: First-layer units drawn in first_layer_weights.png (the ones of largest weight norm beyond it).
SHOW_UNITS = 64


def add_inspect_arguments(p: argparse.ArgumentParser) -> None:
    from nnscratch.analysis.inspect import DEFAULT_NOISE

    p.add_argument("--model", required=True, metavar="PATH",
                   help="a *_model.safetensors file or a checkpoint, of either engine")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help="floating-point type (default: the one the model was trained in)")
    g = p.add_argument_group("what to draw (docs/inspect.md)")
    g.add_argument("--images", default=None, metavar="LIST",
                   help=f"test images for activations.png and saliency.png: indices and ranges such as 0,7,42 or "
                        f"0-5, at most {MAX_IMAGES} (default: {DEFAULT_IMAGES}, or fewer in a smaller test set)")
    g.add_argument("--smooth", type=int, default=DEFAULT_SMOOTH, metavar="N",
                   help=f"SmoothGrad: average the saliency over N noisy copies of each image; 0: plain gradient only "
                        f"(default: {DEFAULT_SMOOTH})")
    g.add_argument("--noise", type=float, default=DEFAULT_NOISE, metavar="SIGMA",
                   help=f"SmoothGrad's noise, a fraction of each image's pixel range (default: {DEFAULT_NOISE})")
    g.add_argument("--seed", type=int, default=None,
                   help="seed of SmoothGrad's noise (default: the model's run seed, else 0)")
    g.add_argument("--top", type=int, default=DEFAULT_TOP, metavar="N",
                   help=f"test images of highest loss in top_losses.png, at most {MAX_TOP} (default: {DEFAULT_TOP})")
    g.add_argument("--units", type=int, default=DEFAULT_UNITS, metavar="K",
                   help=f"top hidden units per class in class_units.png, at most {MAX_UNITS} "
                        f"(default: {DEFAULT_UNITS})")
    r = p.add_argument_group("output")
    r.add_argument("--out", default=None, metavar="DIR", help="output folder (default: runs/<timestamp>-inspect/)")
    r.add_argument("--overwrite", action="store_true", help="replace a finished run at --out (default: refuse)")


def parse_images(text: str) -> list[int]:
    """``"0,7,42"`` or ``"0-5,42"`` -> test indices, in the order given, each once."""
    out: list[int] = []
    for piece in str(text).replace(" ", "").split(","):
        low, dash, high = piece.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()) or (dash and int(high) < int(low)):
            raise UsageError(f"--images {text!r}: expected test image indices and ranges such as 0,7,42 or 0-5")
        for i in range(int(low), int(high if dash else low) + 1):
            if i not in out:
                out.append(i)
            if len(out) > MAX_IMAGES:
                raise UsageError(f"--images {text!r}: at most {MAX_IMAGES} images fit the figures; choose fewer")
    return out


def _check_flags(args: argparse.Namespace) -> list[int]:
    from nnscratch.run.config import MAX_SEED

    images = parse_images(DEFAULT_IMAGES if args.images is None else args.images)
    if not 0 <= args.smooth <= MAX_SMOOTH:
        raise UsageError(f"--smooth must be a whole number from 0 (no SmoothGrad) to {MAX_SMOOTH:,}, got {args.smooth}")
    if not (math.isfinite(args.noise) and args.noise >= 0):
        raise UsageError(f"--noise must be a finite number >= 0 (a fraction of the pixel range), got {args.noise}")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"--seed must be a whole number from 0 to 2**63 - 1 ({MAX_SEED}), got {args.seed}")
    for flag, value, high in (("--top", args.top, MAX_TOP), ("--units", args.units, MAX_UNITS)):
        if not 1 <= value <= high:
            raise UsageError(f"{flag} must be a whole number from 1 to {high}, got {value}")
    return images


def run_inspect(args: argparse.Namespace, folder_flags: Mapping[str, str]) -> int:
    """Check everything, compute, write the figures and the index into ``--out``, say where."""
    from nnscratch.analysis.inspect import inspect_model, is_image
    from nnscratch.files.atomic import write_json
    from nnscratch.files.run_folder import RunFolder
    from nnscratch.run.experiment import dataset_paths
    from nnscratch.run.saved_model import load_model_and_test_set
    from nnscratch.threads import set_threads

    images = _check_flags(args)
    loaded = load_model_and_test_set(args.model, args.dataset, args.data_dir, verify=args.verify, dtype=args.dtype)
    data, spec = loaded.data, loaded.spec
    n_test = len(data.test_labels)
    bad = [i for i in images if i >= n_test]
    if args.images is None or not is_image(data.image_shape):  # the default, or no pictures to draw: what there is
        images, bad = [i for i in images if i < n_test], []
    if bad:
        raise UsageError(f"--images {bad[0]}: the {data.title} test set has {n_test:,} images (0 to {n_test - 1})")
    out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-inspect")
    folder = RunFolder(out, overwrite=args.overwrite, protected=[Path(args.model), *dataset_paths(data.name)],
                       names=folder_flags)
    set_threads(None)
    seed = args.seed if args.seed is not None else int(loaded.info.get("seed") or 0)
    print(f"nnscratch inspect: {args.model}: {spec.describe()}, {data.title} test set ({n_test:,} images), "
          f"{loaded.dtype}")
    result = inspect_model(spec, loaded.state, data.test_images, data.test_labels,
                           standardization=loaded.info.get("standardization"), dtype=loaded.dtype, images=images,
                           smooth=args.smooth, noise=args.noise, seed=seed, top=args.top, units=args.units,
                           show=SHOW_UNITS)
    from nnscratch.report.inspect_report import write_inspection  # imports matplotlib: only once there is a result

    command = _command(args)
    with folder:
        written = write_inspection(folder.staging, result, test_images=data.test_images,
                                   test_labels=data.test_labels, class_names=data.class_names, model=str(args.model),
                                   model_text=spec.describe(), dataset=data.title, command=command)
        # what makes the folder a finished run of ours (replaced with --overwrite): no engine was trained
        write_json(folder.staging / "metrics.json", {"config": {"model": str(args.model), "command": command},
                                                     "engines": {}, "inspect": "inspect.json"})
        folder.commit()
    if not is_image(result.image_shape):
        h, w, c = result.image_shape
        print(f"  the inputs are {h}x{w}x{c} arrays of features, not images: wrote only the top losses (inspect.md)")
    print(f"wrote {out}/: " + ", ".join(written))
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command line that makes these figures again (for inspect.md)."""
    parts = [f"nnscratch inspect --model {args.model}"]
    for flag in ("dataset", "data_dir", "dtype", "images", "smooth", "noise", "seed", "top", "units"):
        value = getattr(args, flag, None)
        if value is not None:
            parts.append(f"--{flag.replace('_', '-')} {value}")
    return " ".join(parts)
