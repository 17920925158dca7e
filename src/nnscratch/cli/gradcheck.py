"""``nnscratch gradcheck``'s command line: every hand-written gradient of a network (the one the
train flags or a config describe) or of a layer class of your own (``--layer FILE.py:Class``)
against finite differences, and your layer against torch's autograd too.

The checks themselves are :mod:`nnscratch.analysis.gradcheck`; here are the flags, the random
batch and the exit status: 0 when every relative error is at most ``--tol``, 1 otherwise (naming
the worst gradient), 2 for bad input.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from nnscratch.errors import NNScratchError, UsageError

#: The flags that describe a network (each a --config key too); --layer takes none of them.
#: --entries by default: the reference network (12-533-4) is checked whole, a larger one on a sample.
DEFAULT_ENTRIES = 10_000
#: The most entries a --layer batch may have (--inputs x --batch): each is two forward passes.
MAX_LAYER_ENTRIES = 100_000

NETWORK_KEYS = ("hidden", "activation", "dropout", "input_dropout", "batch_norm", "label_smoothing", "l1", "l2",
                "init")


def add_gradcheck_arguments(p: argparse.ArgumentParser) -> None:
    from nnscratch.analysis.gradcheck import DEFAULT_TOL
    from nnscratch.model.registry import ACTIVATIONS, INITIALIZERS
    from nnscratch.run.config import RunConfig

    d = RunConfig()
    p.add_argument("--layer", default=None, metavar="FILE.py:CLASS",
                   help="check a layer class of your own (the Layer contract) instead of a network; compared "
                        "with torch too when the file names a torch module (docs/gradcheck.md)")
    p.add_argument("--config", default=None, metavar="FILE.toml", help="the network of a config file (its "
                   "hidden, activation, dropout, input_dropout, batch_norm, label_smoothing, l1, l2, init); flags override it")
    m = p.add_argument_group("network (the train flags; default: the reference network)")
    m.add_argument("--hidden", type=int, nargs="+", metavar="N",
                   help=f"hidden layer sizes (default: {' '.join(map(str, d.hidden))})")
    m.add_argument("--activation", choices=list(ACTIVATIONS), help=f"hidden activation (default: {d.activation})")
    m.add_argument("--dropout", type=float, metavar="P", help="dropout after each hidden activation, with a "
                   "fixed random mask (default: 0)")
    m.add_argument("--input-dropout", type=float, metavar="P", help="dropout on the input (a dropout layer 0), "
                   "with a fixed random mask (default: 0)")
    m.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="batch normalisation after each hidden dense layer, in training mode (default: off)")
    m.add_argument("--label-smoothing", type=float, metavar="EPS", help="cross-entropy label smoothing (default: 0)")
    m.add_argument("--l1", type=float, help="add l1 * sum|w| to the loss (default: 0)")
    m.add_argument("--l2", type=float, help="add l2 * sum w^2 to the loss (default: 0)")
    m.add_argument("--init", choices=list(INITIALIZERS), help=f"weight initialiser (default: {d.init})")
    b = p.add_argument_group("the check")
    b.add_argument("--inputs", type=int, default=12, metavar="D", help="input features (default: 12)")
    b.add_argument("--classes", type=int, default=4, metavar="C", help="classes of the network (default: 4)")
    b.add_argument("--batch", type=int, default=8, metavar="N", help="rows of the random batch (default: 8)")
    b.add_argument("--seed", type=int, default=0, help="seed of the batch, weights and masks (default: 0)")
    b.add_argument("--entries", type=int, default=DEFAULT_ENTRIES, metavar="N",
                   help=f"check at most N entries of each tensor of a network, drawn at random (two forward "
                        f"passes each); 0: every entry (default: {DEFAULT_ENTRIES:,})")
    b.add_argument("--tol", type=float, default=DEFAULT_TOL,
                   help=f"largest relative error that passes (default: {DEFAULT_TOL:g})")


def _check_numbers(args: argparse.Namespace) -> None:
    if not (math.isfinite(args.tol) and args.tol > 0):
        raise UsageError(f"--tol must be a number > 0, got {args.tol}")
    for name, low in (("inputs", 1), ("classes", 2), ("batch", 1)):
        if getattr(args, name) < low:
            raise UsageError(f"--{name} must be an integer >= {low}, got {getattr(args, name)}")
    if not 0 <= args.seed < 2**63:
        raise UsageError(f"--seed must be a whole number from 0 to 2**63 - 1, got {args.seed}")
    if args.entries < 0:
        raise UsageError(f"--entries must be a whole number >= 0 (0: every entry), got {args.entries}")


def run_gradcheck(args: argparse.Namespace) -> int:
    _check_numbers(args)
    if args.layer:
        given = [k for k in ("config", *NETWORK_KEYS) if getattr(args, k) is not None]
        if given:
            raise UsageError(f"--layer checks one layer of yours: drop --{given[0].replace('_', '-')} "
                             "(a network's flags)")
        return _check_layer_file(args)
    return _check_network(args)


def _verdict(checks, tol: float) -> int:
    """0 when every check passed; else the worst one as a one-line failure (exit 1)."""
    from nnscratch.analysis.gradcheck import worst_check

    worst = worst_check(checks)
    where = f" at {worst.worst}" if worst.worst else ""
    if not worst.passed(tol):
        why = f" ({worst.note})" if worst.note else ""
        raise NNScratchError(f"gradient check failed: {worst.layer} {worst.name}: relative error "
                             f"{worst.error:.2e}{where}{why} > --tol {tol:g}")
    print(f"all {len(checks)} gradients within --tol {tol:g} (worst: {worst.layer} {worst.name}, {worst.error:.2e})")
    return 0


def _check_network(args: argparse.Namespace) -> int:
    from nnscratch.analysis.gradcheck import check_network, check_state, format_table
    from nnscratch.model.footprint import check_memory
    from nnscratch.run.config import resolve_config

    flags = {k: getattr(args, k) for k in NETWORK_KEYS}
    cfg = resolve_config(args.config, flags, ("numpy",))
    if cfg.batch_norm and args.batch < 2:
        raise UsageError(f"--batch-norm needs batches of at least 2 samples (batch statistics); got --batch {args.batch}")
    spec = cfg.model_spec(args.inputs, args.classes)
    check_memory(spec, 8, args.batch, fix="choose smaller --hidden layers, fewer --inputs or a smaller --batch")
    rng = np.random.default_rng(args.seed)
    x = rng.normal(size=(args.batch, args.inputs))
    y = rng.integers(0, args.classes, size=args.batch)
    state = check_state(spec, rng, cfg.init)
    extras = ", ".join(f"{k.replace('_', ' ')} {getattr(cfg, k):g}" for k in ("label_smoothing", "l1", "l2")
                       if getattr(cfg, k))
    print(f"nnscratch gradcheck: {spec.describe()}" + (f", {extras}" if extras else "")
          + f", batch {args.batch}, seed {args.seed}, float64, central differences h = 1e-06")
    checks = check_network(spec, x, y, state, label_smoothing=cfg.label_smoothing, l1=cfg.l1, l2=cfg.l2, rng=rng,
                           max_entries=args.entries or None)
    print(format_table(checks, args.tol))
    return _verdict(checks, args.tol)


def _check_layer_file(args: argparse.Namespace) -> int:
    from nnscratch.analysis.gradcheck import (check_layer, compare_with_torch, format_table, load_layer_class,
                                              raised, torch_module_for)

    path, sep, class_name = args.layer.rpartition(":")
    if not sep or not path or not class_name:
        raise UsageError(f"--layer takes FILE.py:CLASS, such as examples/swish_layer.py:Swish; got {args.layer!r}")
    if args.inputs * args.batch > MAX_LAYER_ENTRIES:
        raise UsageError(f"gradcheck --layer differentiates every entry of its batch: keep --inputs x --batch at most "
                         f"{MAX_LAYER_ENTRIES:,} (got {args.inputs * args.batch:,})")
    cls, module = load_layer_class(path, class_name)
    rng = np.random.default_rng(args.seed)

    def built():
        try:
            layer = cls(args.inputs, dtype=np.float64)
        except Exception as exc:
            raise UsageError(f"{class_name}({args.inputs}, dtype=np.float64) raised {raised(exc, path)}") from None
        for p in layer.params.values():
            p[...] = rng.normal(scale=0.5, size=p.shape)
        if hasattr(layer, "set_keep"):  # a dropout-like layer: a fixed mask (the same for both checks)
            layer.set_keep(np.random.default_rng(args.seed).random((args.batch, args.inputs)) >= 0.5)
        return layer

    x = rng.normal(size=(args.batch, args.inputs))
    layer = built()
    print(f"nnscratch gradcheck: {class_name} from {path}, {args.inputs} inputs, batch {args.batch}, "
          f"seed {args.seed}, float64")
    try:
        checks = check_layer(layer, x, name=class_name, rng=rng)
    except UsageError:
        raise
    except Exception as exc:  # your layer's forward or backward: one line, at your file's line
        raise UsageError(f"{class_name} raised {raised(exc, path)}") from None
    print("against central differences (h = 1e-06):")
    print(format_table(checks, args.tol))
    torch_checks = []
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not installed: checked against finite differences only")
    else:
        twin = torch_module_for(cls, module, args.inputs)
        if twin is None:
            print(f"no torch module named for {class_name} (a class attribute torch_module or the file's "
                  "TORCH_MODULE): checked against finite differences only")
        else:
            fresh = built()
            for name, p in layer.params.items():
                fresh.params[name][...] = p
            try:
                torch_checks = compare_with_torch(fresh, twin, x, name=f"{class_name} vs torch", rng=rng)
            except UsageError:
                raise
            except Exception as exc:
                raise UsageError(f"{class_name} against {type(twin).__name__} raised {raised(exc, path)}") from None
            print(f"against torch autograd ({type(twin).__module__}.{type(twin).__name__}):")
            print(format_table(torch_checks, args.tol, reference="torch"))
    return _verdict(checks + torch_checks, args.tol)
