"""How much the twin's harness costs: the torch twin as ``compare`` trains it, against a plain
PyTorch training loop doing the same work (issue 25, item 3).

    python benchmarks/twin_overhead.py                  # the seed configuration, 3 rounds
    python benchmarks/twin_overhead.py --hidden 1024 1024 --dropout 0.3 --batch-size 128 --rounds 2

Both sides train the same network (``nn.Sequential`` of ``nn.Linear`` / ``nn.ReLU`` /
``nn.Dropout``), from the same initial weights, on the same 50,000 MNIST training images, with
plain SGD (no momentum: the seed configuration), the same batch size and batch order, float32,
the same thread count, taking turns epoch by epoch (a slow spell of a shared machine hits both):

* **plain**: the loop of PyTorch's own tutorials, everything preloaded as tensors (the one the
  reports time beside the twin, :class:`~nnscratch.torch_engine.plain_loop.PlainLoop`):
  ``for idx in batches: opt.zero_grad(); loss = F.cross_entropy(model(x[idx]), y[idx]);
  loss.backward(); opt.step()``; the loss summed on the device, read once per epoch.
* **twin**: one :func:`nnscratch.api.train` run with ``engine="torch"``, i.e. the
  :class:`~nnscratch.training.trainer.Trainer` driving :class:`~nnscratch.torch_engine.model.TorchEngine`
  as in a comparison: NumPy batches handed over zero-copy, the loop's dropout masks, per-step
  loss and correct count kept on the device, events to the sinks, 4 gradient-flow steps per
  epoch; its epoch time is the ``time_s`` of its history (the optimisation steps, as the report's
  training-time row counts them). A plain epoch runs after each twin epoch (``on_epoch``); the
  first of each is the warm-up.

Prints the median seconds per epoch of each and their ratio (twin / plain).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[533])
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3, help="epochs measured per side, after a warm-up epoch each")
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)

    import torch

    from nnscratch import api
    from nnscratch.data import load_dataset
    from nnscratch.model.registry import initial_state
    from nnscratch.model.spec import mlp_spec
    from nnscratch.threads import set_threads
    from nnscratch.torch_engine.plain_loop import PlainLoop
    from nnscratch.training.streams import init_rng

    threads = set_threads(args.threads)
    data = load_dataset("mnist", None, progress=False)
    settings = dict(hidden=args.hidden, dropout=args.dropout, batch_size=args.batch_size,
                    train_subset=args.train_subset, lr=0.01, threads=threads, gradient_flow=True)
    n = args.train_subset or 50_000
    widths = [784, *args.hidden, 10]
    # the loop the reports time (torch_engine/plain_loop.py): the twin's model from the run's initial
    # weights, nn.Dropout's own masks, the rows preloaded as tensors, the loss read once per epoch
    spec = mlp_spec(784, tuple(args.hidden), 10, dropout=args.dropout)
    loop = PlainLoop(spec, initial_state(spec, init_rng(0)), data.train_images[:n].reshape(n, -1) / np.float32(255),
                     data.train_labels[:n], lr=0.01)
    rng = np.random.default_rng(0)

    def plain_epoch() -> float:
        order = torch.from_numpy(rng.permutation(n))
        t = time.perf_counter()
        for start in range(0, n, args.batch_size):
            loop.step(order[start:start + args.batch_size])
        float(loop.total)  # read once per epoch
        return time.perf_counter() - t

    # One twin run of rounds + 1 epochs; after each of its epochs (on_epoch) a plain epoch runs, so
    # the two take turns. The twin's first epoch and the plain one after it are the warm-up.
    plain_epoch()
    plain: list[float] = []
    run = api.train(engine="torch", data=data, epochs=args.rounds + 1,
                    on_epoch=lambda engine, record: plain.append(plain_epoch()), **settings)
    twin = [float(r["time_s"]) for r in run.history["torch"]["epochs"]][1:]
    plain = plain[1:]
    for r, (a, b) in enumerate(zip(plain, twin)):
        print(f"round {r + 1}: plain {a:.3f} s, twin {b:.3f} s", flush=True)
    p_med, t_med = statistics.median(plain), statistics.median(twin)
    arch = "-".join(map(str, widths))
    print(f"{arch}, batch {args.batch_size}, dropout {args.dropout}, {n:,} images, {threads} threads: "
          f"plain PyTorch {p_med:.3f} s/epoch, the twin as compare trains it {t_med:.3f} s/epoch "
          f"(twin / plain = {t_med / p_med:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
