"""A network too large for the machine is refused in one line before anything is allocated
(:mod:`nnscratch.model.footprint`), by every command that builds one: each run here in a child
whose memory is capped 1 GiB above its baseline, so a regression is a MemoryError, not a swap storm."""

from __future__ import annotations

import pytest

from helpers import assert_one_line_error
from memcap import run_cli_capped
from nnscratch.errors import UsageError
from nnscratch.model.footprint import check_memory, parameter_count, physical_memory, training_bytes
from nnscratch.model.spec import mlp_spec


def test_the_lower_bound_counts_parameters_gradients_moments_and_activations():
    spec = mlp_spec(784, (100, 50), 10, batch_norm=True)
    # dense 784->100 without bias (batch norm has one), batch norm (weight, bias, running mean and var,
    # the batch count), dense 100->50, batch norm, dense 50->10 with its bias
    params = 784 * 100 + (4 * 100 + 1) + 100 * 50 + (4 * 50 + 1) + (50 * 10 + 10)
    assert parameter_count(spec) == params
    width = 784 + sum(out for _, _, _, out in spec.walk())
    assert training_bytes(spec, 4, 32, engines=2) == 2 * (4 * params + 3 * 32 * width) * 4


def test_a_network_that_fits_passes_and_one_that_cannot_is_one_line():
    check_memory(mlp_spec(784, (1024, 1024), 10), 8, 1024, 2, fix="x")  # best.toml's size: far below any machine
    if physical_memory() is None:
        pytest.skip("this platform does not say how much memory it has")
    with pytest.raises(UsageError) as exc:
        check_memory(mlp_spec(784, (10**9,), 10), 4, 64, fix="choose smaller --hidden layers")
    message = str(exc.value)
    assert "\n" not in message and "784-1000000000-10" in message and "795,000,000,010 parameters" in message
    assert message.endswith("of memory; choose smaller --hidden layers")


@pytest.mark.parametrize("args, words", [
    (["train", "--hidden", "1000000000", "--epochs", "1", "--train-subset", "200"], "795,000,000,010 parameters"),
    (["compare", "--hidden", "100000", "100000", "--epochs", "1", "--train-subset", "200"], "for 2 engines"),
    (["train", "--config", "{tmp}/huge.toml", "--train-subset", "200"], "784-1000000000-10"),
    (["gradcheck", "--hidden", "1000000000"], "12-1000000000-4"),
    (["gradcheck", "--batch", "1000000000"], "batch 1,000,000,000"),
    (["bench", "--deep", "1000000000", "--train-subset", "200"], "(--deep)"),
    (["bench", "--peak-size", "1000000", "--train-subset", "200"], "--peak-size 1,000,000"),
], ids=["train --hidden", "compare two wide layers", "a config's hidden", "gradcheck --hidden", "gradcheck --batch",
        "bench --deep", "bench --peak-size"])
def test_every_command_refuses_a_network_beyond_memory_in_one_line(tmp_path, args, words):
    if physical_memory() is None:
        pytest.skip("this platform does not say how much memory it has")
    (tmp_path / "huge.toml").write_text("hidden = [1000000000]\nepochs = 1\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = run_cli_capped([*args, "--out", str(tmp_path / "run")] if args[0] in ("train", "compare") else args,
                          cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = assert_one_line_error(proc.stderr, proc.stdout)
    assert words in line and ("memory" in line), line
    assert not (tmp_path / "run").exists()  # nothing left behind
