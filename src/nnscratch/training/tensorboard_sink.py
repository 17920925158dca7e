"""TensorBoard logs of a run: a sink of the trainer's events (:mod:`nnscratch.training.events`).

:class:`TensorBoardWriter` writes, through ``tensorboardX`` (no torch needed), one TensorBoard
run per engine, ``DIR/numpy`` and ``DIR/torch``, so that ``tensorboard --logdir DIR`` draws the
twins over each other. Every value is logged at the global step it belongs to (1-based; an
epoch's figures at the step that ended it), so the curves of both kinds share one x axis:

=================================  ==========================================================
``train/step_loss``, ``train/lr``  every step's training loss and learning rate (``StepEnd``)
``epoch/train_loss`` ...           per epoch: ``train_loss``, ``train_accuracy``, ``val_loss``,
                                   ``val_accuracy``, ``val_f1`` (``EpochEnd``: metrics.json's
                                   history)
``grad_norm/<param>``              per epoch, per parameter: the gradient-flow figures
``update_ratio/<param>``           (``GradientFlow``, the mean over the sampled steps)
``dead_fraction/<layer>``          per epoch, per ReLU-family layer
``weights/<param>``                histograms per epoch: every parameter after the epoch
``buffers/<buffer>``               (``running_mean``, ``running_var`` of batch norm)
``gradients/<param>``              the gradients and layer outputs of the epoch's last
``activations/<layer>.<kind>``     gradient-flow step (``EpochArrays``)
``first_layer/weights``            an image per epoch: the first dense layer's first 64 units,
                                   drawn as ``nnscratch inspect`` draws them (red +, blue -)
``config``                         the run's settings (text), once
=================================  ==========================================================

The histograms come from :class:`~nnscratch.training.events.EpochArrays`, which the trainer makes
only for a sink like this one (``wants_arrays``): once per epoch, a copy of the weights and of one
sampled step's gradients and outputs, nothing in the steps between. Without gradient flow
(``--no-gradient-flow``) there are no gradient, update, dead-unit or activation figures.

Event files are appended to as the run goes (that is how TensorBoard follows a run live), not
written atomically like the run's other outputs; they go to ``DIR``, never into the run folder.
A run that starts (step 0) in a folder that holds an earlier run's event files hides those from
TensorBoard (its ``purge_step``: the files stay, and a note says so); a resumed run hides only
the earlier steps after its checkpoint, so an interrupted run and its resumption read as one.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from nnscratch.errors import INSTALL_TENSORBOARD, UsageError

#: The units of the first dense layer drawn in ``first_layer/weights``: the first this many.
FIRST_LAYER_UNITS = 64
#: How often (seconds) the event files are flushed, so that TensorBoard sees a run live.
FLUSH_SECS = 5
#: The per-epoch figures of an epoch record that are logged (``epoch/<key>``).
EPOCH_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_f1")
#: Buckets of every histogram, equal widths from the smallest value to the largest.
HISTOGRAM_BINS = 64


def require_tensorboardx() -> None:
    """A :class:`UsageError` with the install line unless ``tensorboardX`` can be imported."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise UsageError(f"--tensorboard needs tensorboardX: {INSTALL_TENSORBOARD} "
                         "(or run without --tensorboard)") from None


