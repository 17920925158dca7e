"""Ctrl-C and SIGTERM during training: finish the step in flight, checkpoint, stop.

While :func:`stop_on_signals` holds, the first SIGINT or SIGTERM only asks the trainer to stop
(:meth:`~nnscratch.training.trainer.Trainer.request_stop`): the step in flight finishes, the
trainer writes its checkpoint and raises :class:`~nnscratch.training.trainer.RunInterrupted`.
A second signal stops at once (``KeyboardInterrupt``, or :class:`~nnscratch.errors.Terminated`
for SIGTERM); every checkpoint is written atomically, so the previous one stays valid.
Outside the main thread (where Python delivers no signals) it does nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from nnscratch.errors import Terminated

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Remembers a Ctrl-C/SIGTERM for a whole run, across the trainers it runs one after the other
    (a comparison trains the NumPy engine and the twin epoch by epoch in turn):
    the one training now (``trainer``) hears it at once,
    and a request that came between two (while an engine was measured) is still there after."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.trainer = None

    def request_stop(self, signum: int) -> None:
        self.signum = signum
        if self.trainer is not None:
            self.trainer.request_stop(signum)


@contextlib.contextmanager
def stop_on_signals(trainer):
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    asked = []

    def handler(signum, frame):
        if asked:  # the second one: stop now
            raise KeyboardInterrupt if signum == signal.SIGINT else Terminated()
        asked.append(signum)
        trainer.request_stop(signum)

    previous = {s: signal.signal(s, handler) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
