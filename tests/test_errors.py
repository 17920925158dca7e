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
from helpers import assert_one_line_error  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"

# (what the user got wrong, the command's arguments; DIR is a scratch folder with the files below)
CASES = [
    ("an unknown flag", "compare --learning-rate 0.1"),
    ("a flag value outside its choices", "compare --activation swish"),
    ("a count below its minimum", "compare --epochs 0"),
    ("a rate that is not positive", "compare --lr -0.1"),
    ("a rate that is not a number", "compare --lr nan"),
    ("a probability out of range", "compare --dropout 1"),
    ("a config file that does not exist", "compare --config DIR/missing.toml"),
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
    ("an option of another optimizer", "compare --optimizer adam --momentum 0.9"),
    ("Nesterov without momentum", "compare --nesterov"),
    ("betas outside [0, 1)", "compare --optimizer adam --betas 0.9 1.0"),
    ("a schedule without its required setting", "compare --lr-schedule cyclic"),
    ("a setting of another schedule", "compare --lr-schedule step --lr-step-size 5 --t-max 3"),
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


def _run(args: str, folder: Path) -> tuple[int, str, str]:
    from nnscratch.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    argv = args.replace("DIR", str(folder)).split()
    if argv[0] in ("compare", "train") and "--out" not in argv:
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
    with tempfile.TemporaryDirectory() as tmp:
        DOC.write_text(_render(_collect(Path(tmp))), encoding="utf-8")
    print(f"wrote {DOC}")