class TensorBoardWriter:
    """A sink writing a TensorBoard run per engine under ``logdir`` (see the module docstring).

    ``spec``: the run's :class:`~nnscratch.model.spec.ModelSpec` (it names the layers' kinds,
    tells parameters from buffers and finds the first dense layer); ``image_shape``: the inputs'
    ``(H, W, C)``, for the first-layer image (none is drawn for inputs that are not images).
    One writer serves every engine of a run, in turn or in lockstep; :meth:`close` closes what is
    still open (each engine's file is closed at its ``RunEnd`` anyway).
    """

    wants_arrays = True  # the trainer sends EpochArrays to this sink

    def __init__(self, logdir: str | Path, spec, image_shape: tuple[int, ...] | None = None) -> None:
        from nnscratch.analysis.inspect import is_image
        from nnscratch.model.registry import dense_layers, parameter_names

        require_tensorboardx()
        self.logdir = Path(logdir)
        self.kinds = [layer.kind for layer in spec.layers]
        self.parameters = frozenset(parameter_names(spec))
        shape = tuple(image_shape or ())
        self.image_shape = shape if len(shape) == 3 and is_image(shape) else None
        self.first_layer = f"{dense_layers(spec)[0]}.weight"
        self._files: dict[str, EventFile] = {}  # engine -> its event file
        self._step: dict[str, int] = {}         # engine -> the last global step seen

    def __call__(self, event) -> None:
        handle = getattr(self, f"_on_{event.kind}", None)
        if handle is not None:
            handle(event)

    # -- events ----------------------------------------------------------------------------------

    def _on_run_start(self, event) -> None:
        from tensorboardX.summary import text

        folder = self.logdir / event.engine
        if event.start_step == 0 and folder.is_dir() and any(folder.glob("*tfevents*")):
            from nnscratch.data.common import note

            note(f"--tensorboard: {folder} holds the event files of an earlier run; TensorBoard now shows this "
                 "run in their place (the files are kept: use a new folder to see both)")
        # hide from TensorBoard whatever an earlier run logged from here on (nothing, in a new folder)
        self._files[event.engine] = EventFile(folder, purge_step=event.start_step + 1 if event.start_step else 0)
        self._step[event.engine] = event.start_step
        settings = json.dumps(event.config, indent=2, sort_keys=True)
        self._files[event.engine].add(event.start_step, text("config", f"```\n{settings}\n```").value)

    def _on_step_end(self, event) -> None:
        self._files[event.engine].add(event.step, [_scalar("train/step_loss", event.loss),
                                                   _scalar("train/lr", event.lr)])
        self._step[event.engine] = event.step

    def _on_gradient_flow(self, event) -> None:
        values = [_scalar(f"{stat}/{name}", stats[stat]) for name, stats in event.params.items()
                  for stat in ("grad_norm", "update_ratio")]
        values += [_scalar(f"dead_fraction/{name}", stats["dead_fraction"]) for name, stats in event.layers.items()
                   if "dead_fraction" in stats]
        self._files[event.engine].add(self._step[event.engine], values)

    def _on_epoch_arrays(self, event) -> None:
        values = [_histogram(f"{'weights' if name in self.parameters else 'buffers'}/{name}", value)
                  for name, value in event.weights.items()
                  if np.asarray(value).dtype.kind == "f"]  # not num_batches_tracked
        values += [_histogram(f"gradients/{name}", value) for name, value in event.gradients.items()]
        values += [_histogram(f"activations/{name}.{self.kinds[int(name)]}", value)
                   for name, value in event.outputs.items()]
        weight = event.weights.get(self.first_layer)
        if self.image_shape is not None and weight is not None:
            values.append(_image("first_layer/weights", first_layer_image(weight, self.image_shape)))
        self._files[event.engine].add(self._step[event.engine], [v for v in values if v is not None])

    def _on_epoch_end(self, event) -> None:
        record = event.record
        values = [_scalar(f"epoch/{key}", record[key]) for key in EPOCH_KEYS
                  if record.get(key) is not None and math.isfinite(record[key])]  # no validation set: NaN
        self._files[event.engine].add(self._step[event.engine], values)
        self._files[event.engine].flush()  # an epoch's figures are seen at once

    def _on_run_end(self, event) -> None:
        file = self._files.pop(event.engine, None)
        if file is not None:
            file.close()

    def close(self) -> None:
        """Flush and close every engine's event file still open."""
        while self._files:
            self._files.popitem()[1].close()


