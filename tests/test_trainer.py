"""The Trainer: its events in order, sinks, keyed random streams, and the schedule wiring that the
rest of the suite did not pin (every step's rate against torch's schedulers stepped as torch users
step them)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import optional_import
from nnscratch.engines import make_engine
from nnscratch.model.registry import dropout_layers, initial_state
from nnscratch.model.spec import mlp_spec
from nnscratch.run.config import RunConfig
from nnscratch.training.early_stopping import EarlyStopping
from nnscratch.training.loop import ScheduleCursor
from nnscratch.training.sinks import JsonlWriter, read_jsonl
from nnscratch.training.streams import EpochOrders, dropout_keeps, init_rng
from nnscratch.training.trainer import Trainer

N, D, C, BATCH = 300, 12, 4, 32
SPEC = mlp_spec(input_dim=D, hidden=(10,), num_classes=C, dropout=0.3)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D))
    y = (x[:, :C].argmax(axis=1)).astype(np.int64)
    return (x[:200], y[:200]), (x[200:], y[200:])


class _Recorder:
    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)


class _MaskSpy:
    """An engine wrapper that records the masks each step got."""

    def __init__(self, engine):
        self.engine, self.masks = engine, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def train_step(self, x, y, lr, masks=None):
        self.masks.append({k: v.copy() for k, v in masks.items()})
        self.engine.train_step(x, y, lr, masks)


def _trainer(engine, sinks=(), epochs=2, **kw):
    train, val = _data()
    return Trainer(engine, train, val, seed=7, epochs=epochs, batch_size=BATCH, num_classes=C, schedule=0.1,
                   dropout=dropout_layers(SPEC), sinks=sinks, **kw)


def _engine(name="numpy", spec=SPEC, **options):
    return make_engine(name, spec, initial_state(spec, init_rng(0)), np.float64, device="cpu", **options)


def test_events_arrive_in_order_with_every_step_once():
    rec = _Recorder()
    history = _trainer(_engine(), [rec]).run()
    kinds = [e.kind for e in rec.events]
    steps_per_epoch = -(-200 // BATCH)
    epoch = ["step_end"] * steps_per_epoch + ["evaluation", "epoch_end"]
    assert kinds == ["run_start"] + epoch * 2 + ["run_end"]
    steps = [e for e in rec.events if e.kind == "step_end"]
    assert [e.step for e in steps] == list(range(1, 2 * steps_per_epoch + 1))
    assert [e.epoch for e in steps] == [1] * steps_per_epoch + [2] * steps_per_epoch
    assert [e.loss for e in steps] == history.step_loss
    assert [e.batch_size for e in steps[:steps_per_epoch]] == [BATCH] * (steps_per_epoch - 1) + [200 % BATCH]
    assert rec.events[-1].reason == "finished" and rec.events[-1].steps == 2 * steps_per_epoch
    assert [e.record["epoch"] for e in rec.events if e.kind == "epoch_end"] == [1, 2]


def test_losses_are_drained_in_blocks_not_per_step():
    """The engine is read once per block of steps (a device engine syncs once per block)."""
    engine = _engine()
    reads = []
    real = engine.take_epoch_stats
    engine.take_epoch_stats = lambda: reads.append(1) or real()
    _trainer(engine, epochs=1, loss_block=3).run()
    assert len(reads) == -(-7 // 3)  # 7 steps in blocks of 3: 3 reads


def test_a_sink_that_raises_stops_the_run_and_the_others_hear_why():
    rec = _Recorder()

    def failing(event):
        if event.kind == "epoch_end":
            raise RuntimeError("the dashboard is gone")

    engine = _engine()
    with pytest.raises(RuntimeError, match="dashboard"):
        _trainer(engine, [failing, rec], epochs=3).run()
    assert engine.steps == 7  # the first epoch was done, no step of the second ran
    assert rec.events[-1].kind == "run_end" and rec.events[-1].reason == "error"


def test_keyed_masks_are_drawn_directly_and_are_the_ones_the_run_used():
    spy = _MaskSpy(_engine())
    _trainer(spy, epochs=2).run()
    steps_per_epoch = 7
    layers = dropout_layers(SPEC)
    # step 5 of epoch 1 without drawing anything before it
    direct = dropout_keeps(7, 1, 5, layers, BATCH)
    used = spy.masks[steps_per_epoch + 5]
    assert direct.keys() == used.keys()
    for k in direct:
        np.testing.assert_array_equal(direct[k], used[k])
    # every step's masks differ from the others (the keys are distinct)
    (k,) = direct
    assert not np.array_equal(spy.masks[0][k], spy.masks[1][k])
    assert not np.array_equal(spy.masks[0][k], spy.masks[steps_per_epoch][k])


def test_epoch_orders_are_a_function_of_seed_and_epoch():
    a, b = EpochOrders(3, 50), EpochOrders(3, 50)
    first = [a.order(e) for e in range(4)]
    np.testing.assert_array_equal(b.order(3), first[3])
    np.testing.assert_array_equal(b.order(0), first[0])
    assert all(sorted(o) == list(range(50)) for o in first)
    assert not np.array_equal(first[0], first[1])


def test_state_then_load_state_continues_bit_for_bit():
    """A trainer stopped mid-epoch (state taken there) and a fresh one loaded with it end equal."""
    es = lambda: EarlyStopping(5)  # noqa: E731
    full = _trainer(_engine(optimizer="adam", optimizer_options={}), early_stopping=es(), epochs=3)
    full_history = full.run()

    first = _trainer(_engine(optimizer="adam", optimizer_options={}), early_stopping=es(), epochs=3, loss_block=1)
    first.sinks.append(lambda e: e.kind == "step_end" and e.step == 10 and first.request_stop(2))
    from nnscratch.errors import RunInterrupted

    with pytest.raises(RunInterrupted):
        first.run()  # stops after step 10: the 3rd of epoch 2
    assert first.engine.steps == 10 and first.epoch == 1 and first.step_in_epoch == 3
    tensors, meta = first.state()
    second = _trainer(_engine(optimizer="adam", optimizer_options={}), early_stopping=es(), epochs=3)
    second.load_state(tensors, meta)
    history = second.run()
    assert history.step_loss == full_history.step_loss
    assert [r.val_loss for r in history.epochs] == [r.val_loss for r in full_history.epochs]
    for k, v in full.engine.state().items():
        np.testing.assert_array_equal(second.engine.state()[k], v, err_msg=k)


def test_jsonl_follows_the_run_and_its_reader_tolerates_a_cut_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    history = _trainer(_engine(), [JsonlWriter(path)]).run()
    events = list(read_jsonl(path))
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end" and kinds.count("epoch_end") == 2
    losses = [v for e in events if e["kind"] == "steps" for v in e["loss"]]
    assert losses == history.step_loss
    # a writer caught mid-line: the complete lines are read, the unfinished one is not
    data = path.read_bytes()
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(data[: len(data) - 25])
    partial = list(read_jsonl(cut))
    assert partial == events[:-1]
    cut.write_bytes(data[: len(data) - 25] + b"\x00garbage\n" + data[len(data) - 25:])
    assert [e["kind"] for e in read_jsonl(cut)][-1] != "run_end"  # the damaged line is skipped, no error


def test_second_signal_stops_at_once():
    import signal

    from nnscratch.training.interrupts import stop_on_signals

    class T:
        asked = None

        def request_stop(self, signum):
            self.asked = signum

    t = T()
    with stop_on_signals(t):
        handler = signal.getsignal(signal.SIGINT)
        handler(signal.SIGINT, None)
        assert t.asked == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, None)
    assert signal.getsignal(signal.SIGINT) is not handler  # put back


# ----------------------------------------------------------------- the schedule wiring, against torch


def _torch_rates(cfg: RunConfig, steps_per_epoch: int, val_losses: list[float]) -> list[float]:
    """Every step's rate as a torch user gets it: the scheduler stepped after each epoch
    (``scheduler.step(val_loss)`` for plateau), the rate read from ``param_groups`` before each step."""
    torch = optional_import("torch")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=cfg.lr)
    if cfg.lr_schedule == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step_size, gamma=cfg.lr_gamma)
    else:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.plateau_factor,
                                                           patience=cfg.plateau_patience)
    rates = []
    for epoch in range(cfg.epochs):
        for _ in range(steps_per_epoch):
            rates.append(opt.param_groups[0]["lr"])
            opt.step()  # no gradient: changes nothing, but torch's schedulers expect it before theirs
        if cfg.lr_schedule == "plateau":
            sched.step(val_losses[epoch])
        else:
            sched.step()
    return rates


@pytest.mark.parametrize("cfg", [
    RunConfig(epochs=6, lr=0.2, lr_schedule="step", lr_step_size=2, lr_gamma=0.5),
    RunConfig(epochs=8, lr=0.5, lr_schedule="plateau", plateau_factor=0.5, plateau_patience=0),
], ids=["step-per-epoch", "plateau"])
def test_every_steps_rate_equals_torchs_scheduler_stepped_per_epoch(cfg):
    assert cfg.schedule_unit() == "epoch"
    train, val = _data()
    steps_per_epoch = -(-200 // BATCH)
    cursor = ScheduleCursor(cfg.make_schedule(steps_per_epoch), cfg.schedule_unit())
    spec = mlp_spec(input_dim=D, hidden=(10,), num_classes=C)
    trainer = Trainer(_engine(spec=spec), train, val, seed=0, epochs=cfg.epochs, batch_size=BATCH, num_classes=C,
                      schedule=cursor)
    history = trainer.run()
    expected = _torch_rates(cfg, steps_per_epoch, [r.val_loss for r in history.epochs])
    assert history.step_lr == pytest.approx(expected, rel=1e-15, abs=0)
    assert len(set(history.step_lr)) > 1  # the schedule did change the rate


@pytest.mark.parametrize("at_step, position", [(7, (1, 0)), (3, (0, 3))])
def test_a_stop_at_any_step_leaves_a_checkpoint_that_reads_back(tmp_path, at_step, position):
    """Asked at the epoch's last step, the stop waits for the epoch's end (the position is then
    the next epoch's start); asked inside it, it comes after the step. Either checkpoint is whole."""
    from nnscratch.errors import RunInterrupted
    from nnscratch.files.checkpoint import CheckpointWriter, read_checkpoint, run_meta

    writer = CheckpointWriter(tmp_path, run_meta(SPEC, {"engines": ["numpy"]}, {}))
    trainer = _trainer(_engine(), epochs=3, loss_block=1, checkpoints=writer)
    trainer.sinks.append(lambda e: e.kind == "step_end" and e.step == at_step and trainer.request_stop(2))
    with pytest.raises(RunInterrupted) as stop:
        trainer.run()
    ck = read_checkpoint(stop.value.checkpoint)
    assert (ck.trainer["epoch"], ck.trainer["step_in_epoch"]) == position
