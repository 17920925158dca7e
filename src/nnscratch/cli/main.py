"""The ``nnscratch`` command line: parses, validates, calls. No math lives here.

Verbs: ``compare`` (both engines), ``train`` (one engine), ``finetune`` (train one engine or both,
starting from a trained model), ``evaluate`` (a saved model on the
test set), ``predict`` (a saved model on your own images), ``bench`` (speed of every engine against
this machine's BLAS limit), ``export`` (a saved model as an ONNX graph), ``gradcheck`` (every
hand-written gradient against finite differences), ``step`` (one training step, number by number),
``lr-find`` (the learning-rate range test: a suggested ``--lr``), ``dashboard`` (a live web page
of the runs' charts), ``inspect`` (what a trained model
learned: weight images, per-class units, activations, saliency maps, top losses), ``augment-preview`` (what
``--augment`` does to the training images, as figures).
Errors are one line on stderr: exit 2 for bad usage or input, 1 for other failures.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import signal
import sys
import time
from pathlib import Path

from nnscratch import __version__
from nnscratch.cli import data_parallel
from nnscratch.cli.data_parallel import add_distributed_flags
from nnscratch.errors import (STOPPED, NNScratchError, RunInterrupted, Terminated, UsageError, clear_pending_stops,
                              on_stop_signal, raise_pending_stop)

#: How this command line names the settings of a run folder (the library says ``out``, ``overwrite=True``).
_FOLDER_FLAGS = {"out": "--out", "overwrite": "--overwrite"}
#: How this command line names the fine-tuning parameters of the library (run/finetune.py, model/registry.py).
_PARAMETER_FLAGS = {"finetune_from": "--from", "reset_head": "--reset-head", "freeze": "--freeze"}


def _add_run_flags(p: argparse.ArgumentParser, default_out: str, finetune: bool = False,
                   trains: bool = True) -> None:
    """The flags of compare/train/finetune. Each is also a key of a --config file (``--batch-norm`` <->
    ``batch_norm``); flags default to None here so that a given flag can override the file, and
    the real defaults (the reference project's) live in :class:`nnscratch.run.config.RunConfig`.
    ``finetune``: ``--from`` is required (the finetune verb); ``trains=False`` (lr-find,
    augment-preview, which take the same settings but train no run): no ``--tensorboard``."""
    from nnscratch.run.config import RunConfig
    from nnscratch.model.registry import ACTIVATIONS, INITIALIZERS

    d = RunConfig()
    p.add_argument("--config", default=None, metavar="FILE.toml",
                   help="read settings from a TOML file (keys = flag names with _); flags given here override it")
    g = p.add_argument_group("training (defaults: the reference project's)")
    g.add_argument("--epochs", type=int, help=f"passes over the training set (default: {d.epochs})")
    g.add_argument("--batch-size", type=int, help=f"mini-batch size (default: {d.batch_size})")
    g.add_argument("--lr", type=float, help=f"learning rate of every optimizer; a schedule's base (default: {d.lr})")
    g.add_argument("--seed", type=int,
                   help=f"seed of the initial weights, batch order and dropout masks (default: {d.seed})")
    g.add_argument("--dtype", choices=["float32", "float64"], help=f"floating-point type of both engines "
                   f"(default: {d.dtype})")
    g.add_argument("--precision", choices=["fp32", "fp16", "bf16"],
                   help="mixed precision: fp16/bf16 products, float32 master weights, fp16 loss scaling "
                        f"(default: {d.precision}; see docs/precision.md)")
    g.add_argument("--train-subset", type=int, metavar="N",
                   help="train on the first N training images (default: all)")
    g.add_argument("--label-smoothing", type=float, metavar="EPS",
                   help="cross-entropy label smoothing in [0, 1], torch's definition (default: 0)")
    m = p.add_argument_group("network")
    m.add_argument("--hidden", type=int, nargs="+", metavar="N",
                   help=f"hidden layer sizes, e.g. --hidden 512 256 (default: {' '.join(map(str, d.hidden))})")
    m.add_argument("--activation", choices=list(ACTIVATIONS), help=f"hidden activation (default: {d.activation})")
    m.add_argument("--dropout", type=float, metavar="P",
                   help="dropout probability after each hidden activation, in [0, 1) (default: 0, none)")
    m.add_argument("--input-dropout", type=float, metavar="P",
                   help="dropout probability on the input (each pixel), in [0, 1); a dropout layer 0 in front of "
                        "the first dense layer (default: 0, none)")
    m.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="batch normalisation after each hidden dense layer (default: off)")
    m.add_argument("--init", choices=list(INITIALIZERS), help=f"weight initialiser (default: {d.init})")
    f = p.add_argument_group("fine-tuning (see docs/transfer.md)")
    f.add_argument("--from", "--finetune-from", dest="finetune_from", required=finetune, metavar="PATH",
                   help="start from this model (a *_model.safetensors file or a checkpoint, of either engine): its "
                        "tensors where names and shapes fit; the network settings default to its own")
    f.add_argument("--freeze", type=int, metavar="N",
                   help="hold the first N dense layers (and their batch norm, in evaluation mode) fixed (default: 0)")
    f.add_argument("--reset-head", action=argparse.BooleanOptionalAction, default=None,
                   help="with --from: a fresh output layer drawn from --seed (needed when the class count differs; "
                        "default: off)")
    _add_optimizer_flags(p)
    _add_data_flags(p)
    r = p.add_argument_group("run")
    r.add_argument("--out", default=None, metavar="DIR", help=f"output folder (default: {default_out}); "
                   "written whole at the end, see docs/training.md#run-folders")
    r.add_argument("--overwrite", action="store_true",
                   help="replace a finished run at --out (default: refuse; an interrupted run is always replaced)")
    r.add_argument("--device", choices=["auto", "cpu", "cuda"],
                   help="device: the torch twin's (auto = cuda if available); the NumPy engine runs on the "
                        "CPU unless cuda (needs CuPy: nnscratch[gpu]) (default: auto)")
    r.add_argument("--threads", type=int, default=None,
                   help="CPU threads for every engine (default, and at most: all usable cores; "
                        "more is capped, with a warning); with --augment one of them prepares the batches")
    r.add_argument("--jit", action=argparse.BooleanOptionalAction, default=None,
                   help="NumPy engine: Numba-compiled element-wise kernels (needs numba; see docs/performance.md)")
    r.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    if trains:
        add_distributed_flags(r)
    r.add_argument("--gradient-flow", action=argparse.BooleanOptionalAction, default=None,
                   help="per-layer gradient, update and activation statistics every epoch, in metrics.json and "
                        "{engine}_gradient_flow.png (default: on; see docs/gradient-flow.md)")
    r.add_argument("--gradient-flow-samples", type=int, metavar="K",
                   help="steps per epoch the gradient flow is measured on (default: 4)")
    if trains:
        r.add_argument("--tensorboard", metavar="DIR",
                       help="also write TensorBoard logs into DIR, a run per engine (DIR/numpy, DIR/torch): "
                            "losses, rates, gradient norms, weight/gradient/activation histograms, first-layer "
                            "weights; view with tensorboard --logdir DIR (needs the tensorboard extra; see "
                            "docs/tensorboard.md)")
        r.add_argument("--dashboard", nargs="?", type=int, const=0, default=None, metavar="PORT",
                       help="also serve the live dashboard of the folder holding --out on 127.0.0.1 (at PORT, "
                            "default a free one; the URL is printed) while the run trains (needs the dashboard "
                            "extra; see docs/dashboard.md)")
    c = p.add_argument_group("checkpoints (OUT/checkpoints/, see docs/trainer.md)")
    c.add_argument("--resume", default=None, metavar="PATH",
                   help="continue a run from its checkpoint (OUT/checkpoints/last.safetensors, or the run's folder); "
                        "its settings are the base, only --epochs, --out, --tensorboard and the checkpoint flags "
                        "may change")
    c.add_argument("--checkpoints", action=argparse.BooleanOptionalAction, default=None,
                   help="write OUT/checkpoints/last.safetensors after every epoch (default: on; --no-checkpoints)")
    c.add_argument("--checkpoint-every", type=int, metavar="K", help="also keep epoch-K.safetensors every K epochs")
    c.add_argument("--checkpoint-every-steps", type=int, metavar="S",
                   help="also write step-N.safetensors every S steps, inside epochs too")
    c.add_argument("--keep-checkpoints", type=int, metavar="K",
                   help="keep only the newest K epoch-/step- checkpoints (default: all)")


def _add_optimizer_flags(p: argparse.ArgumentParser) -> None:
    """Optimizer, learning-rate schedule, regularisation and early stopping (torch's names and defaults).
    The choices are the keys of the registries: OPTIMIZERS, SCHEDULES and the schedules' own modes."""
    from nnscratch.numpy_engine.optimizers import OPTIMIZERS
    from nnscratch.training.schedules import SCHEDULES, CyclicLR, OneCycleLR, ReduceLROnPlateau

    flag = argparse.BooleanOptionalAction
    o = p.add_argument_group("optimizer (torch's defaults for whatever is not given)")
    o.add_argument("--optimizer", choices=list(OPTIMIZERS), help="(default: sgd)")
    o.add_argument("--momentum", type=float, help="sgd, rmsprop: momentum (default: 0)")
    o.add_argument("--dampening", type=float, help="sgd: dampening of the momentum (default: 0)")
    o.add_argument("--nesterov", action=flag, default=None, help="sgd: Nesterov momentum (default: off)")
    o.add_argument("--betas", type=float, nargs=2, metavar=("B1", "B2"),
                   help="adam, adamw: moving-average factors (default: 0.9 0.999)")
    o.add_argument("--eps", type=float, help="adam, adamw, rmsprop: added to the denominator (default: 1e-8)")
    o.add_argument("--alpha", type=float, help="rmsprop: smoothing constant (default: 0.99)")
    o.add_argument("--centered", action=flag, default=None, help="rmsprop: centred variant (default: off)")
    o.add_argument("--amsgrad", action=flag, default=None, help="adam, adamw: AMSGrad (default: off)")
    o.add_argument("--weight-decay", type=float,
                   help="L2 in the gradient (sgd, adam, rmsprop; default 0) or decoupled (adamw; default 0.01)")
    s = p.add_argument_group("learning-rate schedule (per-step values equal to torch's schedulers)")
    s.add_argument("--lr-schedule", choices=list(SCHEDULES), help="(default: none)")
    s.add_argument("--lr-schedule-unit", choices=["step", "epoch"],
                   help="advance the schedule every batch or every epoch (default: epoch for step, multistep, "
                        "exponential, cosine, plateau; step for cyclic, onecycle and a lone warm-up)")
    s.add_argument("--warmup-steps", type=int, metavar="N",
                   help="linear warm-up over the first N optimisation steps (batches); a per-epoch schedule "
                        "needs --lr-schedule-unit step with it")
    s.add_argument("--warmup-start-factor", type=float, help="warm-up starts at this times --lr (default: 1/3)")
    s.add_argument("--lr-step-size", type=int, help="step: units between decays")
    s.add_argument("--lr-gamma", type=float, help="step, multistep, exponential, cyclic exp_range: decay factor")
    s.add_argument("--lr-milestones", type=int, nargs="+", metavar="N", help="multistep: units where lr decays")
    s.add_argument("--t-max", type=int, help="cosine: units of one half-period (default: the whole run)")
    s.add_argument("--min-lr", type=float, help="cosine: eta_min; plateau: the floor (default: 0)")
    s.add_argument("--max-lr", type=float, help="cyclic: the peak (required); onecycle: the peak (default: --lr)")
    s.add_argument("--step-size-up", type=int, help="cyclic: units going up (default: 2000)")
    s.add_argument("--step-size-down", type=int, help="cyclic: units going down (default: = up)")
    s.add_argument("--cyclic-mode", choices=list(CyclicLR.MODES), help="cyclic: shape")
    s.add_argument("--total-steps", type=int, help="onecycle: length of the cycle (default: the whole run)")
    s.add_argument("--pct-start", type=float, help="onecycle: share of the cycle going up (default: 0.3)")
    s.add_argument("--anneal-strategy", choices=list(OneCycleLR.ANNEAL_STRATEGIES),
                   help="onecycle: shape (default: cos)")
    s.add_argument("--div-factor", type=float, help="onecycle: start = max_lr / div_factor (default: 25)")
    s.add_argument("--final-div-factor", type=float, help="onecycle: end = start / this (default: 1e4)")
    s.add_argument("--three-phase", action=flag, default=None, help="onecycle: three phases (default: off)")
    s.add_argument("--plateau-factor", type=float, help="plateau: lr multiplier on a plateau (default: 0.1)")
    s.add_argument("--plateau-patience", type=int, help="plateau: epochs without improvement (default: 10)")
    s.add_argument("--plateau-threshold", type=float, help="plateau: what counts as better (default: 1e-4)")
    s.add_argument("--plateau-threshold-mode", choices=list(ReduceLROnPlateau.THRESHOLD_MODES),
                   help="plateau: (default: rel)")
    s.add_argument("--plateau-cooldown", type=int, help="plateau: epochs to wait after a cut (default: 0)")
    s.add_argument("--plateau-eps", type=float, help="plateau: smallest change of lr applied (default: 1e-8)")
    r = p.add_argument_group("regularisation and stopping")
    r.add_argument("--l1", type=float, help="add l1 * sum|w| over every parameter to the loss (default: 0)")
    r.add_argument("--l2", type=float, help="add l2 * sum w^2 over every parameter to the loss (default: 0)")
    r.add_argument("--clip-grad-norm", type=float, metavar="MAX",
                   help="scale the gradients to a global 2-norm of at most MAX (torch's clip_grad_norm_)")
    r.add_argument("--max-norm", type=float, metavar="C",
                   help="after every update, scale each unit's incoming weights (each dense weight row) to a "
                        "2-norm of at most C (torch.renorm; Srivastava et al. use 3-4; default: off)")
    r.add_argument("--early-stopping", type=int, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without a better validation loss; restore the best weights")
    r.add_argument("--early-stopping-min-delta", type=float, metavar="DELTA",
                   help="an improvement must beat the best validation loss by more than this (default: 0)")


def _add_data_flags(p: argparse.ArgumentParser, evaluate: bool = False) -> None:
    """--dataset and the options of loading it (config keys of the same names)."""
    from nnscratch.data import dataset_choices

    g = p.add_argument_group("data")
    g.add_argument("--dataset", metavar="NAME",
                   help=f"{' | '.join(dataset_choices())} "
                        + ("(default: the dataset the model was trained on)" if evaluate else "(default: mnist)"))
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder holding a built-in dataset's files (else $NNSCRATCH_DATA_DIR/<dataset>/, "
                        "the user cache, then a download)")
    g.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None,
                   help="check built-in dataset files against their known SHA-256 (default: on; --no-verify "
                        "for a copy you re-packed yourself)")
    if evaluate:
        return
    g.add_argument("--val-size", type=int, metavar="N",
                   help="validation images (default: 10,000, or a sixth of the training part when smaller)")
    g.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=None,
                   help="standardise each channel with the training split's mean and std (default: off)")
    g.add_argument("--deskew", action=argparse.BooleanOptionalAction, default=None,
                   help="shear every greyscale image upright and centre it by its moments, training, validation "
                        "and test alike; saved models remember it (default: off; docs/datasets.md#deskewing)")
    g.add_argument("--image-size", metavar="HxW", help="resize every image, e.g. 28x28 (any dataset)")
    colour = g.add_mutually_exclusive_group()
    colour.add_argument("--grayscale", dest="color", action="store_const", const="grayscale",
                        help="convert images to one grey channel (any dataset)")
    colour.add_argument("--rgb", dest="color", action="store_const", const="rgb",
                        help="convert images to three colour channels (any dataset)")
    g.add_argument("--strict", action=argparse.BooleanOptionalAction, default=None,
                   help="folder: an unreadable image is an error (default: skipped with a warning)")
    g.add_argument("--label-column", metavar="NAME_OR_INDEX", help="csv: the label column (default: the first)")
    g.add_argument("--image-shape", metavar="HxW[xC]", help="csv: the images' shape when not square greyscale")
    g.add_argument("--classes", metavar="LIST",
                   help="keep only these classes, e.g. 0-4 or 0,2,5-9, relabelled 0..k-1 in order (any dataset; "
                        "saved models remember it)")
    g.add_argument("--augment", metavar="SPEC",
                   help="augment the training images (never validation or test): e.g. rotate=10,shift=2,scale=0.1,"
                        "shear=5,elastic=34:4,hflip=0.5; auto = the dataset's preset (auto,hflip=0.5 changes it); "
                        "default: none (docs/augmentation.md)")


