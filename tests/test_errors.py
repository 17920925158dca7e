"""Every input a user can get wrong, through the CLI: one line on stderr (``nnscratch: error: ...``),
no traceback, the documented exit code, and nothing written. The same table is ``docs/errors.md``:
this test renders it from the messages the CLI really gives and fails when the doc differs
(regenerate it with ``NNSCRATCH_DATA_DIR=... python tests/test_errors.py --write``).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import CUDA_MAY_EXIST, assert_one_line_error, skip_where_cuda_may_exist  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"

# (what the user got wrong, the command's arguments; DIR is a scratch folder with the files below)
CASES = [
    ("an unknown flag", "compare --learning-rate 0.1"),
    # issue 22: gradcheck and step
    ("a layer to check in a file that does not exist", "gradcheck --layer DIR/missing.py:Swish"),
    ("a layer to check that is not a Layer", "gradcheck --layer DIR/not_a_layer.py:Plain"),
    ("a step too big to print", "step --inputs 1000 --hidden 1000"),
    # issue 22: lr-find
    ("a sweep that starts at a rate of 0", "lr-find --start-lr 0"),
    ("a sweep that ends where it starts", "lr-find --start-lr 0.1 --end-lr 0.01"),
    # issue 22: inspect
    ("a model to inspect that does not exist", "inspect --model DIR/missing.safetensors"),
    ("a model to inspect for other images", "inspect --model DIR/digits8x8.safetensors"),
    ("test images to inspect that are not numbers", "inspect --model DIR/mnist16.safetensors --images 0,seven"),
    ("a test image beyond the test set", "inspect --model DIR/mnist16.safetensors --images 10000"),
    ("too many test images to draw", "inspect --model DIR/mnist16.safetensors --images 0-99"),
    ("a negative SmoothGrad sample count", "inspect --model DIR/mnist16.safetensors --smooth -1"),
    ("more SmoothGrad samples than memory should hold", "inspect --model DIR/mnist16.safetensors --smooth 1000000000"),
    ("a negative SmoothGrad seed", "inspect --model DIR/mnist16.safetensors --seed -1"),
    ("SmoothGrad noise below 0", "inspect --model DIR/mnist16.safetensors --noise -0.1"),
    ("no top losses asked for", "inspect --model DIR/mnist16.safetensors --top 0"),
    ("an inspection that would replace the run holding its model",
     "inspect --model DIR/inspected_run/numpy_model.safetensors --out DIR/inspected_run --overwrite"),
    # issue 21: finetune (files from _inspect_scratch)
    ("a model to fine-tune from that is not a model", "finetune --from DIR/not_a_model.safetensors"),
    ("more layers to freeze than the network has", "finetune --from DIR/mnist16.safetensors --freeze 3 --reset-head"),
    ("other classes to fine-tune on, keeping the old output layer", "finetune --from DIR/mnist16.safetensors --classes 0-4"),
    ("a class the dataset does not have", "finetune --from DIR/mnist16.safetensors --classes 11 --reset-head"),
    ("a fine-tuned network that does not fit the saved one", "finetune --from DIR/mnist16.safetensors --hidden 32 --reset-head"),
    ("a flag value outside its choices", "compare --activation swish"),
    ("a count below its minimum", "compare --epochs 0"),
    ("a rate that is not positive", "compare --lr -0.1"),
    ("a rate that is not a number", "compare --lr nan"),
    ("a probability out of range", "compare --dropout 1"),
    # issue 20: max-norm and input dropout
    ("a max-norm limit of 0", "compare --max-norm 0"),
    ("a negative max-norm limit", "compare --max-norm -3"),
    ("a max-norm limit that is not a number", "compare --max-norm nan"),
    ("an input dropout that drops every pixel", "compare --input-dropout 1"),
    ("a negative input dropout", "compare --input-dropout -0.2"),
    # issue 24: data-parallel training
    ("data-parallel training not started by torchrun", "train --distributed"),
    ("a data-parallel timeout of 0 seconds", "compare --distributed --dist-timeout 0"),
    ("a config file that does not exist", "compare --config DIR/missing.toml"),
    ("a config file that is a device", "compare --config /dev/null"),
    ("a config file that is not TOML", "compare --config DIR/broken.toml"),
    ("a misspelt config key", "compare --config DIR/typo.toml"),
    ("a config value of the wrong type", "compare --config DIR/wrong_type.toml"),
    # the run folder and the numbers (issue 19); files from _scratch_run_folders
    ("a config number where a list belongs", "compare --config DIR/betas_number.toml"),
    ("a config number where a list of steps belongs", "compare --config DIR/milestones_number.toml"),
    ("a command-line option in a config file", "compare --config DIR/overwrite.toml"),
    ("a seed beyond 64 bits", "compare --seed 18446744073709551616"),
    ("an output folder at the root", "compare --out /"),
    ("an output folder in a system folder", "compare --out /usr/share/run"),
    ("an output folder inside the dataset it reads", "compare --dataset folder:DIR/one_class --out DIR/one_class/run"),
    ("an output folder holding a finished run", "compare --out DIR/finished_run"),
    ("an output folder holding other files", "compare --out DIR/not_a_run"),
    ("an output folder under a file", "compare --out DIR/a_file/run"),
    ("an output folder that cannot be created", "compare --out /proc/nnscratch/run"),
    ("a GPU that is not there", "compare --device cuda"),
    # issue 24: the NumPy engine on a GPU, mixed precision
    ("the NumPy engine on a GPU that is not there", "train --engine numpy --device cuda"),
    ("mixed precision with float64 master weights", "compare --precision fp16 --dtype float64"),
    ("a precision that does not exist", "compare --precision fp8"),
    ("an option of another optimizer", "compare --optimizer adam --momentum 0.9"),
    ("Nesterov without momentum", "compare --nesterov"),
    ("betas outside [0, 1)", "compare --optimizer adam --betas 0.9 1.0"),
    ("a schedule without its required setting", "compare --lr-schedule cyclic"),
    ("a setting of another schedule", "compare --lr-schedule step --lr-step-size 5 --t-max 3"),
    ("a warm-up in steps before a schedule in epochs", "compare --lr-schedule cosine --warmup-steps 30"),
    ("early stopping with no patience", "compare --early-stopping 0"),
    ("an unknown dataset", "compare --dataset imagenet"),
    ("a folder dataset that does not exist", "compare --dataset folder:DIR/no_such_folder"),
    ("a folder with one class", "compare --dataset folder:DIR/one_class"),
    ("a CSV row of the wrong length", "compare --dataset csv:DIR/ragged.csv"),
    ("an NPZ file without x or y", "compare --dataset npz:DIR/no_y.npz"),
    ("a data folder without the dataset", "compare --data-dir DIR/empty"),
    ("more training images asked for than there are", "compare --train-subset 60000"),
    ("batch norm with a last batch of one image", "compare --batch-norm --train-subset 129"),
    ("batch norm with batches of one image", "compare --batch-norm --batch-size 1"),
    ("an unknown engine", "train --engine jax"),
    ("a model file that does not exist", "evaluate --model DIR/missing.safetensors"),
    ("a file that is not a model", "evaluate --model DIR/not_a_model.safetensors"),
    ("a model for other images", "evaluate --model DIR/digits8x8.safetensors"),
    ("a JSON output path that is a folder", "evaluate --model DIR/digits8x8.safetensors --json DIR"),
    ("a JSON output path that cannot be written", "evaluate --model DIR/digits8x8.safetensors --json /proc/x/m.json"),
    ("a benchmark pause out of range", "bench --settle -1"),
    # issue 21: export
    ("an export to a format nnscratch does not write", "export --model DIR/digits8x8.safetensors --to tflite DIR/m.tflite"),
    ("an export to a folder", "export --model DIR/digits8x8.safetensors --to onnx DIR"),
    ("an export over the model it reads", "export --model DIR/digits8x8.safetensors --to onnx DIR/digits8x8.safetensors"),
    ("an evaluation's JSON over the model it reads",
     "evaluate --model DIR/digits8x8.safetensors --json DIR/digits8x8.safetensors"),
    ("a benchmark JSON path that is a folder", "bench --json DIR"),
    ("a benchmark chart that cannot be written", "bench --plot /proc/x/benchmark.png"),
    ("a benchmark on no training images", "bench --train-subset 0"),
    ("an export of a file that is not a model", "export --model DIR/not_a_model.safetensors --to onnx DIR/m.onnx"),
    # issue 19: hostile inputs, each refused from what it declares, before it costs memory or disk
    ("an IDX file whose header declares terabytes", "compare --data-dir DIR/idx_huge"),
    ("an NPZ whose x declares 10^12 images", "compare --dataset npz:DIR/huge_x.npz"),
    ("an NPZ whose images have a side of 0", "compare --dataset npz:DIR/zero_side.npz"),
    ("class names that repeat", "compare --dataset npz:DIR/dup_names.npz"),
    ("deskewing colour images", "compare --dataset npz:DIR/rgb.npz --deskew"),
    ("a CSV label with a NUL byte", "compare --dataset csv:DIR/nul_label.csv"),
    ("an image size beyond the maximum", "compare --image-size 100000x100000"),
    ("a model with NaN weights", "evaluate --model DIR/nan.safetensors"),
    ("a model file whose info is not an object", "evaluate --model DIR/info_list.safetensors"),
    ("a model file whose header claims more than the file", "evaluate --model DIR/short_header.safetensors"),
    # issue 21: predict on your own images
    ("an image to predict that is not an image", "predict DIR/a_file --model DIR/digits8x8.safetensors"),
    ("an image to predict that is a device", "predict /dev/null --model DIR/digits8x8.safetensors"),
    ("an image to predict that does not exist", "predict DIR/missing.png --model DIR/digits8x8.safetensors"),
    ("a folder to predict with no images", "predict DIR/empty --model DIR/digits8x8.safetensors"),
    ("a model to predict with that is not a model", "predict DIR/one_class/cat/a.png --model DIR/not_a_model.safetensors"),
    # issue 22: gradient flow
    ("a gradient flow measured on no steps", "compare --gradient-flow-samples 0"),
    # issue 20: augmentation
    ("an unknown augmentation", "compare --augment rotat=10"),
    ("an augmentation strength out of range", "compare --augment scale=1.5"),
    ("an elastic distortion without its sigma", "compare --augment elastic=34"),
    ("an augmentation preset for a dataset that has none", "compare --dataset folder:DIR/one_class --augment auto"),
    ("an augmentation table with a value of the wrong type", "compare --config DIR/augment_table.toml"),
    ("a shift that moves the images out of view", "compare --augment shift=28"),
    ("a preview of no augmentation", "augment-preview --augment none"),
    ("a benchmark augmentation that is not a number", "bench --augment rotate=x"),
    # --- tensorboard ---
    ("a TensorBoard folder that is a file", "compare --tensorboard DIR/a_file"),
    ("a TensorBoard folder under a file", "train --tensorboard DIR/a_file/tb"),
    ("a TensorBoard folder that cannot be created", "train --tensorboard /proc/nnscratch/tb"),
    ("a TensorBoard folder inside the run folder", "train --tensorboard DIR/run/tb"),
    ("a TensorBoard folder where an engine's folder is a file", "compare --tensorboard DIR/tb_with_file"),
    # --- dashboard ---
    ("a dashboard of a file, not a folder of runs", "dashboard DIR/a_file"),
    ("a dashboard port that is no port", "dashboard --port 70000"),
    ("a live dashboard port that is no port", "train --dashboard 70000"),
]


def _scratch_run_folders(folder: Path) -> None:
    """The files of the run-folder cases: config shapes, a finished run, a folder of other files."""
    (folder / "betas_number.toml").write_text("optimizer = 'adam'\nbetas = 0.9\n")
    (folder / "milestones_number.toml").write_text("lr_schedule = 'multistep'\nlr_milestones = 5\n")
    (folder / "overwrite.toml").write_text("overwrite = true\n")
    (folder / "finished_run").mkdir()
    (folder / "finished_run" / "metrics.json").write_text('{"config": {}, "engines": {}}')
    (folder / "not_a_run").mkdir()
    (folder / "not_a_run" / "notes.txt").write_text("mine")
    (folder / "not_a_layer.py").write_text("class Plain:\n    pass\n")
    (folder / "augment_table.toml").write_text("[augment]\nrotate = 10\nhflip = true\n")
    (folder / "tb_with_file").mkdir()
    (folder / "tb_with_file" / "torch").write_text("not a folder")
    _inspect_scratch(folder)


def _inspect_scratch(folder: Path) -> None:
    """The files of the inspect cases: an MNIST model, and one inside a finished run."""
    from nnscratch.files.model_files import save_model
    from nnscratch.model.registry import initial_state
    from nnscratch.model.spec import mlp_spec

    spec = mlp_spec(input_dim=784, hidden=(16,), num_classes=10)
    state = initial_state(spec, np.random.default_rng(0))
    save_model(folder / "mnist16.safetensors", state, spec, engine="numpy", dtype="float32", dataset="mnist")
    (folder / "inspected_run").mkdir()
    (folder / "inspected_run" / "metrics.json").write_text('{"config": {}, "engines": {}}')
    save_model(folder / "inspected_run" / "numpy_model.safetensors", state, spec, engine="numpy", dtype="float32",
               dataset="mnist")


def _scratch(folder: Path) -> None:
    """The files the cases point at."""
    _scratch_run_folders(folder)
    from nnscratch.files.model_files import save_model
    from nnscratch.model.registry import initial_state
    from nnscratch.model.spec import mlp_spec

    (folder / "broken.toml").write_text("epochs = \n")
    (folder / "typo.toml").write_text("learning_rate = 0.1\n")
    (folder / "wrong_type.toml").write_text('epochs = "twenty"\n')
    (folder / "a_file").write_text("not a folder")
    (folder / "one_class" / "cat").mkdir(parents=True)
    from PIL import Image

    Image.new("L", (4, 4)).save(folder / "one_class" / "cat" / "a.png")
    (folder / "ragged.csv").write_text("label,p0,p1,p2,p3\n0,1,2,3,4\n1,5,6,7\n")
    np.savez(folder / "no_y.npz", x=np.zeros((4, 2, 2), dtype=np.uint8))
    (folder / "empty").mkdir()
    (folder / "not_a_model.safetensors").write_bytes(b"\x00" * 64)
    spec = mlp_spec(input_dim=64, hidden=(16,), num_classes=10)
    save_model(folder / "digits8x8.safetensors", initial_state(spec, np.random.default_rng(0)), spec,
               engine="numpy", dtype="float32", dataset="mnist")
    _hostile_scratch(folder, spec)


def _hostile_scratch(folder: Path, spec) -> None:
    """The files of the issue-19 cases: tiny files that declare huge or wrong contents."""
    import gzip
    import json
    import zipfile

    from helpers import encode_idx
    from nnscratch.files.model_files import save_model
    from nnscratch.files.safetensors_file import read_header, write_safetensors
    from nnscratch.model.registry import initial_state

    idx = folder / "idx_huge"
    idx.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (idx / f"{name}.gz").write_bytes(gzip.compress(encode_idx(np.zeros(3, dtype=np.uint8))))
    huge = bytes([0, 0, 8, 3]) + np.array([4_000_000_000, 60_000, 28], dtype=">u4").tobytes()
    (idx / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(huge + bytes(64)))

    def npy(shape, data: bytes) -> bytes:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
        return buf.getvalue() + data

    y = io.BytesIO()
    np.save(y, np.arange(6) % 2)
    for name, x in (("huge_x", npy((10**12, 28, 28), bytes(784))), ("zero_side", npy((6, 0, 8), b""))):
        with zipfile.ZipFile(folder / f"{name}.npz", "w") as z:
            z.writestr("x.npy", x)
            z.writestr("y.npy", y.getvalue())
    np.savez(folder / "rgb.npz", x=np.zeros((24, 4, 4, 3), np.uint8), y=np.arange(24) % 2)
    np.savez(folder / "dup_names.npz", x=np.zeros((6, 2, 2), np.uint8), y=np.arange(6) % 2,
             class_names=np.array(["cat", "cat"]))
    (folder / "nul_label.csv").write_text("".join(f"{label},1,2,3,4\n" for label in
                                                  ["cat", "dog", "cat\x00", "dog", "cat", "dog"]))
    state = initial_state(spec, np.random.default_rng(0))
    state["0.weight"][0, 0] = np.nan
    save_model(folder / "nan.safetensors", state, spec, engine="numpy", dtype="float32", dataset="mnist")
    good = folder / "digits8x8.safetensors"
    metadata = {**read_header(good).metadata, "info": json.dumps([1, 2])}
    write_safetensors(folder / "info_list.safetensors", initial_state(spec, np.random.default_rng(0)), metadata)
    (folder / "short_header.safetensors").write_bytes((9_999_999_999).to_bytes(8, "little") + b"{}" + bytes(30))


def _run(args: str, folder: Path) -> tuple[int, str, str]:
    from nnscratch.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    argv = args.replace("DIR", str(folder)).split()
    if argv[0] in ("compare", "train", "inspect") and "--out" not in argv:
        argv += ["--out", str(folder / "run")]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv + (["--quiet"] if argv[0] in ("compare", "train") else []))
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def _render(rows: list[tuple[str, str, str, int]]) -> str:
    lines = ["# What a user can get wrong, and what nnscratch says", "",
             "Every row was produced by the command as written (DIR is a scratch folder; MNIST found through",
             "`NNSCRATCH_DATA_DIR`). Each error is one line on stderr, without a traceback, and nothing is",
             "written. Exit code 2 is bad usage or input. This file is checked by `tests/test_errors.py`,",
             "which regenerates it with `python tests/test_errors.py --write`.", "",
             "| input | command | message | exit |", "|---|---|---|---|"]
    for what, args, message, code in rows:
        message = message.replace("|", "\\|")
        lines.append(f"| {what} | `nnscratch {args}` | {message} | {code} |")
    return "\n".join(lines) + "\n"


def _collect(folder: Path) -> list[tuple[str, str, str, int]]:
    _scratch(folder)
    rows = []
    for what, args in CASES:
        code, stdout, stderr = _run(args, folder)
        line = assert_one_line_error(stderr, stdout)
        rows.append((what, args, line.replace(str(folder), "DIR"), code))
        assert not (folder / "run").exists(), f"{args}: wrote {folder / 'run'}"
    return rows


def test_every_bad_input_is_one_line_and_matches_docs_errors_md(tmp_path, mnist):
    skip_where_cuda_may_exist()  # the "--device cuda" row needs a machine without a GPU, as in test_config.py
    os.environ.setdefault("MPLBACKEND", "Agg")
    rows = _collect(tmp_path)
    for (what, args, message, code) in rows:
        assert code == 2, (args, message)
        assert "Traceback" not in message
    assert DOC.read_text(encoding="utf-8") == _render(rows), \
        "docs/errors.md differs from what the CLI says: regenerate it with python tests/test_errors.py --write"


if __name__ == "__main__":  # regenerate docs/errors.md
    import tempfile

    if "--write" not in sys.argv:
        sys.exit("usage: NNSCRATCH_DATA_DIR=... python tests/test_errors.py --write")
    from nnscratch.engines import no_cuda_device

    if not no_cuda_device():
        sys.exit(f"{CUDA_MAY_EXIST}: write docs/errors.md on a machine without one")
    with tempfile.TemporaryDirectory() as tmp:
        DOC.write_text(_render(_collect(Path(tmp))), encoding="utf-8")
    print(f"wrote {DOC}")
