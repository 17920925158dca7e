"""One optimizer step on 784-1024-1024-10 (1,863,690 float32 parameters): NumPy class, its Numba
twin (--jit) and torch's single-tensor and foreach Adam/SGD/RMSprop (1 thread), taking turns.

    python benchmarks/optimizers.py 300            # rounds (default 200), as in docs/performance.md
    python benchmarks/optimizers.py 2 --small      # a smoke test on 8-4-2 (tests/test_benchmarks.py)
"""
import argparse, time
import numpy as np, torch
from nnscratch.numpy_engine.jit import make_jit_optimizer
from nnscratch.numpy_engine.optimizers import make_optimizer

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("rounds", type=int, nargs="?", default=200, help="measured rounds (default: 200)")
parser.add_argument("--small", action="store_true", help="a tiny 8-4-2 network instead, to check the script runs")
options = parser.parse_args()
torch.set_num_threads(1)  # ours run on one thread too
ROUNDS = options.rounds
SHAPES = {"0.weight": (1024, 784), "0.bias": (1024,), "1.weight": (1024, 1024), "1.bias": (1024,),
          "2.weight": (10, 1024), "2.bias": (10,)}
if options.small:
    SHAPES = {"0.weight": (4, 8), "0.bias": (4,), "1.weight": (2, 4), "1.bias": (2,)}
CONFIGS = [("sgd", {"momentum": 0.9, "nesterov": True}), ("adam", {}), ("adamw", {"weight_decay": 0.01}),
           ("rmsprop", {"momentum": 0.9})]
TORCH = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}
rng = np.random.default_rng(0)
init = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
grads = {k: (rng.standard_normal(s) * 1e-2).astype(np.float32) for k, s in SHAPES.items()}

def ours(name, hp, jit):
    params = {k: v.copy() for k, v in init.items()}
    build = make_jit_optimizer if jit else make_optimizer
    opt, scratch = build(name, params, **hp), {k: np.empty_like(v) for k, v in grads.items()}
    def step():
        for k, a in scratch.items():
            np.copyto(a, grads[k])  # step may overwrite its gradients: fresh ones, outside the timing
        t = time.perf_counter(); opt.step(scratch, 1e-3); return time.perf_counter() - t
    return step, params

def theirs(name, hp, foreach):
    ts = [torch.tensor(v, requires_grad=True) for v in init.values()]
    for t, g in zip(ts, grads.values()):
        t.grad = torch.tensor(g)
    opt = TORCH[name](ts, lr=1e-3, foreach=foreach, **hp)
    def step():
        t = time.perf_counter(); opt.step(); return time.perf_counter() - t
    return step, None

for name, hp in CONFIGS:
    variants = {"numpy": ours(name, hp, False), "numba --jit": ours(name, hp, True),
                "torch foreach=False": theirs(name, hp, False), "torch foreach=True": theirs(name, hp, True)}
    times = {k: [] for k in variants}
    for r in range(ROUNDS + 3):  # 3 warm-up rounds (compilation, the first-step branches)
        for k in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
            dt = variants[k][0]()
            if r >= 3:
                times[k].append(dt * 1e3)
    same = all(np.array_equal(variants["numpy"][1][k], variants["numba --jit"][1][k]) for k in SHAPES)
    print(f"\n{name} {hp}: numba bit-identical to numpy after {ROUNDS + 3} steps: {same}")
    for k, ts in times.items():
        q = np.percentile(ts, [10, 50, 90])
        r = np.percentile(np.array(times["numpy"]) / np.array(ts), [25, 50, 75])
        print(f"  {k:20s} median {q[1]:6.2f} ms (p10 {q[0]:6.2f}, p90 {q[2]:6.2f}); numpy/this, paired by "
              f"round: median {r[1]:.2f} (quartiles {r[0]:.2f}-{r[2]:.2f})")
