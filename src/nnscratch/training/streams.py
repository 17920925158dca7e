"""The run's random numbers: every draw a pure function of ``(seed, stream, epoch, step)``.

Nothing in a run is random except what is drawn here, and nothing here depends on what was drawn
before. Each stream has a number, and a draw is keyed by it::

    np.random.SeedSequence(seed, spawn_key=(STREAM, epoch, step))   ->  a fresh generator

So the dropout masks of step 7 of epoch 3 can be had directly: by a resumed run, by a thread that
prepares batches ahead, by one process of a data-parallel run, without replaying steps 0..6.
Torch's random stream is never used for parity: what must be random in both twins is drawn once,
here, in NumPy, and handed to both.

==========  ======  ==========================================================================
stream      number  what it keys
==========  ======  ==========================================================================
init        0       the initial weights, ``SeedSequence(seed, spawn_key=(0,))``
order       1       the batch order: epoch ``e``'s permutation, a function of ``(seed, e)``
dropout     2       step ``(e, s)``'s dropout masks, ``SeedSequence(seed, spawn_key=(2, e, s))``
augment     3       step ``(e, s)``'s augmentation, ``SeedSequence(seed, spawn_key=(3, e, s))``
smoothgrad  4       ``nnscratch inspect``'s SmoothGrad noise for test image ``i``: ``(seed, 4, i)``
==========  ======  ==========================================================================

``init`` and ``order`` are the streams the seed project's runs have always used
(``SeedSequence(seed).spawn(3)[0]`` *is* ``spawn_key=(0,)``), so its published results stand.
The batch order keeps its one sequential generator for the same reason: epoch ``e``'s order is the
``e``-th permutation it draws, still a pure function of ``(seed, e)``; :class:`EpochOrders` replays
the ``e`` permutations before it when asked out of turn (0.4 ms each for 50,000 images).
Epochs and steps in keys count from 0.
"""

from __future__ import annotations

import numpy as np

STREAM_INIT, STREAM_ORDER, STREAM_DROPOUT, STREAM_AUGMENT = 0, 1, 2, 3
STREAM_SMOOTHGRAD = 4  # not a training stream: the noise of analysis.inspect.smoothgrad

def stream_seed(seed: int, stream: int, *key: int) -> np.random.SeedSequence:
    """The ``SeedSequence`` of one keyed draw: ``(seed, stream, *key)``."""
    return np.random.SeedSequence(seed, spawn_key=(stream, *key))


def init_rng(seed: int) -> np.random.Generator:
    """The generator of the initial weights."""
    return np.random.default_rng(stream_seed(seed, STREAM_INIT))


class EpochOrders:
    """Epoch ``e``'s sample order (a permutation of ``n``), a function of ``(seed, e)`` only.

    Asked in turn (0, 1, 2, ...), each call draws one permutation; asked out of turn (a resumed
    run starts at epoch ``k``), the generator is started again and replays what comes before.
    """

    def __init__(self, seed: int, n: int) -> None:
        self.seed, self.n = seed, int(n)
        self._restart()

    def _restart(self) -> None:
        self._rng = np.random.default_rng(stream_seed(self.seed, STREAM_ORDER))
        self._next = 0

    def order(self, epoch: int) -> np.ndarray:
        """The permutation of epoch ``epoch`` (0-based)."""
        if epoch < self._next:
            self._restart()
        while self._next < epoch:
            self._rng.permutation(self.n)
            self._next += 1
        self._next += 1
        return self._rng.permutation(self.n)


def dropout_keeps(seed: int, epoch: int, step: int, layers: list[tuple[int, int, float]],
                  n: int) -> dict[int, np.ndarray]:
    """Step ``(epoch, step)``'s ``keep`` masks: ``{layer index: bool (n, width)}``.

    Each unit is kept with probability ``1 - p``; ``layers`` lists ``(index, width, p)`` of the
    model's dropout layers in order, drawn one after the other from the step's own generator.
    """
    rng = np.random.default_rng(stream_seed(seed, STREAM_DROPOUT, epoch, step))
    return {i: rng.random((n, width)) >= p for i, width, p in layers}