class _OneLineErrors(argparse.ArgumentParser):
    """argparse with the project's error contract: one line on stderr naming the fix, exit 2
    (argparse's own prints the whole usage block first)."""

    def error(self, message: str):
        self.exit(2, f"nnscratch: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(
        prog="nnscratch",
        description="A neural network written from scratch in NumPy, trained beside its exact PyTorch twin.")
    parser.add_argument("--version", action="version", version=f"nnscratch {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=_OneLineErrors)

    p = verbs.add_parser("compare", help="train the NumPy engine and its PyTorch twin, write the report",
                         description="Train both engines from the same initial weights on the same batches, "
                                     "evaluate them on the test set, write metrics.json, report.md, "
                                     "figures and both models.")
    _add_run_flags(p, "runs/<timestamp>-compare/")

    p = verbs.add_parser("train", help="train one engine", description="Train one engine; write the same "
                         "outputs as compare for that engine.")
    p.add_argument("--engine", choices=["numpy", "torch"], default="numpy", help="engine (default: numpy)")
    _add_run_flags(p, "runs/<timestamp>-train-<engine>/")

    p = verbs.add_parser("finetune", help="train starting from a trained model (transfer learning)",
                         description="Start from a trained model or checkpoint (--from): its tensors where names "
                                     "and shapes fit, a fresh output layer with --reset-head, the first N dense "
                                     "layers held fixed with --freeze N; then train as train does and write the "
                                     "same outputs. The network settings default to the source's. See "
                                     "docs/transfer.md.")
    p.add_argument("--engine", choices=["numpy", "torch", "both"], default="numpy",
                   help="engine, or both twins as compare trains them (default: numpy)")
    _add_run_flags(p, "runs/<timestamp>-finetune-<engine>/", finetune=True)

    p = verbs.add_parser("evaluate", help="evaluate a saved model on the test set",
                         description="Load a .safetensors model written by train/compare and report its "
                                     "test-set metrics.")
    p.add_argument("--model", required=True, metavar="PATH", help="a *_model.safetensors file or a checkpoint (OUT/checkpoints/last.safetensors), of either engine")
    p.add_argument("--engine", choices=["numpy", "torch"], default="numpy",
                   help="engine to run the model with (default: numpy)")
    _add_data_flags(p, evaluate=True)
    p.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help="floating-point type (default: the one the model was trained in)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the metrics as JSON")

    from nnscratch.cli.predict import add_predict_arguments

    p = verbs.add_parser("predict", help="a saved model's top classes for your own images (e.g. a digit you drew)",
                         description="Prepare each image as the model's training images were (MNIST's way for "
                                     "MNIST models: white on black, fitted into 20x20, centred by mass in 28x28) "
                                     "and print the model's three most probable classes; see docs/predict.md.")
    add_predict_arguments(p)

    p = verbs.add_parser("datasets", help="list the built-in datasets, where each is found and its sizes",
                         description="List the built-in datasets: where each was found (or where it would be "
                                     "downloaded from) and its sizes. Your own data: --dataset folder:PATH, "
                                     "csv:PATH or npz:PATH on compare/train/evaluate.")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="also look in this folder")

    from nnscratch.cli.bench import add_bench_arguments

    p = verbs.add_parser("bench", help="speed of every engine against this machine's BLAS limit",
                         description="Measure seconds per epoch of NumPy (float32/64), PyTorch (eager and "
                                     "compiled) and scikit-learn on the real MNIST training set, against "
                                     "the GEMM peak of this machine.")
    add_bench_arguments(p)

    from nnscratch.cli.export import add_export_arguments

    p = verbs.add_parser("export", help="write a saved model as an ONNX graph",
                         description="Write a model file or checkpoint as an ONNX graph (opset 17) of the network "
                                     "in evaluation mode, with its class names and preprocessing in the "
                                     "metadata (docs/export.md). Needs the onnx extra.")
    add_export_arguments(p)

    from nnscratch.cli.gradcheck import add_gradcheck_arguments

    p = verbs.add_parser("gradcheck", help="every hand-written gradient against finite differences (or your layer's)",
                         description="Check every gradient of the network the flags or a config describe (or of "
                                     "--layer FILE.py:CLASS, a layer of your own, also against torch) against "
                                     "central finite differences in float64, on a small random batch; print the "
                                     "per-layer table; exit 1 when an error is above --tol (docs/gradcheck.md).")
    add_gradcheck_arguments(p)

    from nnscratch.cli.step import add_step_arguments

    p = verbs.add_parser("step", help="one training step of a tiny network, number by number, beside torch's",
                         description="Run one training step of a tiny network with the engine's own classes and "
                                     "print every number: inputs, each layer's output, the loss, every gradient "
                                     "(beside torch autograd's), the update and the new weights, each with its "
                                     "formula (docs/gradcheck.md).")
    add_step_arguments(p)

    from nnscratch.cli.lr_find import add_lr_find_arguments

    p = verbs.add_parser("lr-find", help="the learning-rate range test: a suggested --lr for these settings",
                         description="Train a throwaway copy of the fresh model for a few hundred steps while the "
                                     "learning rate grows exponentially, stop when the loss diverges, and suggest "
                                     "a --lr (steepest descent of the smoothed loss, and its minimum / 10); write "
                                     "lr_find.png and lr_find.json into --out (docs/lr-find.md).")
    p.add_argument("--engine", choices=["numpy", "torch"], default="numpy", help="engine (default: numpy)")
    _add_run_flags(p, "runs/<timestamp>-lr-find/", trains=False)
    add_lr_find_arguments(p)

    from nnscratch.cli.inspect import add_inspect_arguments

    p = verbs.add_parser("inspect", help="what a trained model learned: weight images, top units, activations, "
                                         "saliency, top losses",
                         description="Draw a trained model's first-layer weights as images, each class's most "
                                     "responsive hidden units, the activations of every layer and the saliency "
                                     "maps (plain gradient and SmoothGrad, by our own backward pass) of chosen "
                                     "test images, and the test images of highest loss, into --out with an "
                                     "inspect.md index (docs/inspect.md).")
    add_inspect_arguments(p)
    _add_data_flags(p, evaluate=True)

    from nnscratch.cli.augment_preview import add_augment_preview_arguments

    p = verbs.add_parser("augment-preview", help="a figure of what --augment does to the training images",
                         description="Draw the first training images of every class, each followed by augmented "
                                     "versions (augment_preview.png), and one image under each transform of the "
                                     "spec alone (augment_transforms.png), into --out. Takes the train verb's "
                                     "options (--dataset, --config, --augment, --seed, ...); without --augment, the "
                                     "dataset's preset (docs/augmentation.md).")
    _add_run_flags(p, "runs/<timestamp>-augment-preview/", trains=False)
    add_augment_preview_arguments(p)

    from nnscratch.cli.dashboard import add_dashboard_arguments

    p = verbs.add_parser("dashboard", help="a live web page of your runs' charts (loss, accuracy, twin divergence...)",
                         description="Serve a local web page (127.0.0.1, a free port unless --port) that lists the "
                                     "runs in RUNS_DIR and charts each one live as it trains: both engines' loss "
                                     "and accuracy, the twin divergence, the learning rate, the gradient flow, the "
                                     "figures. Read-only; needs the dashboard extra. See docs/dashboard.md.")
    add_dashboard_arguments(p)
    return parser


