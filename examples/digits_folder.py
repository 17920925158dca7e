"""Export scikit-learn's handwritten digits as a folder of PNGs, one sub-folder per class.

The UCI "optical recognition of handwritten digits" set ships inside scikit-learn
(``sklearn.datasets.load_digits``): 1,797 greyscale images of 8 x 8 pixels with values 0..16.
This script scales them to 0..255 and writes::

    OUT/0/0000.png  OUT/0/0010.png ...
    OUT/1/0001.png  ...
    ...
    OUT/9/...

then prints the command that trains both engines on it. It needs scikit-learn and Pillow::

    python examples/digits_folder.py data/digits
    nnscratch compare --dataset folder:data/digits --image-size 8x8 --epochs 30

(``--image-size 8x8`` is what the files hold already: it only says so, no resizing happens.)
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np


def export_digits(out: Path) -> int:
    """Write every digit as ``out/<label>/<index>.png``; return how many were written."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0..16 -> 0..255, rounded: 16 becomes 255 exactly, 8 becomes 128.
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    for index, (image, label) in enumerate(zip(pixels, digits.target)):
        folder = out / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:04d}.png")  # mode L: 8-bit grey
    return len(pixels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to create (must be empty or absent)")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f"digits_folder: error: {args.out} is not empty; give a new folder", file=sys.stderr)
        return 2
    n = export_digits(args.out)
    print(f"wrote {n:,} images of 8x8 pixels into {args.out}/0 .. {args.out}/9")
    print("train on them with:")
    print(f"  nnscratch compare --dataset folder:{shlex.quote(str(args.out))} --image-size 8x8 "
          f"--epochs 30")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
