"""Experiment configs: TOML files and flags are two spellings of the same keys; every mistake in a
file is one line naming the key (and the closest valid key for a typo), exit 2, nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import assert_one_line_error, run_cli, skip_where_cuda_may_exist
from nnscratch.run.config import CONFIG_KEYS, RunConfig, read_config_file, resolve_config
from nnscratch.errors import UsageError

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_seed_config_is_the_default_run():
    cfg = resolve_config(REPO / "configs" / "seed.toml", {}, ("numpy", "torch"))
    assert cfg == RunConfig()


def test_the_gelu_config_is_the_readmes_deeper_net():
    """configs/gelu-bn.toml = the seed configuration with ``--hidden 512 256 --activation gelu
    --batch-norm --dropout 0.2`` (what its comment and the README say)."""
    from dataclasses import replace

    cfg = resolve_config(REPO / "configs" / "gelu-bn.toml", {}, ("numpy", "torch"))
    assert cfg == replace(RunConfig(), hidden=(512, 256), activation="gelu", batch_norm=True, dropout=0.2)


def test_the_long_config_is_best_toml_at_batch_128_and_80_epochs():
    """configs/best-long.toml is what its comment says: best.toml without deskewing, at batch 128,
    lr 0.05, 80 epochs."""
    from dataclasses import replace

    best = resolve_config(REPO / "configs" / "best.toml", {}, ("numpy",))
    long = resolve_config(REPO / "configs" / "best-long.toml", {}, ("numpy",))
    assert best.weight_decay == 5e-4 and best.deskew
    assert long == replace(best, batch_size=128, lr=0.05, epochs=80, deskew=False)


def test_file_values_then_flags_override(tmp_path):
    path = _write(tmp_path, 'hidden = [512, 256]\nactivation = "gelu"\nbatch_norm = true\ndropout = 0.2\n'
                            'lr = 1\nepochs = 3\n')
    cfg = resolve_config(path, {"epochs": 5, "lr": None}, ("numpy",))
    assert cfg.hidden == (512, 256) and cfg.activation == "gelu" and cfg.batch_norm is True
    assert cfg.dropout == 0.2 and cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.epochs == 5  # the flag wins
    spec = cfg.model_spec(784, 10)
    assert spec.describe() == "784-512-256-10 (batch norm, gelu, dropout 0.2)"
    # a boolean flag can switch a file's true off
    assert resolve_config(path, {"batch_norm": False}, ("numpy",)).batch_norm is False


def test_every_config_key_is_a_flag():
    from nnscratch.cli.main import build_parser

    parser = build_parser()
    for verb in ("compare", "train", "finetune"):
        sub = parser._subparsers._group_actions[0].choices[verb]
        flags = {opt for action in sub._actions for opt in action.option_strings}
        for key in CONFIG_KEYS:
            if key == "color":  # spelled --grayscale / --rgb, as the issue asks
                assert {"--grayscale", "--rgb"} <= flags
                continue
            assert "--" + key.replace("_", "-") in flags, (verb, key)


@pytest.mark.parametrize("text,words", [
    ("learning_rate = 0.1\n", ["learning_rate", "lr"]),
    ("batchsize = 32\n", ["batchsize", "batch_size"]),
    ("colour = 3\n", ["colour", "color"]),
    ("wibble = 3\n", ["wibble", "valid keys"]),
    ('epochs = "ten"\n', ["epochs", "integer"]),
    ("epochs = 2.5\n", ["epochs", "integer"]),
    ("lr = -0.1\n", ["lr", "-0.1"]),
    ("lr = nan\n", ["lr", "nan"]),
    ("dropout = 1.0\n", ["dropout"]),
    ("label_smoothing = inf\n", ["label_smoothing"]),
    ("batch_norm = 1\n", ["batch_norm", "true or false"]),
    ('hidden = "512"\n', ["hidden"]),
    ("hidden = [512, 0]\n", ["hidden"]),
    ('activation = "swish"\n', ["activation", "gelu"]),
    ('init = "orthogonal"\n', ["init", "he_normal"]),
    ("epochs = \n", ["not valid TOML"]),
    ("[model\nhidden = 3\n", ["not valid TOML"]),
    ("epochs = " + "[" * 5000 + "1" + "]" * 5000 + "\n", ["nested deeper than"]),
    ("# " + "x" * (1 << 20) + "\n", ["larger than 1,048,576 bytes"]),
])
def test_bad_config_files_name_the_key(tmp_path, text, words):
    path = _write(tmp_path, text)
    with pytest.raises(UsageError) as err:
        read_config_file(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message, (word, message)


def test_config_that_is_not_a_file(tmp_path):
    for path, words in ((tmp_path / "missing.toml", "does not exist"), (tmp_path, "folder"),
                        (Path(os.devnull), "not a regular file")):
        with pytest.raises(UsageError, match=words):
            read_config_file(path)


@pytest.mark.parametrize("args,words", [
    (["--config", "{tmp}/bad.toml"], "unknown key 'learning_rate'; did you mean 'lr'"),
    (["--config", "{tmp}/nowhere.toml"], "does not exist"),
    (["--dropout", "1.5"], "--dropout"),
    (["--lr", "nan"], "--lr"),
    (["--label-smoothing", "-0.1"], "--label-smoothing"),
    (["--out", "{tmp}/file/sub"], "--out"),
    (["--out", "{tmp}/file"], "--out"),
    (["--out", "/proc/nnscratch-test/run"], "--out"),
    (["--device", "cuda"], "--device cuda"),
    (["--optimizer", "adam", "--momentum", "0.9"], "--momentum does not apply to --optimizer adam"),
    (["--optimizer", "sgd", "--nesterov"], "--nesterov"),
    (["--optimizer", "adam", "--betas", "0.9", "1.0"], "--betas"),
    (["--momentum", "-0.5"], "--momentum"),
    (["--lr-schedule", "cyclic"], "--max-lr"),
    (["--lr-schedule", "step", "--t-max", "3"], "--t-max does not apply"),
    (["--lr-schedule", "plateau", "--lr-schedule-unit", "step"], "plateau"),
    (["--early-stopping", "0"], "--early-stopping"),
    (["--clip-grad-norm", "0"], "--clip-grad-norm"),
    (["--l2", "-1"], "--l2"),
])
def test_cli_config_and_flag_errors_are_one_line_and_write_nothing(tmp_path, args, words):
    if "cuda" in args:
        skip_where_cuda_may_exist()
    (tmp_path / "bad.toml").write_text("learning_rate = 0.1\n")
    (tmp_path / "file").write_text("I am a file, not a folder")
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "run")]
    proc = run_cli(["compare", *args, *out, "--quiet"], cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert words in assert_one_line_error(proc.stderr, proc.stdout)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run folder, nothing written


@pytest.mark.parametrize("settings", [
    {},
    {"optimizer": "adam", "betas": (0.9, 0.99), "amsgrad": True, "lr_schedule": "multistep",
     "lr_milestones": (10, 15), "lr_schedule_unit": "step"},
    {"color": "rgb", "image_size": "14x14", "standardize": True, "val_size": 5000, "train_subset": 100},
    {"hidden": (64, 32), "batch_norm": True, "dropout": 0.3, "activation": "gelu_tanh", "l2": 1e-4,
     "clip_grad_norm": 2.0, "early_stopping": 3, "optimizer": "sgd", "momentum": 0.9, "nesterov": True},
])
def test_the_echoed_settings_are_a_command_line_that_gives_them_back(settings):
    """What a run prints first (RunConfig.describe) parses back into the very same settings."""
    from nnscratch.cli.main import _config_from, build_parser

    cfg = RunConfig(**settings)
    args = build_parser().parse_args(["compare", *cfg.describe().split()])
    assert _config_from(args, cfg.engines) == cfg


def test_onecycle_shorter_than_the_run_is_refused_before_training():
    with pytest.raises(UsageError, match="--total-steps 10 is shorter"):
        RunConfig(lr_schedule="onecycle", total_steps=10).make_schedule(steps_per_epoch=100)
    RunConfig(lr_schedule="onecycle", total_steps=2000, epochs=20).make_schedule(steps_per_epoch=100)


@pytest.mark.parametrize("key", ["out", "quiet", "config"])
def test_command_line_options_in_a_config_file_are_named_as_such(tmp_path, key):
    path = _write(tmp_path, f'{key} = "x"\n')
    with pytest.raises(UsageError, match=f"{key} is a command-line option"):
        read_config_file(path)


def test_onecycle_total_steps_is_checked_against_the_real_run_not_at_parse_time():
    cfg = RunConfig(lr_schedule="onecycle", total_steps=50, epochs=3)  # 3 epochs of 5 steps: fine
    cfg.make_schedule(steps_per_epoch=5)
    with pytest.raises(UsageError, match="--total-steps 50 is shorter"):
        cfg.make_schedule(steps_per_epoch=100)