def _config_from(args: argparse.Namespace, engines: tuple[str, ...]):
    from nnscratch.run.config import CONFIG_KEYS, resolve_config

    flags = {key: getattr(args, key, None) for key in CONFIG_KEYS}
    return resolve_config(args.config, flags, engines)


def _resumed(args: argparse.Namespace, engines: tuple[str, ...]):
    """``--resume``: the checkpoints and the settings they carry, with the flags given applied."""
    from nnscratch.run.config import CONFIG_KEYS
    from nnscratch.run.resume import load_checkpoints, resumed_config

    if args.config:
        raise UsageError("--resume takes its settings from the checkpoint: drop --config")
    checkpoints = load_checkpoints(args.resume, engines)
    given = {key: getattr(args, key) for key in CONFIG_KEYS if getattr(args, key, None) is not None}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
    return checkpoints, resumed_config(checkpoints, given, engines)


def _run(args: argparse.Namespace, engines: tuple[str, ...], label: str) -> int:
    """compare/train: the settings, the checks, then the Python API's run (nnscratch.api)."""
    from tqdm.auto import tqdm

    from nnscratch import api
    from nnscratch.run.experiment import check_engines, check_tensorboard, open_run_folder
    from nnscratch.threads import set_threads

    checkpoints, note = None, None
    if args.resume:
        from nnscratch.run.resume import extension_note

        checkpoints, cfg = _resumed(args, engines)
        note = extension_note(checkpoints, cfg)
    else:
        cfg = _config_from(args, engines)
    cfg = data_parallel.per_process_config(cfg)  # --distributed: the cores shared among the processes
    if data_parallel.is_replica():  # --distributed, a rank other than 0: the same training, nothing written
        return data_parallel.run_replica(cfg, engines, checkpoints)
    out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{label}")
    # everything that can be checked before any work, in well under a second
    folder = open_run_folder(cfg, out, args.overwrite, names=_FOLDER_FLAGS)
    check_engines(cfg)
    check_tensorboard(cfg, folder.out)
    dashboard = None
    if args.dashboard is not None:  # served from a thread, from now until the process ends
        from nnscratch.cli.dashboard import start_beside_run

        dashboard = start_beside_run(out, args.dashboard)
    import numpy as np

    np.seterr(all="ignore")  # a diverging run is reported once, after the results, not by NumPy per step
    threads = set_threads(cfg.threads)
    if cfg.threads and threads < cfg.threads:  # capped (said once, here): the run records what it used
        cfg = dataclasses.replace(cfg, threads=threads)
    print(f"nnscratch {label}: {cfg.dataset}, engines {', '.join(engines)}, {threads} threads"
          + data_parallel.describe() + (f", config {args.config}" if args.config else "") + (f", resuming {args.resume}" if args.resume else ""))
    print(f"  {cfg.describe()}")
    print(f"  output: {out}/")
    if cfg.tensorboard:
        print(f"  tensorboard: {cfg.tensorboard} (view with: tensorboard --logdir {cfg.tensorboard})")
    if dashboard:
        print(f"  dashboard: {dashboard} (live while the run trains)", flush=True)
    if note:
        print(f"  note: {note}")

    def on_epoch(engine: str, r: dict) -> None:
        if not args.quiet:
            tqdm.write(f"  {engine:>5} epoch {r['epoch']:>2}/{cfg.epochs}: train loss {r['train_loss']:.4f} "
                       f"acc {r['train_accuracy']:.4f} | val loss {r['val_loss']:.4f} acc {r['val_accuracy']:.4f} "
                       f"f1 {r['val_f1']:.4f} | {r['time_s']:.2f} s")

    kwargs: dict = {"out": folder, "progress": not args.quiet, "on_epoch": on_epoch}
    base = cfg
    if checkpoints is not None:  # the checkpoint's settings, with the ones that may change on resume
        from nnscratch.run.config import RESUMABLE_KEYS

        base = None
        kwargs.update(resume=checkpoints, **{k: getattr(cfg, k) for k in RESUMABLE_KEYS})
    try:
        with folder:  # the lock and the staging folder, from here to the end of the run
            print(f"  live: {folder.staging / 'metrics.jsonl'} (every event as it happens)", flush=True)
            if len(engines) == 2:
                run = api.compare(base, **kwargs)
            else:
                run = api.train(base, engine=engines[0], **kwargs)
    except RunInterrupted as stop:
        clear_pending_stops()  # said once, here
        _say_interrupted(stop, folder)
        return STOPPED[Terminated if stop.signum == signal.SIGTERM else KeyboardInterrupt][1]
    except (KeyboardInterrupt, Terminated) as exc:
        if not folder.interrupted:  # nothing kept (no checkpoint yet), or the run was already in place
            raise
        raise type(exc)(_kept(folder)) from None  # main() prints it after "interrupted"
    print()
    from nnscratch.report.results_table import results_table  # imports matplotlib: only once there is a result

    print(results_table(run.metrics))
    for engine, record in run.history.items():
        if record.get("early_stopping"):
            print(f"{engine} early stopping: {record['early_stopping']['reason']}")
        bad = next((k for k, v in enumerate(record["step_loss"]) if not math.isfinite(v)), None)
        if bad is not None:
            print(f"nnscratch: warning: {engine} diverged: its loss became {record['step_loss'][bad]} at step "
                  f"{bad + 1}; try a smaller --lr or --clip-grad-norm", file=sys.stderr)
    print(f"\nwrote {out}/report.md, metrics.json, figures and models")
    return 0


