"""``nnscratch export``'s command line: ``export --model PATH --to onnx OUT.onnx``.

The graph itself is built by :mod:`nnscratch.files.onnx_export`; here are the flags, the checks
made before any work (the output's folder, the onnx package) and the line that says what was written.
"""

from __future__ import annotations

import argparse

from nnscratch.errors import UsageError

#: ``--to`` choices: the formats a model can be exported to.
FORMATS = ("onnx",)


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="PATH",
                   help="a *_model.safetensors file or a checkpoint (a run's checkpoints/last.safetensors), of either engine")
    p.add_argument("--to", required=True, choices=FORMATS, help="the format to write (onnx: opset 17, docs/export.md)")
    p.add_argument("out", metavar="OUT", help="the file to write, e.g. runs/quick/model.onnx (replaced if it exists)")
    p.add_argument("--probabilities", action="store_true",
                   help="append a softmax: the graph's output is 'probabilities' instead of 'logits'")


def run_export(args: argparse.Namespace) -> int:
    from nnscratch.files.onnx_export import OPSET, export_onnx, require_onnx
    from nnscratch.run.experiment import check_output_file

    check_output_file(args.out, "OUT", "model.onnx", inputs=(args.model,))  # a link followed, /dev/stdout written into
    require_onnx()  # before the model is read: a missing package is said at once
    export_onnx(args.model, args.out, probabilities=args.probabilities)
    print(f"wrote {args.out} (ONNX opset {OPSET}, output "
          f"{'probabilities' if args.probabilities else 'logits'}) from {args.model}")
    return 0
