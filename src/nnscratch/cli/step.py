"""``nnscratch step``'s command line: one training step of a tiny network, printed number by number
(:mod:`nnscratch.analysis.step`), as text, JSON (``--json``) or a Markdown handout (``--markdown FILE``)."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from nnscratch.errors import UsageError


def add_step_arguments(p: argparse.ArgumentParser) -> None:
    from nnscratch.model.registry import ACTIVATIONS
    from nnscratch.numpy_engine.optimizers import OPTIMIZERS

    p.add_argument("--inputs", type=int, default=4, metavar="D", help="input features (default: 4)")
    p.add_argument("--hidden", type=int, nargs="+", default=[3], metavar="N", help="hidden layer sizes (default: 3)")
    p.add_argument("--classes", type=int, default=2, metavar="C", help="classes (default: 2)")
    p.add_argument("--batch", type=int, default=2, metavar="N", help="rows of the random batch (default: 2)")
    p.add_argument("--activation", choices=list(ACTIVATIONS), default="relu", help="hidden activation (default: relu)")
    p.add_argument("--optimizer", choices=list(OPTIMIZERS), default="sgd", help="(default: sgd, torch's defaults)")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate (default: 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the batch and the initial weights (default: 0)")
    p.add_argument("--json", action="store_true", help="print the step as JSON on stdout (full precision), and nothing else")
    p.add_argument("--markdown", default=None, metavar="FILE.md", help="also write it as a Markdown handout")


def _markdown_target(path: str | None) -> None:
    """``--markdown FILE``, checked before any work (like ``--json`` of evaluate)."""
    if path is None:
        return
    from nnscratch.run.experiment import check_output_file

    check_output_file(path, "--markdown", "step.md")


def run_step(args: argparse.Namespace) -> int:
    from nnscratch.analysis.step import render, trace_step
    from nnscratch.model.registry import initial_state
    from nnscratch.model.spec import mlp_spec

    for name, low, value in (("inputs", 1, args.inputs), ("classes", 2, args.classes), ("batch", 1, args.batch)):
        if value < low:
            raise UsageError(f"--{name} must be an integer >= {low}, got {value}")
    if any(h < 1 for h in args.hidden):
        raise UsageError(f"--hidden takes positive layer sizes, got {args.hidden}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr must be a number > 0, got {args.lr}")
    if not 0 <= args.seed < 2**63:
        raise UsageError(f"--seed must be a whole number from 0 to 2**63 - 1, got {args.seed}")
    if args.inputs * max(args.hidden) * args.batch > 100_000:
        raise UsageError("step prints every number: keep --inputs x --hidden x --batch under 100,000 "
                         f"(got {args.inputs * max(args.hidden) * args.batch:,})")
    _markdown_target(args.markdown)
    spec = mlp_spec(args.inputs, tuple(args.hidden), args.classes, args.activation)
    rng = np.random.default_rng(args.seed)
    state = initial_state(spec, rng)
    state = {k: v + rng.normal(scale=0.1, size=v.shape) if k.endswith("bias") else v for k, v in state.items()}
    x = rng.normal(size=(args.batch, args.inputs)).round(2)  # two decimals: numbers a class can follow
    y = rng.integers(0, args.classes, size=args.batch)
    trace = trace_step(spec, state, x, y, args.lr, args.optimizer)
    if args.markdown:
        from nnscratch.files.atomic import atomic_write_text

        atomic_write_text(args.markdown, render(trace, markdown=True))
    if args.json:
        print(json.dumps(trace))
        return 0
    print(render(trace), end="")
    if args.markdown:
        print(f"\nwrote {args.markdown}")
    return 0
