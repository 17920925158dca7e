"""``nnscratch bench``: seconds per epoch of every engine, against this machine's physical limit.

In one process, one sitting, on the real MNIST training images:

1. the float32 and float64 GEMM peak of this machine (a large square matmul, through NumPy's BLAS
   and through SciPy's; the higher one counts, so the limit is never flattered);
2. the FLOPs one epoch of an architecture needs: per dense layer ``2 * N * D_in * D_out`` for the
   forward product, the same for the weight gradient, and the same for the input gradient
   except in the first layer (whose input needs no gradient); hence the **limit**, seconds per
   epoch if every FLOP ran at peak;
3. seconds per epoch (median of ``--epochs`` epochs after one warm-up epoch, the engines taking
   turns epoch by epoch, and the GEMM peak measured again before each round) of each engine:
   NumPy float32 and float64 (ours), PyTorch eager, ``torch.compile``, JAX (the same step under
   ``jax.jit``: :mod:`~nnscratch.run.jax_peer`; its compiling epoch reported apart), scikit-learn's
   ``MLPClassifier`` (sgd, no momentum, no L2, same batch size), and optionally our NumPy engine
   with Numba-compiled element-wise kernels (``--jit``).

All engines run with the same number of threads (``--threads``, default: every usable core).

Every timed epoch and every peak measurement starts after a short pause (``--settle``, default
0.3 s). BLAS and OpenMP worker threads keep spinning for a while after their last job (OpenBLAS
about 0.1 s), and this process holds three such pools: NumPy's OpenBLAS, SciPy's OpenBLAS and
torch's. Without the pause the pool of the engine just measured competes for the 2 cores with the
next engine's: measured on the reference VM, the two big products of one float32 epoch of ours
took 0.04-0.09 s longer (of 0.46-0.70 s) right after a NumPy matmul than after a 0.2 s pause. The
pause gives every engine, and the peak probe, an idle machine to start on.

Each row's **vs torch eager** and **vs best peer** are the speed-ups over torch eager and over the
fastest of :data:`PEERS` (torch eager, ``torch.compile``, JAX) measured on that row's network and
batch (>1: faster than it).

Two "% of peak" figures are given per row. **% of round peak** is ``limit / epoch time`` with the
limit from the peak measured *in the same round* (one product; median over the rounds), so a
slow spell that slows the peak product too cancels out. It tends to read a little high: a single
product measures lower than the best of three taken at the start. **% of start peak** is the
limit from that best-of-three start peak over the median epoch time. Neither cancels everything:
on the reference VM the slow spells hit two threads working together on the small products of a
64-row batch far more than the large square product (see the README).
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from nnscratch.errors import UsageError

SETTLE_S = 0.3  # seconds of pause before each timed run: see the module docstring
ALL_ENGINES = ("numpy-float32", "numpy-float64", "torch-eager", "torch-compile", "jax-jit", "sklearn")
#: The frameworks ours is measured against: the fastest of them on a row is "the best peer".
PEERS = ("torch-eager", "torch-compile", "jax-jit")
#: The row "seed configuration + augmentation": our float32 engine on augmented batches.
AUGMENTED = "numpy-float32+augment"


@dataclass
class BenchRow:
    engine: str
    dtype: str
    arch: str
    batch_size: int
    s_per_epoch: float | None = None
    samples_per_s: float | None = None
    pct_of_peak: float | None = None            # median over the rounds of limit(round peak) / epoch time
    pct_of_start_peak: float | None = None      # limit(peak measured at the start) / median epoch time
    ratio_to_torch_eager: float | None = None   # torch-eager s/epoch divided by this row's: >1 is faster
    ratio_to_best_peer: float | None = None     # the fastest of PEERS' s/epoch divided by this row's
    epochs_s: list[float] | None = None
    round_peak_gflops: list[float] | None = None  # the GEMM peak measured in the round of each epoch
    note: str = ""


class PeakProbe:
    """Times an ``n x n`` matmul ``a @ b`` of one dtype through NumPy's BLAS or through SciPy's."""

    def __init__(self, dtype, n: int = 4096) -> None:
        from scipy.linalg import blas

        rng = np.random.default_rng(0)
        self.n = n
        a, b = rng.random((n, n)).astype(dtype), rng.random((n, n)).astype(dtype)
        out = np.empty((n, n), dtype=dtype)
        scipy_gemm = blas.sgemm if np.dtype(dtype) == np.float32 else blas.dgemm
        # SciPy's BLAS is column-major: a C-ordered a is the Fortran-ordered a.T, so ask for
        # (a.T).T @ (b.T).T with the trans flags, written into out.T (no copies either way).
        self.products = {"numpy": lambda: np.matmul(a, b, out=out),
                         "scipy": lambda: scipy_gemm(1.0, a.T, b.T, c=out.T, trans_a=True, trans_b=True,
                                                     overwrite_c=True)}

    def gflops(self, library: str, repeats: int = 1) -> float:
        """GFLOP/s of the best of ``repeats`` products through ``library`` ("numpy" or "scipy")."""
        best = min(_timed(self.products[library]) for _ in range(repeats))
        return 2.0 * self.n ** 3 / best / 1e9


def gemm_peak(probe: PeakProbe, repeats: int = 3, settle_s: float = 0.0) -> dict:
    """Best GFLOP/s of the probe's product through NumPy's BLAS and through SciPy's; the higher
    one is the peak (so the limit is never flattered), and its library is the one rounds reuse.
    Each library starts after a pause of ``settle_s`` seconds (the other one's threads idle)."""
    out = {}
    for name, product in probe.products.items():
        _settle(settle_s)
        product()  # warm-up
        out[name] = probe.gflops(name, repeats)
    out["peak"] = max(out["numpy"], out["scipy"])
    out["library"] = max(("numpy", "scipy"), key=out.get)
    return out


def _settle(seconds: float) -> None:
    """Wait until the worker threads of whatever ran last have stopped spinning (see the module docstring)."""
    time.sleep(seconds)


def _timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def epoch_flops(sizes: tuple[int, ...], n: int) -> float:
    """FLOPs of one epoch of ``n`` samples: forward, weight gradients, input gradients but the first layer's."""
    total = 0.0
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        total += 2.0 * n * d_in * d_out * (2 if i == 0 else 3)
    return total


def _engine_runner(engine, pixels, y, batch_size: int, dtype, lr: float = 0.01, dropout=None, augment=None):
    """A function that trains ``engine`` for one epoch (a fresh shuffle) and returns its seconds.

    It is the training loop of ``nnscratch compare`` itself: uint8 pixels, scaled per batch; with
    ``dropout`` (the model's dropout layers) the loop draws the masks, as in a comparison; with
    ``augment`` (an :class:`~nnscratch.training.augmented.AugmentedBatches` of ``pixels``) each
    batch is augmented, prepared ahead by its thread, as in a run with ``--augment``."""
    from nnscratch.training.trainer import fit

    rng = np.random.default_rng(0)
    return lambda: fit(engine, (pixels, y), None, orders=[rng.permutation(len(y))], batch_size=batch_size,
                       num_classes=10, lr=lr, dropout=dropout, seed=0, dtype=dtype, augment=augment).epochs[0].time_s


def _sklearn_runner(x, y, hidden, batch_size: int):
    """One ``MLPClassifier.fit`` call with ``max_iter=1`` and ``warm_start`` is one more epoch."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=hidden, activation="relu", solver="sgd", learning_rate_init=0.01,
                        momentum=0.0, nesterovs_momentum=False, alpha=0.0, batch_size=batch_size, max_iter=1,
                        shuffle=True, warm_start=True, tol=0.0, n_iter_no_change=10 ** 9, random_state=0)

    def one_epoch() -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return _timed(lambda: clf.fit(x, y))
    return one_epoch


def _training_options(cfg) -> dict:
    """The engine options of a config: optimizer and its settings, penalties, clipping, max-norm, smoothing."""
    if cfg is None:
        return {}
    return {"optimizer": cfg.optimizer, "optimizer_options": cfg.optimizer_options(), "l1": cfg.l1, "l2": cfg.l2,
            "clip_grad_norm": cfg.clip_grad_norm, "max_norm": cfg.max_norm, "label_smoothing": cfg.label_smoothing}


def make_runner(engine: str, spec, pixels, y, batch_size: int, cfg=None, augment=None, threads: int | None = None):
    """``(one-epoch function, "")`` for ``engine``, or ``(None, reason)`` where it cannot run here.

    With ``cfg`` (a :class:`~nnscratch.run.config.RunConfig`) the engines train with its optimizer and
    options; the torch twin then uses its own ``nn.Dropout`` (its fastest), ours the loop's masks.
    The first call of the function is the warm-up (Numba, ``torch.compile`` and ``jax.jit`` compile
    there); an engine that fails in it is reported unavailable too. ``jax-jit`` is the JAX peer
    (:mod:`~nnscratch.run.jax_peer`, on ``threads`` XLA threads); its note gives its warm-up
    (compiling) epoch's seconds.
    """
    from nnscratch.data.preprocess import scale_pixels
    from nnscratch.engines import make_engine
    from nnscratch.model.registry import dropout_layers, initial_state

    initial = initial_state(spec, np.random.default_rng(0))
    options, lr = _training_options(cfg), (cfg.lr if cfg is not None else 0.01)
    batches = None
    if engine == AUGMENTED:  # our float32 engine on augmented batches; ``augment``: (augmentation, image shape,
        from nnscratch.training.augmented import AugmentedBatches  # engine threads during its epochs)

        engine = "numpy-float32"
        batches = AugmentedBatches(pixels, augment[1], augment[0], 0, batch_size, prefetch=augment[2][0],
                                   engine_threads=augment[2][1])
    try:
        if engine == "jax-jit":
            from nnscratch.run.jax_peer import make_jax_runner

            run, note = make_jax_runner(spec, initial, pixels, y, batch_size, lr, options, threads)
            if run is None:
                return None, note
            return run, f"first epoch, compiling: {run():.2f} s"
        if engine == "sklearn":  # sklearn takes the whole float32 training set, as its users give it
            if cfg is not None:
                return None, "not measured: scikit-learn's MLPClassifier has no batch norm, dropout or these options"
            run = _sklearn_runner(scale_pixels(pixels, np.empty(pixels.shape, np.float32)), y,
                                  tuple(spec.widths()[1:-1]), batch_size)
        elif engine.startswith("numpy"):
            dtype = np.float64 if engine.endswith("float64") else np.float32
            if engine == "numpy-float32-jit":
                options = options | {"jit": True}
            e = make_engine("numpy", spec, initial, dtype, **options)
            run = _engine_runner(e, pixels, y, batch_size, dtype, lr, dropout_layers(spec), batches)
        else:
            e = make_engine("torch", spec, initial, np.float32, device="cpu",
                            compile=engine == "torch-compile", shared_masks=False, **options)
            run = _engine_runner(e, pixels, y, batch_size, np.float32, lr)
        run()  # warm-up epoch
        return run, ""
    except (ImportError, UsageError) as exc:
        return None, f"unavailable: {exc}"
    except Exception as exc:  # torch.compile can fail for reasons of its own (no compiler, ...)
        if engine == "torch-compile":
            return None, f"unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        raise


def run_benchmark(pixels, y, *, engines, batch_sizes, deep, epochs, jit=False, progress=True,
                  settle_s: float = SETTLE_S, configs=(),
                  peak_size: int = 4096, augment=None, image_shape: tuple[int, ...] = (28, 28, 1),
                  augment_plan: tuple[int, int | None] = (0, None), threads: int | None = None) -> dict:
    """Measure everything on ``pixels`` (uint8, ``(N, D)``) and labels ``y``; return
    ``{"peak_gflops": ..., "rows": [...], ...}`` (plain data).

    Within one configuration the engines take turns, one epoch each, ``epochs`` rounds after a
    warm-up epoch: a slow spell of a shared machine then hits every engine alike instead of
    whichever happened to be running. Each round starts by measuring the GEMM peak again (one
    product per dtype, through the library that won at the start). Each row gets ``pct_of_peak``
    (% of round peak: the median over the rounds of ``limit in that round / epoch time in that
    round``) and ``pct_of_start_peak`` (``limit at the start peak / median epoch time``). Each
    timed epoch and each peak measurement starts after a pause of ``settle_s`` seconds. For each
    ``(name, config)`` of ``configs`` (``config`` a :class:`~nnscratch.run.config.RunConfig`) its
    network is measured too, at its batch size and with its training options; its rows' ``arch``
    starts with ``name`` (``best.toml: 784-1024-1024-10 (...)``). With
    ``augment`` (an :class:`~nnscratch.data.augment.Augmentation`; ``pixels`` are images of
    ``image_shape``) the seed architecture at the first batch size gets the row
    :data:`AUGMENTED` (its batches made as ``augment_plan`` ``(prefetch, engine_threads)`` says, as in a
    run: :func:`~nnscratch.training.augmented.prefetch_plan`), taking its turns with the others,
    and ``augment_overhead`` says how much longer its epochs took than ``numpy-float32``'s (the
    median of the per-round ratios).
    """
    from nnscratch.model.spec import mlp_spec

    if not 0 <= settle_s <= 60:
        raise ValueError(f"settle_s must be between 0 and 60 seconds, got {settle_s}")
    probes = {dtype: PeakProbe(dtype, peak_size) for dtype in ("float32", "float64")}
    peaks = {dtype: gemm_peak(probe, settle_s=settle_s) for dtype, probe in probes.items()}
    plans = [(mlp_spec(pixels.shape[1], (533,), 10), b, None, "") for b in batch_sizes]
    if deep:
        plans.append((mlp_spec(pixels.shape[1], tuple(deep), 10), batch_sizes[0], None, ""))
    plans += [(cfg.model_spec(pixels.shape[1], 10), cfg.batch_size, cfg, name) for name, cfg in configs]
    rows, limits, overhead = [], {}, None
    for number, (spec, batch, cfg, config_name) in enumerate(plans):
        engine_list = list(engines) + (["numpy-float32-jit"] if jit else [])
        if augment is not None and number == 0:
            engine_list.append(AUGMENTED)
        arch = "-".join(map(str, spec.widths())) if cfg is None else f"{config_name}: {spec.describe()}"
        flops = epoch_flops(tuple(spec.widths()), len(y))
        for dtype in ("float32", "float64"):
            limits[f"{arch} {dtype}"] = flops / (peaks[dtype]["peak"] * 1e9)
        if progress:
            print(f"  measuring {arch} batch {batch}: {', '.join(engine_list)}", file=sys.stderr, flush=True)
        runners, notes = {}, {}
        for engine in engine_list:
            runners[engine], notes[engine] = make_runner(engine, spec, pixels, y, batch, cfg,
                                                         (augment, image_shape, augment_plan)
                                                         if engine == AUGMENTED else None, threads)
        dtypes = sorted({_dtype_of(e) for e, run in runners.items() if run is not None})
        times = {engine: [] for engine in engine_list}
        round_peaks = {dtype: [] for dtype in dtypes}
        for _ in range(epochs):
            for dtype in dtypes:
                _settle(settle_s)
                round_peaks[dtype].append(probes[dtype].gflops(peaks[dtype]["library"]))
            for engine, run in runners.items():
                if run is not None:
                    _settle(settle_s)
                    times[engine].append(run())
        group = []
        for engine in engine_list:
            dtype = _dtype_of(engine)
            row = BenchRow(engine, dtype, arch, batch, note=notes[engine], epochs_s=times[engine] or None)
            if times[engine]:
                row.s_per_epoch = statistics.median(times[engine])
                row.samples_per_s = len(y) / row.s_per_epoch
                row.round_peak_gflops = round_peaks[dtype]
                row.pct_of_peak = statistics.median(100.0 * flops / (peak * 1e9) / t
                                                    for peak, t in zip(round_peaks[dtype], times[engine]))
                row.pct_of_start_peak = 100.0 * limits[f"{arch} {dtype}"] / row.s_per_epoch
            group.append(row)
        eager = next((r.s_per_epoch for r in group if r.engine == "torch-eager" and r.s_per_epoch), None)
        best_peer = min((r.s_per_epoch for r in group if r.engine in PEERS and r.s_per_epoch), default=None)
        for r in group:
            if eager and r.s_per_epoch:
                r.ratio_to_torch_eager = eager / r.s_per_epoch
            if best_peer and r.s_per_epoch:
                r.ratio_to_best_peer = best_peer / r.s_per_epoch
        if AUGMENTED in engine_list and times[AUGMENTED] and times.get("numpy-float32"):
            overhead = augment_overhead(augment, arch, batch, times["numpy-float32"], times[AUGMENTED],
                                        augment_plan)
        rows.extend(group)
        runners.clear()
    result = {"peak_gflops": peaks, "limit_s_per_epoch": limits, "epochs_measured": epochs, "settle_s": settle_s,
              "train_images": int(len(y)), "rows": [asdict(r) for r in rows]}
    if overhead is not None:
        result["augment_overhead"] = overhead
    return result


def augment_overhead(augment, arch: str, batch: int, plain: list[float], augmented: list[float],
                     plan: tuple[int, int | None] = (0, None)) -> dict:
    """How much longer an augmented epoch took: each round's ratio (the two epochs ran one after the
    other, so a slow spell of a shared machine hits both), and their median. ``plan``: how the
    batches were made, ``(prefetch, engine_threads)`` (:func:`~nnscratch.training.augmented.prefetch_plan`)."""
    ratios = [a / p for p, a in zip(plain, augmented)]
    return {"augment": augment.spec(), "arch": arch, "batch_size": batch, "engine": "numpy-float32",
            "prefetch": plan[0], "engine_threads": plan[1],
            "plain_s": plain, "augmented_s": augmented, "ratios": ratios,
            "median_ratio": statistics.median(ratios), "percent": 100 * (statistics.median(ratios) - 1)}


def _dtype_of(engine: str) -> str:
    return "float64" if engine.endswith("float64") else "float32"


def format_table(result: dict) -> str:
    head = ("engine", "dtype", "arch", "batch", "s/epoch", "samples/s", "% of round peak", "% of start peak",
            "vs torch eager", "vs best peer")
    lines = []
    for r in result["rows"]:
        if r["s_per_epoch"] is None:
            lines.append((r["engine"], r["dtype"], r["arch"], str(r["batch_size"]), r["note"], "", "", "", "", ""))
            continue
        ratio = f"{r['ratio_to_torch_eager']:.2f}x" if r["ratio_to_torch_eager"] else "-"
        best = f"{r['ratio_to_best_peer']:.2f}x" if r.get("ratio_to_best_peer") else "-"
        lines.append((r["engine"], r["dtype"], r["arch"], str(r["batch_size"]), f"{r['s_per_epoch']:.3f}",
                      f"{r['samples_per_s']:,.0f}", f"{r['pct_of_peak']:.0f} %", f"{r['pct_of_start_peak']:.0f} %",
                      ratio, best))
    widths = [max(len(head[i]), *(len(l[i]) for l in lines if not l[4].startswith(("unavailable", "not measured"))))
              for i in range(len(head))]
    fmt = lambda row: " | ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
    out = [fmt(head), "-|-".join("-" * w for w in widths)] + [fmt(l) for l in lines]
    p = result["peak_gflops"]
    out.append("")
    limits = ", ".join(f"{k} {v:.3f}" for k, v in result["limit_s_per_epoch"].items() if k.endswith("float32"))
    out.append(f"GEMM peak at the start (best of 3): float32 {p['float32']['peak']:.0f} GFLOP/s, float64 "
               f"{p['float64']['peak']:.0f} GFLOP/s; limit (s/epoch at that peak): {limits}")
    rounds = [g for r in result["rows"] if r["dtype"] == "float32" for g in (r["round_peak_gflops"] or [])]
    if rounds:
        out.append(f"% of round peak is against the float32 peak measured again (one product) in each round: "
                   f"{min(rounds):.0f} to {max(rounds):.0f} GFLOP/s in this run")
    for r in result["rows"]:  # notes of measured rows (the JAX peer's compiling epoch)
        if r["s_per_epoch"] is not None and r["note"]:
            out.append(f"{r['engine']} {r['arch']} batch {r['batch_size']}: {r['note']} (not in its s/epoch)")
    a = result.get("augment_overhead")
    if a:
        threads = (f", {a['engine_threads']} BLAS thread(s) beside the augmentation thread" if a.get("prefetch")
                   else ", made in the training thread")
        out.append(f"{AUGMENTED}: --augment {a['augment']} on {a['arch']}, batch {a['batch_size']}{threads}: "
                   f"{a['percent']:+.0f} % time per epoch against numpy-float32 (median of the {len(a['ratios'])} "
                   f"rounds' ratios, {min(a['ratios']):.2f} to {max(a['ratios']):.2f})")
    return "\n".join(out)
