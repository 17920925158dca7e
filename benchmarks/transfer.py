"""Does transfer learning pay? Test accuracy with few labelled images, from scratch against fine-tuned.

1. Pre-train a network on MNIST digits 0-4 (all their training images), then learn digits 5-9
   from only 100, 500 or 2,000 labelled images (``--classes 5-9 --train-subset N``) three ways:
   from scratch, fine-tuned from the 0-4 network with a fresh head (``--reset-head``), and the
   same with the hidden layer frozen (``--freeze 1``: only the head trains).
2. Pre-train on all of MNIST, then learn Fashion-MNIST from 1,000 labelled images, the same three ways.

Every configuration is trained with seeds 0, 1, 2 (initialisation and batch order; the N images
are always the first N of the training split) and reported as mean and spread of the test accuracy.
Each run gets the same number of optimisation steps whatever N is (small N: more epochs), so
that the comparison is about the images, not the training time.

    NNSCRATCH_DATA_DIR=../shared/data python benchmarks/transfer.py            # docs/transfer.{json,png}
    NNSCRATCH_DATA_DIR=../shared/data python benchmarks/transfer.py --small --out /tmp/t   # seconds

Writes ``OUT/transfer.json`` (every run) and ``OUT/transfer.png`` (test accuracy against the
number of labelled images), both atomically; prints the table. Results: docs/transfer.md.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nnscratch import api
from nnscratch.data import load_dataset
from nnscratch.data.datasets import keep_classes
from nnscratch.files.atomic import atomic_path, write_json
from nnscratch.report import machine_info

WAYS = {"scratch": {}, "finetune": {"reset_head": True}, "finetune, frozen": {"reset_head": True, "freeze": 1}}


def settings(small: bool) -> dict:
    """The network, optimiser and budgets of the full run and of the quick one (--small)."""
    if small:
        return dict(net=dict(hidden=[32], optimizer="sgd", momentum=0.9, lr=0.01, batch_size=32),
                    pretrain_epochs=1, pretrain_subset=1000, steps=8, sizes=(100, 200), fashion=200, seeds=(0,))
    return dict(net=dict(hidden=[256], optimizer="sgd", momentum=0.9, lr=0.01, batch_size=32),
                pretrain_epochs=3, pretrain_subset=None, steps=600, sizes=(100, 500, 2000), fashion=1000,
                seeds=(0, 1, 2))


def epochs_for(n: int, steps: int, batch_size: int) -> int:
    """Epochs of ``n`` images that make about ``steps`` optimisation steps (at least 1)."""
    return max(1, round(steps / math.ceil(n / batch_size)))


def pretrain(data, classes: str | None, s: dict, folder: Path) -> Path:
    """Train the source network on ``data`` (``classes`` of it); return its model file."""
    out = folder / f"source-{data.name}-{classes or 'all'}"
    api.train(dataset=data.name, classes=classes, epochs=s["pretrain_epochs"], train_subset=s["pretrain_subset"],
              checkpoints=False, out=out, data=data, **s["net"])
    return out / "numpy_model.safetensors"


def learn(data, classes: str | None, n: int, way: str, source: Path, seed: int, s: dict) -> float:
    """Test accuracy of one run on the first ``n`` training images of ``data``."""
    extra = dict(WAYS[way], finetune_from=str(source)) if way != "scratch" else {}
    run = api.train(dataset=data.name, classes=classes, train_subset=n, seed=seed, checkpoints=False, data=data,
                    epochs=epochs_for(n, s["steps"], s["net"]["batch_size"]), **s["net"], **extra)
    return run.test["numpy"]["accuracy"]


def plot(rows: list[dict], path: Path) -> None:
    """Test accuracy against labelled images, one line per way, for the digits 5-9 task (the
    Fashion-MNIST points at 1,000 images as markers of their own)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for (way, style), colour in zip({"scratch": "o-", "finetune": "s-", "finetune, frozen": "^-"}.items(),
                                    ("tab:gray", "tab:blue", "tab:orange")):
        for task, line in (("MNIST 0-4 -> 5-9", style), ("MNIST -> Fashion-MNIST", style[0])):
            pts = [r for r in rows if r["way"] == way and r["task"] == task]
            if not pts:
                continue
            ax.errorbar([r["labelled"] for r in pts], [r["mean"] for r in pts], yerr=[r["std"] for r in pts],
                        fmt=line, color=colour, capsize=3, mfc="none" if "Fashion" in task else colour,
                        label=f"{way} ({'digits 5-9' if 'MNIST 0-4' in task else 'Fashion-MNIST'})")
    ax.set_xscale("log")
    ax.set_xlabel("labelled training images")
    ax.set_ylabel("test accuracy")
    ax.set_title("Transfer learning with few labels (mean of seeds, bars: std)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def table(rows: list[dict]) -> str:
    ways = list(WAYS)
    lines = [f"{'task':<24} {'labelled':>8}  " + "  ".join(f"{w:>18}" for w in ways)]
    for task, n in dict.fromkeys((r["task"], r["labelled"]) for r in rows):
        cells = {r["way"]: r for r in rows if r["task"] == task and r["labelled"] == n}
        lines.append(f"{task:<24} {n:>8,}  " + "  ".join(
            f"{cells[w]['mean']:>11.4f} ± {cells[w]['std']:.3f}" for w in ways))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="tiny sizes: a run of seconds (the test of this script)")
    p.add_argument("--out", default="docs", help="folder of transfer.json and transfer.png (default: docs)")
    args = p.parse_args(argv)
    s = settings(args.small)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    mnist = load_dataset("mnist", progress=False)
    fashion = load_dataset("fashion-mnist", progress=False)
    tasks = [("MNIST 0-4 -> 5-9", keep_classes(mnist, (0, 1, 2, 3, 4), "0-4"), "0-4",
              keep_classes(mnist, (5, 6, 7, 8, 9), "5-9"), "5-9", s["sizes"]),
             ("MNIST -> Fashion-MNIST", mnist, None, fashion, None, (s["fashion"],))]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for task, source_data, source_classes, target, target_classes, sizes in tasks:
            source = pretrain(source_data, source_classes, s, Path(folder))
            for n in sizes:
                for way in WAYS:
                    accs = [learn(target, target_classes, n, way, source, seed, s) for seed in s["seeds"]]
                    rows.append({"task": task, "labelled": n, "way": way, "accuracies": accs,
                                 "mean": statistics.fmean(accs), "std": statistics.pstdev(accs),
                                 "epochs": epochs_for(n, s["steps"], s["net"]["batch_size"])})
                    print(f"  {task}, {n:,} images, {way}: {rows[-1]['mean']:.4f}", flush=True)
    print()
    print(table(rows))
    result = {"settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items()}, "rows": rows,
              "seconds": round(time.time() - start, 1), "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "command": " ".join(["python", "benchmarks/transfer.py", *(argv if argv is not None else sys.argv[1:])]),
              "machine": machine_info()}
    write_json(out / "transfer.json", result)
    plot(rows, out / "transfer.png")
    print(f"\nwrote {out / 'transfer.json'} and {out / 'transfer.png'} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
