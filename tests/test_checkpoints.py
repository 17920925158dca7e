"""Checkpoints: bit-identical resume for both engines (after an epoch and from inside one), what a
checkpoint holds, loading it anywhere (evaluate, plain PyTorch), and every bad input: one line."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_one_line_error, cli_env, optional_import
from nnscratch import api
from nnscratch.errors import DataError, UsageError
from nnscratch.files.checkpoint import CHECKPOINT_PREFIXES, read_checkpoint

#: Point 6 of the issue: dropout, batch norm, Adam or SGD-momentum, a per-step schedule with
#: warm-up, early stopping on; float32, the default.
RUN = dict(train_subset=640, val_size=500, hidden=[24], dropout=0.2, batch_norm=True, lr_schedule="cosine",
           lr_schedule_unit="step", warmup_steps=4, early_stopping=5, checkpoint_every=1,
           checkpoint_every_steps=7, epochs=3)
OPTIMIZERS = {"adam": dict(optimizer="adam", lr=0.003), "sgd-momentum": dict(optimizer="sgd", lr=0.05, momentum=0.9)}


@pytest.fixture(scope="module")
def uninterrupted(mnist, tmp_path_factory):
    """One uninterrupted comparison per optimizer, every checkpoint kept."""
    runs = {}
    for name, options in OPTIMIZERS.items():
        out = tmp_path_factory.mktemp(name) / "run"
        runs[name] = (api.compare(out=out, data=mnist, **RUN, **options), out)
    return runs


def _assert_same_run(a, b):
    for engine in ("numpy", "torch"):
        ha, hb = a.history[engine], b.history[engine]
        assert ha["step_loss"] == hb["step_loss"], engine
        assert ha["step_lr"] == hb["step_lr"], engine
        for ra, rb in zip(ha["epochs"], hb["epochs"], strict=True):
            assert {k: v for k, v in ra.items() if k != "time_s"} == {k: v for k, v in rb.items() if k != "time_s"}
        assert ha["early_stopping"] == hb["early_stopping"]
        for k, v in a.models[engine].items():
            np.testing.assert_array_equal(b.models[engine][k], v, err_msg=f"{engine} {k}")
        assert a.test[engine] == b.test[engine]


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("start", ["epoch-1", "step-14"])  # after epoch 1; step 14 of 30 is inside epoch 2
def test_resumed_runs_are_bit_identical_to_the_uninterrupted_one(uninterrupted, mnist, tmp_path, optimizer, start):
    full, out = uninterrupted[optimizer]
    for engine in ("numpy", "torch"):  # the optimizer state and the position travel too
        ck = read_checkpoint(out / "checkpoints" / engine / f"{start}.safetensors")
        assert any(k.startswith("optimizer.") for k in ck.tensors)
        assert ck.trainer["step"] == (10 if start == "epoch-1" else 14)
    # resume both twins: the numpy engine from `start`, the torch engine too (copied beside it)
    folder = tmp_path / "ck"
    for engine in ("numpy", "torch"):
        (folder / engine).mkdir(parents=True)
        (folder / engine / "last.safetensors").write_bytes(
            (out / "checkpoints" / engine / f"{start}.safetensors").read_bytes())
    resumed = api.compare(resume=folder, out=tmp_path / "resumed", data=mnist)
    _assert_same_run(full, resumed)


def test_train_resumes_one_engine_from_its_file(uninterrupted, mnist, tmp_path):
    full, out = uninterrupted["adam"]
    with pytest.raises(UsageError, match="comes from a run of numpy and torch"):
        api.train(engine="numpy", resume=out / "checkpoints" / "numpy" / "epoch-1.safetensors", data=mnist)


def test_what_a_checkpoint_holds_and_plain_pytorch_loads_it(uninterrupted):
    torch = optional_import("torch")
    from safetensors.torch import load_file

    full, out = uninterrupted["adam"]
    path = out / "checkpoints" / "torch" / "last.safetensors"
    ck = read_checkpoint(path)
    assert ck.engine == "torch" and ck.config["optimizer"] == "adam" and ck.config["epochs"] == 3
    assert ck.trainer["epoch"] == 3 and ck.trainer["step_in_epoch"] == 0 and ck.trainer["finished"] == "finished"
    assert len(ck.tensors["trainer.step_loss"]) == 30
    assert {"optimizer.0.weight.exp_avg", "optimizer.0.weight.step", "engine.steps",
            "trainer.early_stopping.best_loss", "best.0.weight", "1.running_mean"} <= set(ck.tensors)
    state = load_file(str(path))
    model = torch.nn.Sequential(torch.nn.Linear(784, 24, bias=False), torch.nn.BatchNorm1d(24), torch.nn.ReLU(),
                                torch.nn.Dropout(0.2), torch.nn.Linear(24, 10))
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith(CHECKPOINT_PREFIXES)})
    # the last checkpoint holds the last epoch's weights (restore-best happens after it, if at all)
    np.testing.assert_array_equal(model[0].weight.detach().numpy(), ck.tensors["0.weight"])


def test_the_files_written_and_the_newest_k_kept(mnist, tmp_path):
    out = tmp_path / "run"
    api.train(engine="numpy", out=out, data=mnist, train_subset=320, epochs=3, hidden=[8],
              checkpoint_every=1, checkpoint_every_steps=2, keep_checkpoints=2)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["epoch-2.safetensors", "epoch-3.safetensors", "last.safetensors", "step-12.safetensors",
                     "step-14.safetensors"]
    out2 = tmp_path / "none"
    api.train(engine="numpy", out=out2, data=mnist, train_subset=320, epochs=1, hidden=[8], checkpoints=False)
    assert not (out2 / "checkpoints").exists()


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_evaluate_takes_a_checkpoint_with_either_engine(uninterrupted, tmp_path, mnist, engine):
    """float64 checkpoint, run by both engines: same argmax, probabilities within 1e-12."""
    from nnscratch.cli.main import main
    from nnscratch.engines import make_engine
    from nnscratch.files.checkpoint import load_model_or_checkpoint
    from nnscratch.training.metrics import softmax

    out = tmp_path / "run"
    run = api.train(engine=engine, out=out, data=mnist, train_subset=640, epochs=1, hidden=[16], batch_norm=True,
                    dtype="float64")
    state, spec, info = load_model_or_checkpoint(out / "checkpoints" / "last.safetensors")
    assert info["dtype"] == "float64" and info["engine"] == engine
    x = mnist.test_images[:500].reshape(500, -1).astype(np.float64) / 255.0
    probs = [softmax(make_engine(e, spec, state, np.float64, device="cpu").eval().predict_logits(x))
             for e in ("numpy", "torch")]
    assert np.array_equal(probs[0].argmax(1), probs[1].argmax(1))
    assert np.max(np.abs(probs[0] - probs[1])) < 1e-12
    report = tmp_path / "eval.json"
    other = "torch" if engine == "numpy" else "numpy"
    assert main(["evaluate", "--model", str(out / "checkpoints" / "last.safetensors"), "--engine", other,
                 "--data-dir", str(mnist.source), "--json", str(report)]) == 0
    # the other engine, from the checkpoint, gets the run's own test figures
    assert json.loads(report.read_text())["test"]["accuracy"] == run.test[engine]["accuracy"]


# ------------------------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def one_checkpoint(mnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    api.train(engine="numpy", out=out, data=mnist, train_subset=320, epochs=2, hidden=[8])
    return out / "checkpoints" / "last.safetensors"


def _damaged(src: Path, tmp_path: Path, how: str) -> Path:
    data = bytearray(src.read_bytes())
    length = int.from_bytes(data[:8], "little")
    if how == "truncated":
        data = data[: len(data) - 100]
    elif how == "flipped byte":
        data[-50] ^= 0x01
    elif how == "appended junk":
        data += b"junk" * 10
    elif how == "header not JSON":
        data[8:12] = b"\x00\x01\x02\x03"
    elif how == "header claims sizes beyond the file":
        data[:8] = (len(data) * 4).to_bytes(8, "little")
    elif how == "unknown version":
        header = json.loads(data[8:8 + length])
        header["__metadata__"]["version"] = "99"
        raw = json.dumps(header).encode()
        data = bytearray(len(raw).to_bytes(8, "little")) + raw + data[8 + length:]
    path = tmp_path / f"{how.replace(' ', '_')}.safetensors"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("how, message", [
    ("truncated", "do not cover|cut short|truncated|payload"),
    ("flipped byte", "damaged: its tensor data's SHA-256"),
    ("appended junk", "do not cover|junk|payload|bytes"),
    ("header not JSON", "not UTF-8 JSON|JSON"),
    ("header claims sizes beyond the file", "claims"),
    ("unknown version", "format version '99'"),
])
def test_a_damaged_checkpoint_is_refused_in_one_line(one_checkpoint, tmp_path, mnist, how, message):
    from nnscratch.cli.main import main
    import contextlib
    import io

    path = _damaged(one_checkpoint, tmp_path, how)
    with pytest.raises(DataError, match=message):
        read_checkpoint(path)
    err = io.StringIO()
    out = tmp_path / "out"
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", "--resume", str(path), "--out", str(out), "--data-dir", str(mnist.source)])
    assert code == 2
    assert_one_line_error(err.getvalue())
    assert not out.exists()


def test_not_a_checkpoint_and_contradicting_flags(one_checkpoint, tmp_path, mnist):
    model = one_checkpoint.parent.parent / "numpy_model.safetensors"
    with pytest.raises(DataError, match="not a checkpoint.*it is a model file"):
        read_checkpoint(model)
    with pytest.raises(UsageError, match=r"--hidden \[16\] \(the checkpoint has \[8\]\).*only --epochs"):
        api.train(engine="numpy", resume=one_checkpoint, hidden=[16], data=mnist)
    with pytest.raises(UsageError, match="lr 0.5"):
        api.train(engine="numpy", resume=one_checkpoint, lr=0.5, data=mnist)
    with pytest.raises(UsageError, match="a checkpoint of the numpy engine, not of torch"):
        api.train(engine="torch", resume=one_checkpoint, data=mnist)
    with pytest.raises(UsageError, match=r"has trained \(into\) 2 epochs; --epochs must be at least 2, got 1"):
        api.train(engine="numpy", resume=one_checkpoint, epochs=1, data=mnist)


def test_a_checkpoint_of_other_data_or_another_network_says_what_differs(one_checkpoint):
    from nnscratch.model.spec import mlp_spec
    from nnscratch.run.resume import check_fits

    ck = read_checkpoint(one_checkpoint)
    facts = {k: ck.data[k] for k in ("dataset", "train", "val", "input_dim", "class_names")}
    check_fits(ck, ck.spec, facts)  # fits itself
    with pytest.raises(DataError, match="trained on other data: dataset 'mnist' in the checkpoint, 'fashion-mnist'"):
        check_fits(ck, ck.spec, {**facts, "dataset": "fashion-mnist"})
    with pytest.raises(DataError, match="its network is 784-8-10.*this run's is 784-9-10"):
        check_fits(ck, mlp_spec(hidden=(9,)), facts)


def test_a_disk_that_fills_during_a_save_keeps_the_previous_checkpoint(mnist, tmp_path, monkeypatch):
    from nnscratch.files.checkpoint import CheckpointWriteError

    out = tmp_path / "run"
    calls = []
    import safetensors.numpy as stn

    real_save = stn.save_file

    def filling(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 3:  # the third checkpoint: epoch 3's
            with open(filename, "wb") as f:
                f.write(b"half")
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(stn, "save_file", filling)
    with pytest.raises(CheckpointWriteError, match="No space left on device.*the previous checkpoint is intact"):
        api.train(engine="numpy", out=out, data=mnist, train_subset=320, epochs=4, hidden=[8])
    ck = read_checkpoint(out / "checkpoints" / "last.safetensors")  # epoch 2's, whole
    assert ck.trainer["epoch"] == 2
    assert not [p for p in (out / "checkpoints").iterdir() if p.name != "last.safetensors"]


# ------------------------------------------------------------------------ Ctrl-C, in a real process


def test_ctrl_c_mid_epoch_checkpoints_says_how_to_resume_and_the_resumed_run_is_identical(mnist, tmp_path):
    """``kill -INT`` a training process mid-epoch: it finishes the step, writes the checkpoint,
    prints the resume command (exit 130); running that command gives the uninterrupted run."""
    args = ["train", "--train-subset", "30000", "--epochs", "2", "--hidden", "256", "--dropout", "0.1",
            "--optimizer", "adam", "--lr", "0.001", "--lr-schedule", "cosine", "--lr-schedule-unit", "step",
            "--warmup-steps", "20", "--quiet", "--data-dir", str(mnist.source)]   # float32: bit for bit too
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "nnscratch", *args, "--out", str(cut)], cwd=tmp_path,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # the run says where it writes its events while it trains
        if line.startswith("  live: "):
            jsonl = Path(line.split()[1])
            break
    assert jsonl.parent.parent == tmp_path and jsonl.parent.name.startswith(".cut.")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:  # until the first step losses are out
        if jsonl.exists() and b'"steps"' in jsonl.read_bytes():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    assert last.startswith("nnscratch: interrupted: numpy checkpoint written to ") and "Traceback" not in stderr
    command = last.split("resume with: ", 1)[1]
    assert command.startswith("nnscratch train --engine numpy --resume ")
    ck = read_checkpoint(cut / "checkpoints" / "last.safetensors")
    assert 0 < ck.trainer["step"] < 2 * 469  # somewhere before the end (469 steps per epoch)
    resumed = subprocess.run([sys.executable, "-m", "nnscratch", *command.split()[1:], "--quiet",
                              "--data-dir", str(mnist.source)], cwd=tmp_path, env=cli_env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    whole = tmp_path / "whole"
    done = subprocess.run([sys.executable, "-m", "nnscratch", *args, "--out", str(whole)], cwd=tmp_path,
                          env=cli_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    a, b = (json.loads((d / "metrics.json").read_text())["engines"]["numpy"] for d in (whole, cut))
    assert a["step_loss"] == b["step_loss"] and a["step_lr"] == b["step_lr"]
    assert [dict(r, time_s=0) for r in a["history"]] == [dict(r, time_s=0) for r in b["history"]]
    from safetensors.numpy import load_file

    wa, wb = (load_file(str(d / "numpy_model.safetensors")) for d in (whole, cut))
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_weight_files_written_before_checkpoints_still_load(tmp_path):
    """A model file exactly as ``compare`` wrote it before this change (format nnscratch-model/2, no
    digest) loads, through the loader that also takes checkpoints, into both engines."""
    from safetensors.numpy import save_file

    from nnscratch.engines import make_engine
    from nnscratch.files.checkpoint import load_model_or_checkpoint
    from nnscratch.model.registry import initial_state
    from nnscratch.model.spec import mlp_spec
    from nnscratch.training.streams import init_rng

    spec = mlp_spec(hidden=(12,), batch_norm=True)
    state = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in initial_state(spec, init_rng(3)).items()}
    info = {"engine": "torch", "dtype": "float32", "dataset": "mnist", "epochs": 2, "seed": 3,
            "data_options": {"verify": True, "val_size": None, "seed": 3, "image_size": None, "color": None,
                             "strict": False, "label_column": None, "image_shape": None}, "standardization": None}
    path = tmp_path / "torch_model.safetensors"
    save_file(state, str(path), metadata={"format": "nnscratch-model/2", "spec": spec.to_json(),
                                          "info": json.dumps(info, sort_keys=True)})
    loaded, loaded_spec, loaded_info = load_model_or_checkpoint(path)
    assert loaded_spec.to_json() == spec.to_json() and loaded_info == info
    for k, v in state.items():
        np.testing.assert_array_equal(loaded[k], v)
    x = np.random.default_rng(0).random((5, 784))
    a, b = (make_engine(e, spec, loaded, np.float64, device="cpu").eval().predict_logits(x) for e in ("numpy", "torch"))
    np.testing.assert_allclose(a, b, rtol=1e-12)


# ------------------------------------------------------------------- lies and edge cases (review)


DEEP = "[" * 100_000 + "]" * 100_000  #: 200 KB of JSON nested deeper than Python's parser recurses


def _rewrite(src: Path, dst: Path, change) -> Path:
    """``src`` with its metadata changed by ``change(meta)``; ``rehash`` keeps the metadata digest
    consistent (a deliberate forgery), else the file is a damaged one."""
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(src), framework="numpy") as f:
        meta = dict(f.metadata())
    rehash = change(meta)
    if rehash:
        from nnscratch.files.checkpoint import metadata_sha256

        meta["metadata_sha256"] = metadata_sha256(meta)
    save_file(load_file(str(src)), str(dst), metadata=meta)
    return dst


def _trainer_meta(**changes):
    def change(meta):
        trainer = json.loads(meta["trainer"])
        trainer.update(changes)
        meta["trainer"] = json.dumps(trainer)
        return True
    return change


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(config=m["config"].replace('"lr": 0.01', '"lr": 0.07')) or False, "metadata .* does not match"),
    (_trainer_meta(step_in_epoch=999), "does not give step"),
    (_trainer_meta(epoch=-1), "epoch must be a whole number >= 0"),
    (_trainer_meta(step_in_epoch=True), "step_in_epoch must be a whole number"),
    (_trainer_meta(finished="banana"), "finished must be one of"),
    (_trainer_meta(history="x"), "history must hold"),
    (_trainer_meta(step=10**12, epoch=10**12), "does not give step|within"),
    (lambda m: m.update(trainer=DEEP) or True, "metadata is damaged .*nested deeper than"),
    (lambda m: m.update(spec=DEEP) or True, "nested deeper than"),
])
def test_a_checkpoint_whose_metadata_lies_is_refused(one_checkpoint, tmp_path, change, message):
    path = _rewrite(one_checkpoint, tmp_path / "lie.safetensors", change)
    with pytest.raises(DataError, match=message):
        read_checkpoint(path)


def test_a_checkpoint_whose_settings_claim_a_huge_network_is_refused_before_it_is_built(one_checkpoint, tmp_path):
    """Its settings say hidden [10**9], its spec 8 units: the two are compared before the settings'
    network is allocated (in a child capped 1 GiB above its baseline)."""
    from memcap import run_cli_capped

    def huge(meta):
        config = json.loads(meta["config"])
        config["hidden"] = [10**9]
        meta["config"] = json.dumps(config)
        return True
    lie = _rewrite(one_checkpoint, tmp_path / "lie.safetensors", huge)
    proc = run_cli_capped(["train", "--resume", str(lie), "--out", str(tmp_path / "run")], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = assert_one_line_error(proc.stderr, proc.stdout)
    assert "its network is 784-8-10" in line and "784-1000000000-10" in line, line


def test_a_sibling_nested_too_deep_is_not_taken_for_an_earlier_checkpoint(one_checkpoint, tmp_path):
    """Resume copies the checkpoints written before the one it starts from; a sibling whose trainer
    metadata would crash Python's parser is simply not one of them."""
    from nnscratch.run.resume import _not_after

    assert _not_after(one_checkpoint, 10**9)
    assert not _not_after(_rewrite(one_checkpoint, tmp_path / "deep.safetensors",
                                   lambda m: m.update(trainer=DEEP) or True), 10**9)