def _say_interrupted(stop: RunInterrupted, folder) -> None:
    """One line: the run stopped after the step in flight, where its checkpoint is, the command that resumes it."""
    word = STOPPED[Terminated if stop.signum == signal.SIGTERM else KeyboardInterrupt][0]
    if stop.command is None:
        print(f"nnscratch: {word} during {stop.engine} training; no checkpoint was written, nothing to resume "
              "(checkpoints off, or none yet)", file=sys.stderr)
        return
    kept = f" (the finished run in {folder.out}/ is untouched)" if folder.kept_beside else ""
    where = (f"{stop.engine} checkpoint written to {stop.checkpoint}" if stop.checkpoint else
             f"before {stop.engine} training started, checkpoints kept in {folder.final}/checkpoints")
    print(f"nnscratch: {word}: {where}{kept}; resume with: {stop.command}", file=sys.stderr)


def _kept(folder) -> str:
    """Where an interrupted run's checkpoints went (a RunFolder after ``interrupt()``)."""
    where = f"its checkpoints are in {folder.final}/ (see INTERRUPTED.md there)"
    return f"the finished run in {folder.out}/ is untouched; {where}" if folder.kept_beside else where


def _evaluate(args: argparse.Namespace) -> int:
    from nnscratch.engines import make_engine
    from nnscratch.files.atomic import write_json
    from nnscratch.run.experiment import check_output_file
    from nnscratch.run.saved_model import load_model_and_test_set
    from nnscratch.training.metrics import classification_report
    from nnscratch.threads import set_threads

    if args.json:  # checked before any work, like --out; a link is followed, /dev/stdout written into
        check_output_file(args.json, "--json", "metrics.json", inputs=(args.model,))
    # the model's data options (split seed and size, resizing, colour, CSV layout) apply to whatever
    # --dataset is evaluated: the images are converted to what the model was trained on
    loaded = load_model_and_test_set(args.model, args.dataset, args.data_dir, verify=args.verify, dtype=args.dtype)
    spec, data, x = loaded.spec, loaded.data, loaded.x
    set_threads(None)
    engine = make_engine(args.engine, spec, loaded.state, dtype=loaded.dtype, device="auto")
    pred = engine.eval().predict_logits(x).argmax(axis=1)
    report = classification_report(data.test_labels, pred, data.class_names)
    print(f"{args.model}: {spec.describe()}, {data.title} test set ({len(pred):,} images), engine {args.engine}")
    print(f"  accuracy {report['accuracy']:.4f}  precision {report['precision']:.4f}  recall "
          f"{report['recall']:.4f}  f1 {report['f1']:.4f}  errors {report['errors']}")
    if args.json:
        write_json(args.json, {"model": str(args.model), "engine": args.engine, "test": report})
    return 0