class EventFile:
    """One TensorBoard run's event file, written through tensorboardX's ``EventsWriter``.

    Each record is written at once, in the caller's thread; the file is flushed every
    :data:`FLUSH_SECS` seconds and after every epoch. (tensorboardX's ``SummaryWriter`` hands
    every record to a background process queue instead: 320 us of CPU per step for a loss and a
    rate, against 9-16 us here, measured; a seed-run epoch has 782 steps.) ``purge_step``:
    TensorBoard hides the events of the folder's earlier files from this step on (a
    ``SessionLog.START``, what ``SummaryWriter(purge_step=...)`` writes).
    """

    def __init__(self, folder: Path, purge_step: int) -> None:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.proto.summary_pb2 import Summary

        self._Event, self._Summary = Event, Summary
        folder.mkdir(parents=True, exist_ok=True)
        # a suffix ordered within the second: two runs started in one second must not share a file name
        self._writer = EventsWriter(str(folder / "events"), f".{time.time_ns() % 10**9:09d}")
        self._writer.write_event(Event(wall_time=time.time(), step=purge_step,
                                       session_log=SessionLog(status=SessionLog.START)))
        self._flushed = time.monotonic()

    def add(self, step: int, values: list) -> None:
        """One event at global step ``step`` holding the summary ``values`` (none: nothing written)."""
        if not values:
            return
        self._writer.write_event(self._Event(wall_time=time.time(), step=step, summary=self._Summary(value=values)))
        if time.monotonic() - self._flushed >= FLUSH_SECS:
            self.flush()

    def flush(self) -> None:
        self._writer.flush()
        self._flushed = time.monotonic()

    def close(self) -> None:
        self._writer.close()


def first_layer_image(weight: np.ndarray, image_shape: tuple[int, int, int],
                      units: int = FIRST_LAYER_UNITS) -> np.ndarray:
    """The first ``units`` rows of the first dense layer's ``weight (U, H*W*C)`` as one uint8 RGB
    image, a tile per unit (:func:`~nnscratch.report.inspect_plots.weight_grid`), tiles smaller
    than MNIST's 28 pixels enlarged to about that (TensorBoard shows an image at its own size)."""
    from nnscratch.report.inspect_plots import weight_grid

    grid = weight_grid(np.asarray(weight)[:units], image_shape)
    zoom = max(1, -(-28 // image_shape[0]))
    return np.repeat(np.repeat(grid, zoom, axis=0), zoom, axis=1) if zoom > 1 else grid


def _scalar(tag: str, value: float):
    from tensorboardX.proto.summary_pb2 import Summary

    return Summary.Value(tag=tag, simple_value=float(value))


def _histogram(tag: str, values):
    """A histogram of the finite ``values`` in :data:`HISTOGRAM_BINS` equal buckets from their
    minimum to their maximum (TensorFlow 2's way; ``bucket_limit`` holds each bucket's right
    edge), or None when none is finite (a diverged run)."""
    from tensorboardX.proto.summary_pb2 import HistogramProto, Summary

    v = np.asarray(values, dtype=np.float64).ravel()
    finite = np.isfinite(v)
    if not finite.all():
        v = v[finite]
    if not v.size:
        return None
    counts, edges = np.histogram(v, bins=HISTOGRAM_BINS)
    return Summary.Value(tag=tag, histo=HistogramProto(min=float(v.min()), max=float(v.max()), num=v.size,
                                                       sum=float(v.sum()), sum_squares=float(v @ v),
                                                       bucket_limit=edges[1:].tolist(), bucket=counts.tolist()))


def _image(tag: str, rgb: np.ndarray):
    """An RGB uint8 image ``(H, W, 3)`` as a PNG summary (zlib level 1: the weights are noise to
    zlib, and level 6 took twice as long for the same size)."""
    import io

    from PIL import Image
    from tensorboardX.proto.summary_pb2 import Summary

    png = io.BytesIO()
    Image.fromarray(rgb).save(png, format="PNG", compress_level=1)
    return Summary.Value(tag=tag, image=Summary.Image(height=rgb.shape[0], width=rgb.shape[1], colorspace=3,
                                                      encoded_image_string=png.getvalue()))