def test_a_checkpoint_without_its_optimizer_state_is_refused(mnist, tmp_path):
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open

    from nnscratch.files.checkpoint import metadata_sha256
    from nnscratch.files.safetensors_file import payload_sha256_of

    out = tmp_path / "adam"
    api.train(engine="numpy", out=out, data=mnist, train_subset=320, epochs=1, hidden=[8], optimizer="adam",
              lr=1e-3)
    src = out / "checkpoints" / "last.safetensors"
    with safe_open(str(src), framework="numpy") as f:
        meta = dict(f.metadata())
    tensors = {k: v for k, v in load_file(str(src)).items() if not k.startswith("optimizer.")}
    meta["payload_sha256"] = payload_sha256_of(tensors)
    meta["metadata_sha256"] = metadata_sha256(meta)
    save_file(tensors, str(tmp_path / "noopt.safetensors"), metadata=meta)
    with pytest.raises(DataError, match="holds no Adam state"):
        api.train(engine="numpy", resume=tmp_path / "noopt.safetensors", epochs=2, data=mnist)


def test_resuming_into_the_same_folder_keeps_the_checkpoints_and_the_log(mnist, tmp_path):
    out = tmp_path / "run"
    options = dict(train_subset=320, hidden=[8], checkpoint_every=1, early_stopping=3)
    api.train(engine="numpy", out=out, data=mnist, epochs=2, **options)
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert before == ["best.safetensors", "epoch-1.safetensors", "epoch-2.safetensors", "last.safetensors"]
    from nnscratch.training.sinks import follow_jsonl, read_jsonl

    lines = len(list(read_jsonl(out / "metrics.jsonl")))
    api.train(engine="numpy", resume=out, epochs=3, out=out, overwrite=True, data=mnist)
    after = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert set(before) | {"epoch-3.safetensors"} <= set(after)
    events = list(read_jsonl(out / "metrics.jsonl"))
    assert len(events) > lines and [e["kind"] for e in events].count("run_start") == 2
    first, offset = follow_jsonl(out / "metrics.jsonl")
    assert first == events and follow_jsonl(out / "metrics.jsonl", offset) == ([], offset)