def _with_flags(exc: NNScratchError) -> str:
    """The error's line, naming the flag where a library parameter is named (``finetune_from`` -> ``--from``)."""
    from nnscratch.errors import ParameterError

    if isinstance(exc, ParameterError) and exc.parameter in _PARAMETER_FLAGS:
        return f"{_PARAMETER_FLAGS[exc.parameter]} {exc.problem}"
    return str(exc)


def _quiet_stops(hook):
    """``sys.unraisablehook`` that keeps quiet about a stop Python swallowed (it is raised again,
    :func:`~nnscratch.errors.raise_pending_stop`) and hands every other unraisable to ``hook``."""
    def quiet(unraisable) -> None:
        if not isinstance(unraisable.exc_value, (KeyboardInterrupt, Terminated)):
            hook(unraisable)
    return quiet


def main(argv: list[str] | None = None) -> int:
    """The command line: exit status 0, 1 (a failure), 2 (bad input), 130 (Ctrl-C), 143 (SIGTERM);
    every error, and every stop, one line on stderr, from the first instant (imports included).

    Ctrl-C and SIGTERM go through :func:`~nnscratch.errors.on_stop_signal`, so a stop that Python
    swallowed (one landing in a weakref callback while the figures are drawn) is raised again
    before the command returns. Run as the program (``argv`` None), both signals are ignored once
    the command is done: one arriving while the interpreter shuts down would otherwise kill it
    (exit -2) after every file was written and its status decided."""
    clear_pending_stops()
    previous = {signum: signal.signal(signum, on_stop_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    unraisable, sys.unraisablehook = sys.unraisablehook, _quiet_stops(sys.unraisablehook)
    try:
        parser = build_parser()  # imports the library: seconds, during which Ctrl-C is one line too
        args = parser.parse_args(argv)
        code = _dispatch(args, parser)
        raise_pending_stop()
        return code
    except NNScratchError as exc:
        print(f"nnscratch: error: {_with_flags(exc)}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, Terminated) as exc:
        word, code = STOPPED[KeyboardInterrupt if isinstance(exc, KeyboardInterrupt) else Terminated]
        print(f"nnscratch: {word}" + (f"; {exc}" if str(exc) else ""), file=sys.stderr)
        return code
    except OSError as exc:  # the disk, not the user: full, read-only, permissions changed mid-run
        print(f"nnscratch: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    finally:
        clear_pending_stops()
        sys.unraisablehook = unraisable
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_IGN if argv is None else handler)


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the verb; its errors are turned into one line by :func:`main`."""
    if args.verb == "compare":
        return data_parallel.with_data_parallel(args, lambda: _run(args, ("numpy", "torch"), "compare"))
    if args.verb == "train":
        return data_parallel.with_data_parallel(args, lambda: _run(args, (args.engine,), f"train-{args.engine}"))
    if args.verb == "finetune":
        engines = ("numpy", "torch") if args.engine == "both" else (args.engine,)
        return data_parallel.with_data_parallel(args, lambda: _run(args, engines, f"finetune-{args.engine}"))
    if args.verb == "evaluate":
        return _evaluate(args)
    if args.verb == "predict":
        from nnscratch.cli.predict import run_predict

        return run_predict(args)
    if args.verb == "datasets":
        from nnscratch.data import describe_datasets, format_datasets_table

        print(format_datasets_table(describe_datasets(args.data_dir)))
        return 0
    if args.verb == "bench":
        from nnscratch.cli.bench import run_bench

        return run_bench(args)
    if args.verb == "export":
        from nnscratch.cli.export import run_export

        return run_export(args)
    if args.verb == "gradcheck":
        from nnscratch.cli.gradcheck import run_gradcheck

        return run_gradcheck(args)
    if args.verb == "step":
        from nnscratch.cli.step import run_step

        return run_step(args)
    if args.verb == "lr-find":
        from nnscratch.cli.lr_find import run_lr_find

        return run_lr_find(args, _config_from(args, (args.engine,)), _FOLDER_FLAGS)
    if args.verb == "inspect":
        from nnscratch.cli.inspect import run_inspect

        return run_inspect(args, _FOLDER_FLAGS)

    if args.verb == "dashboard":
        from nnscratch.cli.dashboard import run_dashboard

        return run_dashboard(args)
    if args.verb == "augment-preview":
        from nnscratch.cli.augment_preview import run_augment_preview

        return run_augment_preview(args, _config_from(args, ("numpy",)), _FOLDER_FLAGS, args.augment is not None)
    parser.error(f"unknown verb {args.verb}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
