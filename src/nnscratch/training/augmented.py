"""Augmented training batches: keyed, prepared ahead in a thread, computed once for every engine.

**Keyed.** Batch ``s`` of epoch ``e`` is a pure function of the run's seed, ``(e, s)`` and the
batch's pixel rows (:meth:`AugmentedBatches.batch`)::

    rng = default_rng(SeedSequence(seed, spawn_key=(3, e, s)))     # stream 3: augment
    batch = augmentation.apply(pixels[order(e)[s*B:(s+1)*B]] as (b, H, W, C) images, rng)

so a resumed run gets the batches it would have had, a thread can prepare them ahead, and the
engines of a comparison get the very same bytes.

**Ahead, where it pays.** :meth:`AugmentedBatches.epoch` can run a :class:`Prefetcher`: one
background thread that augments the epoch's batches in order into a bounded queue (``depth``
batches ahead) while the engine trains on the ones before, the engines keeping one BLAS thread
fewer meanwhile. It stops when the epoch's ``with`` block ends, however it ends (the epoch done,
Ctrl-C's stop after a step, an engine or sink that raised): the thread is told to stop, the queue
drained so that it is not stuck on a full one, and joined. An exception in the thread is raised
in the training thread at the batch it could not make. With ``prefetch=0`` the batches are made
in the training thread, :data:`BLOCK_BATCHES` at a time when a step asks for the first of them
(one warp for all their images: less time than one by one; the same bytes). A run chooses with
:func:`prefetch_plan`: on two cores or fewer the batches are made in the training thread, since
there the thread did not pay (docs/augmentation.md#cost has the measurements).

**Once.** With ``share=True`` (a comparison) the epoch's augmented pixels are kept in one
``(N, D)`` uint8 array, the *epoch memo* (47 MB for 60,000 MNIST images): the first engine's
epoch writes each batch into it (its thread, or, made in the training thread, all of them before
its clock starts, so that neither engine's time has them), and the next engine, trained on the same epoch right after
(:func:`~nnscratch.training.trainer.run_in_lockstep`), reads them from there. A batch not in the
memo (another epoch, or steps a resumed engine had done before) is computed again: the memo only
ever saves work, the numbers are the keyed ones either way.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Callable, Iterable, Iterator

import numpy as np

from nnscratch.data.augment import Augmentation, Draw, Warper
from nnscratch.threads import limited_threads
from nnscratch.training.streams import STREAM_AUGMENT, stream_seed

#: How many batches the producer thread may have ready ahead of the engine.
PREFETCH_DEPTH = 4
#: The name of the producer thread (what ``threading.enumerate()`` shows while it runs).
THREAD_NAME = "nnscratch-augment"


#: Made in the training thread, this many batches (at most, and at most :data:`BLOCK_ROWS` rows)
#: are augmented together, in one warp: on the seed network a little quicker than batch by batch
#: (the augmented epoch 1.36-1.50x the plain one against 1.54-1.65x; paired, 2-10 % less time;
#: 2-core AMD EPYC VM, its host busy: docs/augmentation.md#cost).
#: Each batch is still drawn from its own keyed generator: the same bytes.
BLOCK_BATCHES = 8
BLOCK_ROWS = 4096

#: The fewest CPU threads of a run with which a thread prepares the batches ahead (below: the
#: training thread makes them). On two cores, measured (docs/augmentation.md#cost), the thread gains
#: no more than the noise: beside it the engine keeps one BLAS thread, and one BLAS thread alone costs
#: the seed network's epoch about as much as making the batches in the training thread does.
PREFETCH_MIN_THREADS = 3


def prefetch_plan(threads: int | None) -> tuple[int, int | None]:
    """``(prefetch, engine_threads)`` for an augmented run of ``threads`` CPU threads (None: every
    usable core): with at least :data:`PREFETCH_MIN_THREADS`, a thread :data:`PREFETCH_DEPTH`
    batches ahead and the engines on one BLAS thread fewer, so that the thread has a core of its
    own; with fewer, ``(0, None)``: made in the training thread, the engines' threads unchanged."""
    from nnscratch.threads import thread_count

    n = thread_count(threads)
    if n < PREFETCH_MIN_THREADS:
        return 0, None
    return PREFETCH_DEPTH, n - 1