def test_a_run_cannot_be_shortened_to_inside_an_epoch_it_began(uninterrupted, mnist, tmp_path):
    full, out = uninterrupted["adam"]
    with pytest.raises(UsageError, match=r"into\) 2 epochs; --epochs must be at least 2"):
        api.compare(resume=out / "checkpoints" / "numpy" / "step-14.safetensors", epochs=1, data=mnist)


def test_a_comparison_resumes_from_a_numbered_file_of_either_twin(uninterrupted, mnist, tmp_path):
    full, out = uninterrupted["sgd-momentum"]
    resumed = api.compare(resume=out / "checkpoints" / "torch" / "epoch-1.safetensors", out=tmp_path / "r",
                          data=mnist)
    _assert_same_run(full, resumed)


def test_the_newest_numbered_checkpoint_stands_in_for_a_missing_last(uninterrupted, tmp_path):
    from nnscratch.files.checkpoint import find_checkpoint

    full, out = uninterrupted["adam"]
    folder = tmp_path / "ck" / "numpy"
    folder.mkdir(parents=True)
    for name in ("step-7.safetensors", "step-14.safetensors"):
        (folder / name).write_bytes((out / "checkpoints" / "numpy" / name).read_bytes())
    assert find_checkpoint(tmp_path / "ck", "numpy", ("numpy", "torch")).name == "step-14.safetensors"
    assert find_checkpoint(tmp_path / "ck", "torch", ("numpy", "torch")) is None


def test_ctrl_c_between_the_twins_stops_before_the_twin_starts(mnist, tmp_path):
    """A Ctrl-C that comes as the NumPy engine's last epoch ends (no step left to stop after) is not
    lost: the twin does not start, the run is kept as interrupted, and resuming finishes it."""
    import os

    from nnscratch.errors import RunInterrupted

    out = tmp_path / "run"
    options = dict(train_subset=320, hidden=[8], epochs=1)
    ctrl_c = lambda engine, record: engine == "numpy" and os.kill(os.getpid(), signal.SIGINT)  # noqa: E731
    with pytest.raises(RunInterrupted) as stop:
        api.compare(out=out, data=mnist, on_epoch=ctrl_c, **options)
    assert stop.value.engine == "numpy" and stop.value.command == f"nnscratch compare --resume {out} --out {out}"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["numpy"]
    resumed = api.compare(resume=out, out=out, data=mnist)
    whole = api.compare(data=mnist, **options)
    _assert_same_run(whole, resumed)
