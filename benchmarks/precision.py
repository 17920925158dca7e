"""One seed-config epoch per engine and --precision, on the CPU: the training steps' wall time.

    NNSCRATCH_DATA_DIR=... python benchmarks/precision.py [N_IMAGES] [ROUNDS] [ENGINES]

(``ENGINES``: ``numpy,torch``, the default, or one of them.)

Prints ``engine precision seconds train_accuracy loss_scale skipped_steps`` per run, and the
medians at the end (docs/precision.md, "Measured").
"""

import statistics
import sys
from pathlib import Path

from nnscratch import api

SEED = Path(__file__).resolve().parents[1] / "configs" / "seed.toml"


def epoch(engine: str, precision: str, images: int) -> dict:
    cfg = api.config(SEED, epochs=1, train_subset=images, precision=precision, device="cpu")
    return api.train(cfg, engine=engine).history[engine]["epochs"][-1]


def main() -> None:
    images = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    engines = sys.argv[3].split(",") if len(sys.argv) > 3 else ["numpy", "torch"]
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):  # the settings in turn, so that the machine's load falls on all of them
        for engine in engines:
            for precision in ("fp32", "fp16", "bf16"):
                e = epoch(engine, precision, images)
                times.setdefault((engine, precision), []).append(e["time_s"])
                print(engine, precision, f"{e['time_s']:.2f}", e["train_accuracy"], e.get("loss_scale"),
                      e.get("skipped_steps"), flush=True)
    for (engine, precision), values in times.items():
        print(f"median {engine} {precision}: {statistics.median(values):.2f} s")


if __name__ == "__main__":
    main()