def augment_rng(seed: int, epoch: int, step: int) -> np.random.Generator:
    """The generator of step ``(epoch, step)``'s augmentation (stream 3, keyed as dropout)."""
    return np.random.default_rng(stream_seed(seed, STREAM_AUGMENT, epoch, step))


class Prefetcher:
    """``produce(k)`` for each ``k`` of ``keys``, in order, in a background thread, at most
    ``depth`` results ahead of :meth:`get`. Use it as a context manager: leaving the block stops
    and joins the thread (:meth:`close`)."""

    def __init__(self, produce: Callable[[int], object], keys: Iterable[int], depth: int = PREFETCH_DEPTH) -> None:
        self._produce, self._keys = produce, list(keys)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for k in self._keys:
                if self._stop.is_set():
                    return
                item = (k, self._produce(k), None)
                self._queue.put(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread, raised there
            self._queue.put((None, None, exc))

    def get(self, key: int):
        """The result for ``key`` (the next one in order); the producer's exception if it raised."""
        while True:
            try:
                k, value, exc = self._queue.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError(f"the augmentation thread stopped before batch {key}") from None
        if exc is not None:
            raise exc
        if k != key:
            raise RuntimeError(f"batch {key} was asked for, the augmentation thread made batch {k}")
        return value

    def close(self) -> None:
        """Stop the thread after the batch it is making, and wait for it (it never hangs on a full
        queue: the queue is emptied while waiting)."""
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()
            self._thread.join(0.05)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AugmentedBatches:
    """The augmented batches of one run's training pixels ``(N, D)`` uint8 (images of
    ``image_shape``), for every engine of the run.

    ``prefetch``: batches prepared ahead by a thread (0: each made when asked, in the training
    thread; the bytes are the same; shared, the whole epoch is made when it is entered).
    ``share``: keep an epoch memo for the next engine (see the module docstring).
    ``engine_threads``: the BLAS (and torch) threads of the engines during every augmented epoch
    (None: as they are; see :func:`prefetch_plan`)."""

    def __init__(self, pixels: np.ndarray, image_shape: tuple[int, ...], augmentation: Augmentation, seed: int,
                 batch_size: int, *, share: bool = False, prefetch: int = PREFETCH_DEPTH,
                 engine_threads: int | None = None) -> None:
        if pixels.dtype != np.uint8 or pixels.ndim != 2:
            raise ValueError(f"augmentation needs uint8 pixel rows (N, D), got {pixels.dtype} {pixels.shape}")
        augmentation.check_images(tuple(image_shape))
        self.pixels, self.image_shape, self.augmentation = pixels, tuple(image_shape), augmentation
        self.seed, self.batch_size, self.prefetch, self.share = int(seed), int(batch_size), int(prefetch), share
        self.engine_threads = engine_threads
        self.steps_per_epoch = -(-len(pixels) // self.batch_size)
        self._memo: np.ndarray | None = None
        self._memo_epoch: int | None = None
        self._memo_order: np.ndarray | None = None
        self._filled = np.zeros(self.steps_per_epoch, dtype=bool)
        self.computed = 0  # batches augmented so far (a comparison's engines share them: tests count)

    def batch(self, epoch: int, step: int, idx: np.ndarray, warper: Warper | None = None,
              out: np.ndarray | None = None) -> np.ndarray:
        """Step ``(epoch, step)``'s augmented rows ``(b, D)`` uint8, ``idx`` the batch's row indices:
        a pure function of ``(seed, epoch, step, pixels[idx])``."""
        b = len(idx)
        images = np.take(self.pixels, idx, axis=0).reshape(b, *self.image_shape)
        into = None if out is None else out.reshape(b, *self.image_shape)
        self.computed += 1
        return self.augmentation.apply(images, augment_rng(self.seed, epoch, step), warper, into).reshape(b, -1)

    def block(self, epoch: int, steps: range, order: np.ndarray, warper: Warper) -> list[np.ndarray]:
        """The augmented rows of each of ``steps`` (consecutive steps of ``epoch`` in ``order``), as
        :meth:`batch` gives them, made in one warp: each batch's transforms drawn from its own
        generator, in turn, then every image resampled at once."""
        B = self.batch_size
        idx = [order[s * B:(s + 1) * B] for s in steps]
        if not self.augmentation.active or len(idx) == 1:
            return [self.batch(epoch, s, i, warper) for s, i in zip(steps, idx)]
        images = np.take(self.pixels, np.concatenate(idx), axis=0).reshape(-1, *self.image_shape)
        draws = [self.augmentation.draw(augment_rng(self.seed, epoch, s), len(i), self.image_shape)
                 for s, i in zip(steps, idx)]
        fields = [d.field for d in draws]
        draw = Draw(np.concatenate([d.inverse for d in draws]), np.concatenate([d.shift for d in draws]),
                    None if fields[0] is None else np.concatenate(fields))
        rows = warper.warp(images, draw).reshape(len(images), -1)
        self.computed += len(idx)
        return np.split(rows, np.cumsum([len(i) for i in idx])[:-1])

    @contextlib.contextmanager
    def epoch(self, epoch: int, order: np.ndarray, start: int = 0) -> Iterator[Callable[[int], np.ndarray]]:
        """``with batches.epoch(e, order, start) as rows:`` then ``rows(s)`` for ``s = start, start + 1, ...``
        in turn gives batch ``s``'s augmented pixel rows (valid until the block ends)."""
        memo = self._memo_for(epoch, order)
        warper, B = Warper(), self.batch_size
        made: dict[int, np.ndarray] = {}                   # the rest of the block last made (in this thread)
        per_block = max(1, min(BLOCK_BATCHES, BLOCK_ROWS // B))

        def produce(s: int) -> np.ndarray:
            if memo is None and self.prefetch <= 0:
                if s not in made:
                    made.clear()
                    steps = range(s, min(s + per_block, self.steps_per_epoch))
                    made.update(zip(steps, self.block(epoch, steps, order, warper)))
                return made.pop(s)
            idx = order[s * B:(s + 1) * B]
            if memo is None:
                return self.batch(epoch, s, idx, warper)
            rows = memo[s * B:s * B + len(idx)]
            if not self._filled[s]:
                self.batch(epoch, s, idx, warper, out=rows)
                self._filled[s] = True
            return rows

        # every augmented epoch on the same threads, thread or not: BLAS may round a product
        # differently on another thread count, and a resumed run must compute as the whole one did
        with limited_threads(self.engine_threads):
            if self.prefetch <= 0 and memo is not None:  # shared, made here: the whole epoch now, before
                for s in range(start, self.steps_per_epoch):  # the first engine's clock starts (the
                    produce(s)                                # engines' times leave it out alike)
            if self.prefetch <= 0 or (memo is not None and self._filled[start:].all()):
                yield produce  # made here, or all in the memo already (the twin's epoch): no thread needed
                return
            from nnscratch.numpy_engine.backend import release_gil_in_products

            release_gil_in_products()  # else the thread would wait through each of the engine's products
            with Prefetcher(produce, range(start, self.steps_per_epoch), self.prefetch) as prefetcher:
                yield prefetcher.get

    def _memo_for(self, epoch: int, order: np.ndarray) -> np.ndarray | None:
        """The memo, kept if it holds this epoch (same order), else emptied for it; None unless shared."""
        if not self.share:
            return None
        if self._memo is None:
            self._memo = np.empty_like(self.pixels)
        if self._memo_epoch != epoch or not np.array_equal(self._memo_order, order):
            self._filled[:] = False
            self._memo_epoch, self._memo_order = epoch, np.array(order, copy=True)
        return self._memo
