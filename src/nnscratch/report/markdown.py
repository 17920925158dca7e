"""``report.md``: the results of a run as Markdown, rendered from its ``metrics.json`` dict.

:func:`render_report` builds the text; :func:`write_report` writes it atomically. The report works
for one engine (``train``) or both (``compare``); the twin section appears only with both.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path, PurePath
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from nnscratch.files.atomic import atomic_write_text
from nnscratch.report.display_names import engine_label
from nnscratch.report.context import DatasetView, dataset_view, image_kind, lr_varies, step_lrs

_DASH = "—"
#: The data line lists at most this many class names.
_MAX_LISTED_CLASSES = 30

#: Figure file-name suffix -> caption (the engine's name is prefixed).
_FIGURE_CAPTIONS = {
    "loss_curve": "training loss per step",
    "metrics": "per-epoch accuracy, F1 and loss",
    "confusion_matrix": "confusion matrix (test set)",
    "correct_predictions": "correct test predictions",
    "incorrect_predictions": "most confident mistakes",
    "gradient_flow": "gradient flow per layer (gradient norms, update ratios, activations, dead units)",
}
_LR_FIGURE = "lr_schedule"


# --------------------------------------------------------------------------- formatting


def format_duration(seconds: float | None) -> str:
    """``12.3 s`` under a minute, ``2m52s`` under an hour, ``1h02m03s`` beyond."""
    if seconds is None or not math.isfinite(seconds):
        return _DASH
    if seconds < 60:
        return f"{seconds:.1f} s"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _num(value: Any, digits: int = 4) -> str:
    """A score with ``digits`` decimals, or a dash when missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return _DASH
    return f"{float(value):.{digits}f}"


def _sci(value: Any) -> str:
    """A tiny difference in scientific notation (``3.05e-07``), ``0`` when exactly zero."""
    if value is None:
        return _DASH
    return "0" if float(value) == 0.0 else f"{float(value):.2e}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table as lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def most_confused(
    cm: Sequence[Sequence[int]] | np.ndarray, k: int = 5
) -> list[tuple[int, int, int]]:
    """The ``k`` largest off-diagonal cells of a confusion matrix.

    Returns
    -------
    list of (true, predicted, count)
        Largest count first; ties in (true, predicted) order. Zero counts are left out.
    """
    cm = np.asarray(cm, dtype=np.int64)
    pairs = [(int(cm[i, j]), i, j) for i in range(cm.shape[0]) for j in range(cm.shape[1])
             if i != j and cm[i, j] > 0]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    return [(i, j, count) for count, i, j in pairs[:k]]


# --------------------------------------------------------------------------- sections


def _header(metrics: Mapping[str, Any], view: DatasetView) -> list[str]:
    """Title, the command line (when recorded), the configuration and the dataset."""
    engines = list(metrics.get("engines", {}))
    lines = [f"# nnscratch: {' vs '.join(engine_label(e) for e in engines)} on {view.title}", ""]
    config = metrics.get("config", {})
    command = _command(metrics)
    if command:
        lines += ["```", command, "```", ""]
    from nnscratch.run.config import RunConfig

    defaults = RunConfig().to_dict()
    always = ("dataset", "epochs", "batch_size", "lr", "hidden", "activation", "optimizer", "seed", "dtype")
    shown = {k: v for k, v in config.items()
             if k not in ("command", "engines") and (k in always or k not in defaults or v != defaults[k])}
    lines.append("**Config** (the rest at its default; all of it in `metrics.json`): "
                 + ", ".join(f"`{k}={_config_value(k, v)}`" for k, v in shown.items()))
    return lines + ["", *_data(metrics, view)]


def _data(metrics: Mapping[str, Any], view: DatasetView) -> list[str]:
    """The dataset: title, image size, classes, split sizes, how it was split, notes."""
    dataset = metrics.get("dataset", {})
    split = [f"{dataset[part]:,} {label}" for part, label in
             (("train", "train"), ("val", "validation"), ("test", "test"))
             if isinstance(dataset.get(part), int)]
    kind = image_kind(view.image_shape)
    n = len(view.class_names)
    about = ", ".join(part for part in (f"{kind} images" if kind else "",
                                        f"{n} classes" if n else "") if part)
    line = f"**Data:** {view.title}" + (f" ({about})" if about else "")
    line += (": " + " / ".join(split) + " images." if split else ".")
    lines = [line, ""]
    if n:
        listed = ", ".join(view.class_names[:_MAX_LISTED_CLASSES])
        more = n - _MAX_LISTED_CLASSES
        lines += [f"**Classes:** {listed}" + (f", … and {more} more" if more > 0 else "") + ".", ""]
    if dataset.get("split_rule"):
        lines += [f"**Split:** {dataset['split_rule']}", ""]
    augment = metrics.get("config", {}).get("augment")
    if augment and augment != "none":
        lines += [f"**Augmentation:** every training batch, on the fly: `{augment}` (each image its own random "
                  "transform, keyed by seed, epoch and step; the validation and test images as they are; "
                  "see docs/augmentation.md).", ""]
    if dataset.get("source"):
        lines += [f"**Source:** `{dataset['source']}`", ""]
    notes = [str(note) for note in dataset.get("notes") or []]
    if notes:
        lines += ["**Notes on the data:**", "", *(f"- {note}" for note in notes), ""]
    return lines


def _command(metrics: Mapping[str, Any]) -> str | None:
    """The command line of the run: as recorded, else rebuilt from the config's flags."""
    config = metrics.get("config", {})
    recorded = metrics.get("command") or config.get("command")
    if recorded:
        return " ".join(map(str, recorded)) if isinstance(recorded, list) else str(recorded)
    if "epochs" not in config:
        return None
    from nnscratch.run.config import RunConfig, setting_as_flag

    engines = list(metrics.get("engines", {}))
    verb = "compare" if len(engines) > 1 else f"train --engine {engines[0]}" if engines else "train"
    defaults = RunConfig().to_dict()
    flags = [setting_as_flag(key, value) for key, value in config.items()  # what differs from its default
             if key in defaults and key != "engines" and value != defaults[key] and not isinstance(value, dict)]
    return " ".join(["nnscratch", verb, *(f for f in flags if f)])


def _architecture(metrics: Mapping[str, Any]) -> list[str]:
    """The network layer by layer, as ``nn.Sequential`` numbers it."""
    layers = metrics.get("architecture")
    if not layers:
        return []
    model = metrics.get("config", {}).get("model", "")
    total = sum(int(layer.get("parameters", 0)) for layer in layers)
    rows = [(str(layer["index"]), str(layer["kind"]), str(layer["args"]), f"{int(layer['parameters']):,}")
            for layer in layers]
    return [f"## Architecture: {model}", "", *_table(["#", "Layer", "Arguments", "Parameters"], rows),
            "", f"{total:,} trainable parameters.", ""]


def _config_value(key: str, value: Any) -> str:
    """A config value as written in the config line (``None`` reads as ``all`` for subsets).

    Lists read ``[0.9,0.999]``, mappings ``{patience:3,min_delta:0.0}``, at any depth.
    """
    if value is None:
        return "all" if key.endswith("subset") else "none"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_config_value(str(k), v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_config_value(key, v) for v in value) + "]"
    return str(value)


def _results(metrics: Mapping[str, Any]) -> list[str]:
    """The headline results table: one column per engine."""
    engines = metrics.get("engines", {})
    seed = metrics.get("config", {}).get("seed")
    rows = []
    for label, key, sub in (("Accuracy", "accuracy", None),
                            ("Precision (weighted)", "precision", None),
                            ("Recall (weighted)", "recall", None),
                            ("F1 (weighted)", "f1", None),
                            ("Precision (macro)", "precision", "macro"),
                            ("Recall (macro)", "recall", "macro"),
                            ("F1 (macro)", "f1", "macro")):
        cells = []
        for result in engines.values():
            test = result.get("test", {})
            cells.append(_num((test.get(sub, {}) if sub else test).get(key)))
        rows.append([label, *cells])
    rows.append(["Test errors", *(_errors(r) for r in engines.values())])
    rows.append(["Training time",
                 *(format_duration(r.get("train_time_s")) for r in engines.values())])
    plain = engines.get("torch", {}).get("plain_torch")
    if plain:
        rows.append(["Training time, PyTorch's own loop (estimate, see below)",
                     *(format_duration(plain["estimated_train_time_s"]) if e == "torch" else _DASH
                       for e in engines)])
    title = "## Results" + (f" (seed {seed})" if seed is not None else "")
    dropout = any(layer.get("kind") == "dropout" for layer in metrics.get("architecture", []))
    skipped = engines.get("torch", {}).get("plain_torch_skipped")
    return [title, "", *_table(["Metric", *map(engine_label, engines)], rows), "",
            *_plain_torch_note(plain, dropout, in_turn="numpy" in engines),
            *([f"PyTorch's own loop was not timed beside the twin: {skipped}.", ""] if skipped else [])]


def _plain_torch_note(plain: Mapping[str, Any] | None, dropout: bool, in_turn: bool = False) -> list[str]:
    """What the row "PyTorch's own loop" measured, and what the twin does that this loop does not
    (``in_turn``: a comparison, whose engines train epoch by epoch in turn)."""
    if not plain:
        return []
    ratio = plain["twin_step_s"] / plain["step_s"] if plain["step_s"] > 0 else float("nan")
    harness = ["each batch handed over from NumPy",
               *(["the run's dropout masks applied (the loop draws its own)"] if dropout else []),
               "every step's loss and correct count kept for the history",
               *([f"{plain['recorded_steps']:,} of its steps also recording the gradient flow"]
                 if plain.get("recorded_steps") else []),
               "events sent to the live outputs",
               *(["its epochs in turn with the NumPy engine's"] if in_turn else [])]
    steps = plain["steps"]
    return [f"PyTorch's own loop: the twin's network, initial weights, optimizer and batch size, trained by "
            f"the loop of PyTorch's tutorials (tensors preloaded, `nn.Dropout`'s own masks, the loss read "
            f"once), timed after training for {steps:,} step{'s' if steps != 1 else ''} after a warm-up: "
            f"{plain['step_s'] * 1e3:.2f} ms a step against the twin's {plain['twin_step_s'] * 1e3:.2f} ms "
            f"averaged over its {plain['twin_steps']:,} (twin / plain = {ratio:.2f}); the row is that time "
            f"times the twin's steps. What the twin does that this loop does not, so that it computes the NumPy "
            f"engine's numbers: {'; '.join(harness)} (docs/performance.md, the twin's harness).", ""]


def _errors(result: Mapping[str, Any]) -> str:
    """``"472 of 10,000"``: misclassified test images out of all of them."""
    test = result.get("test", {})
    cm = test.get("confusion_matrix")
    total = int(np.sum(cm)) if cm is not None else None
    errors = test.get("errors")
    if errors is None and cm is not None:
        errors = total - int(np.trace(np.asarray(cm)))
    if errors is None:
        return _DASH
    return f"{int(errors):,}" + (f" of {total:,}" if total else "")


def _per_class(metrics: Mapping[str, Any], view: DatasetView) -> list[str]:
    """Per-class accuracy (the recall of each class), one column per engine."""
    engines = metrics.get("engines", {})
    per_engine = [r.get("test", {}).get("per_class") or [] for r in engines.values()]
    if not any(per_engine):
        return []
    first = max(per_engine, key=len)
    rows = []
    for k, entry in enumerate(first):
        cells = [_num(pc[k].get("accuracy", pc[k].get("recall"))) if k < len(pc) else _DASH
                 for pc in per_engine]
        name = view.class_names[k] if k < len(view.class_names) else entry.get("class", k)
        rows.append([str(name), f"{int(entry.get('support', 0)):,}", *cells])
    header = [view.noun.capitalize(), "Test images",
              *(f"{engine_label(e)} accuracy" for e in engines)]
    return [f"## Per-{view.noun} accuracy on {view.title}", "",
            f"Accuracy on the test images of each {view.noun} (the recall of that {view.noun}).",
            "", *_table(header, rows), ""]


def _confused_pairs(metrics: Mapping[str, Any], class_names: Sequence[str]) -> list[str]:
    """The five most frequent (true -> predicted) mistakes of each engine."""
    engines = metrics.get("engines", {})
    tops = {e: most_confused(r["test"]["confusion_matrix"])
            for e, r in engines.items() if r.get("test", {}).get("confusion_matrix") is not None}
    if not tops:
        return []

    def name(i: int) -> str:
        return str(class_names[i]) if class_names and i < len(class_names) else str(i)

    rows = []
    for rank in range(max(len(t) for t in tops.values())):
        cells = [f"{name(t[rank][0])} → {name(t[rank][1])} ({t[rank][2]:,})"
                 if rank < len(t) else _DASH for t in tops.values()]
        rows.append([str(rank + 1), *cells])
    header = ["#", *(f"{engine_label(e)}: true → predicted (count)" for e in tops)]
    return ["## Most confused pairs", "", *_table(header, rows), ""]


def _twin(metrics: Mapping[str, Any], figures: Sequence[str]) -> list[str]:
    """How closely the two engines agree; only when both ran."""
    twin = metrics.get("twin")
    if not twin:
        return []
    test_n = metrics.get("dataset", {}).get("test")
    agreement = twin.get("test_prediction_agreement")
    agree = _DASH
    if agreement is not None:
        agree = f"{100 * float(agreement):.2f}%"
        if isinstance(test_n, int):
            agree += f" ({int(round(agreement * test_n)):,} of {test_n:,})"
    dtype = metrics.get("config", {}).get("dtype", "float32")
    rows = [["Max absolute step-loss difference", _sci(twin.get("max_abs_step_loss_diff"))],
            ["Max relative step-loss difference", _sci(twin.get("max_rel_step_loss_diff"))],
            ["Max relative weight difference (final weights)",
             _sci(twin.get("max_rel_weight_diff"))],
            ["Test predictions on which the engines agree", agree]]
    lines = ["## Twin agreement: NumPy vs PyTorch", "",
             "Both engines start from the same initial weights and see the same mini-batches in "
             "the same order, so in exact arithmetic they would compute identical numbers; every "
             f"difference below is {dtype} rounding (the two libraries sum in different orders) "
             "accumulated over training.", "", *_table(["Measure", "Value"], rows), ""]
    for fig in figures:
        if PurePath(fig).stem == "twin_divergence":
            lines += [f"![Per-step loss difference between the twins]({fig})", ""]
    return lines


def _training(metrics: Mapping[str, Any], figures: Sequence[str]) -> list[str]:
    """The learning-rate schedule (when the rate varied) and each engine's early stopping."""
    lines = _lr_lines(metrics)
    planned = metrics.get("config", {}).get("epochs")
    for engine, result in metrics.get("engines", {}).items():
        stopping = result.get("early_stopping")
        if stopping:
            text = _early_stopping_text(stopping, planned, len(result.get("history") or []))
            lines.append(f"- **Early stopping ({engine_label(engine)}):** {text}")
    if not lines:
        return []
    lines.append("")
    for fig in figures:
        if PurePath(fig).stem == _LR_FIGURE:
            lines += [f"![Learning rate per step]({fig})", ""]
    return ["## Training", "", *lines]


def _lr_lines(metrics: Mapping[str, Any]) -> list[str]:
    """How the learning rate moved, when it did: the schedule's name and its landmarks."""
    if not lr_varies(metrics):
        return []
    config = metrics.get("config", {})
    schedule = config.get("lr_schedule")
    head = (f"`{_config_value('lr_schedule', schedule)}` schedule" if schedule
            else "changed during training")
    if config.get("warmup_steps"):
        head += f", {int(config['warmup_steps']):,} warm-up steps"
    series = step_lrs(metrics)
    groups: list[tuple[list[str], list[float]]] = []
    for engine, lrs in series.items():       # engines with identical rates share one line
        match = next((g for g in groups if g[1] == lrs), None)
        if match:
            match[0].append(engine)
        else:
            groups.append(([engine], lrs))
    if len(groups) == 1:
        return [f"**Learning rate:** {head}: {_lr_landmarks(groups[0][1])}.", ""]
    return [f"**Learning rate:** {head}.", "",
            *(f"- {' and '.join(map(engine_label, engines))}: {_lr_landmarks(lrs)}"
              for engines, lrs in groups), ""]


def _lr_landmarks(lrs: Sequence[float]) -> str:
    """``0.001 at step 1, peak 0.1 at step 500, 0.0001 at step 9,380``."""
    peak = int(np.argmax(lrs))
    return (f"{lrs[0]:.4g} at step 1, peak {lrs[peak]:.4g} at step {peak + 1:,}, "
            f"{lrs[-1]:.4g} at step {len(lrs):,}")


def _early_stopping_text(stopping: Mapping[str, Any], planned: Any, epochs_run: int) -> str:
    """``stopped after epoch 7 of 20 (reason). Best validation loss 0.0712 at epoch 4; ...``."""
    stopped, best = stopping.get("stopped_epoch"), stopping.get("best_epoch")
    of = f" of {planned}" if isinstance(planned, int) else ""
    if stopped is None:
        text = f"did not stop early (ran all{' ' + str(planned) if of else ''} epochs)."
    else:
        reason = _bare_reason(str(stopping.get("reason") or ""))
        text = f"stopped after epoch {stopped}{of}" + (f" ({reason})." if reason else ".")
    if best is not None:
        text += f" Best validation loss {_num(stopping.get('best_val_loss'))} at epoch {best}"
        text += ("; its weights were restored." if stopping.get("restored_best")
                 else "; the last epoch was the best." if best == epochs_run
                 else "; the last epoch's weights were kept.")
    return text


def _bare_reason(reason: str) -> str:
    """The why of :attr:`~nnscratch.training.early_stopping.EarlyStopping.reason`, without the epoch,
    best loss and restoring that the report states on its own (``"stopped after epoch 12: X;
    best 0.07 at epoch 9; weights of epoch 9 restored"`` -> ``"X"``)."""
    reason = re.sub(r"^stopped after epoch \d+\s*:\s*", "", reason.strip())
    return re.sub(r";\s*best .*$", "", reason).strip()


def _history(metrics: Mapping[str, Any]) -> list[str]:
    """A compact per-epoch table for each engine."""
    lines = ["## Training history", ""]
    header = ["Epoch", "Train loss", "Train acc", "Val loss", "Val acc", "Val F1", "Time"]
    for engine, result in metrics.get("engines", {}).items():
        rows = [[str(h.get("epoch", k + 1)), _num(h.get("train_loss")),
                 _num(h.get("train_accuracy")), _num(h.get("val_loss")),
                 _num(h.get("val_accuracy")), _num(h.get("val_f1")),
                 format_duration(h.get("time_s"))]
                for k, h in enumerate(result.get("history") or [])]
        if rows:
            lines += [f"### {engine_label(engine)}", "", *_table(header, rows), ""]
    return lines if len(lines) > 2 else []


def _figure_caption(stem: str, engines: Iterable[str], view: DatasetView) -> str:
    """Alt text for a figure from its file name (``numpy_loss_curve`` -> 'NumPy: training...')."""
    if stem.endswith("_samples"):
        return f"{view.title} training samples, some of every {view.noun}"
    if stem == _LR_FIGURE:
        return "Learning rate per step"
    for engine in engines:
        suffix = stem[len(engine) + 1:] if stem.startswith(engine + "_") else None
        if suffix in _FIGURE_CAPTIONS:
            return f"{engine_label(engine)}: {_FIGURE_CAPTIONS[suffix]}"
    return stem.replace("_", " ")


def _figures(metrics: Mapping[str, Any], figures: Sequence[str], view: DatasetView) -> list[str]:
    """Every figure not already shown in another section, grouped by engine."""
    engines = list(metrics.get("engines", {}))
    shown = {"twin_divergence"} if metrics.get("twin") else set()
    if _training(metrics, []):
        shown.add(_LR_FIGURE)
    rest = [f for f in figures if PurePath(f).stem not in shown]
    if not rest:
        return []
    lines = ["## Figures", ""]
    groups: dict[str, list[str]] = {}
    for fig in rest:
        stem = PurePath(fig).stem
        owner = next((e for e in engines if stem.startswith(e + "_")), "")
        groups.setdefault(owner, []).append(fig)
    for owner, figs in sorted(groups.items(), key=lambda g: (g[0] != "", engines.index(g[0])
                                                               if g[0] in engines else 0)):
        if owner:
            lines += [f"### {engine_label(owner)}", ""]
        for fig in figs:
            lines += [f"![{_figure_caption(PurePath(fig).stem, engines, view)}]({fig})", ""]
    return lines


def _machine(machine: Mapping[str, Any] | None) -> list[str]:
    """The hardware and library versions the run used."""
    lines = ["## Machine", ""]
    if not machine:
        return lines + ["Not recorded.", ""]
    cores = f"{machine.get('logical_cores', _DASH)} logical cores"
    if machine.get("usable_cores") not in (None, machine.get("logical_cores")):
        cores += f", {machine['usable_cores']} usable by this process"
    memory = machine.get("memory_gib")
    versions = ", ".join(f"{label} {machine.get(key) or 'not installed'}" for label, key in
                         (("Python", "python"), ("NumPy", "numpy"), ("SciPy", "scipy"),
                          ("PyTorch", "torch"), ("Matplotlib", "matplotlib")))
    lines += [f"- **CPU:** {machine.get('cpu_model', 'unknown')} ({cores})",
              f"- **Memory:** {f'{memory} GiB' if memory is not None else 'unknown'}",
              f"- **OS:** {machine.get('os', 'unknown')}",
              f"- **Versions:** {versions}",
              f"- **BLAS / threading:** {_blas(machine.get('blas') or [])}", ""]
    return lines


def _blas(pools: Sequence[Mapping[str, Any]]) -> str:
    """``openblas 0.3.27 (SkylakeX, 2 threads); openmp (2 threads)``."""
    if not pools:
        return "not detected"
    parts = []
    for pool in pools:
        detail = [str(pool["architecture"])] if pool.get("architecture") else []
        if pool.get("num_threads") is not None:
            detail.append(f"{pool['num_threads']} threads")
        name = " ".join(str(pool[k]) for k in ("internal_api", "version") if pool.get(k))
        parts.append(name + (f" ({', '.join(detail)})" if detail else ""))
    return "; ".join(parts)


# --------------------------------------------------------------------------- public API


def render_report(
    metrics: Mapping[str, Any],
    figures: Sequence[str | os.PathLike],
    class_names: Sequence[str] | None = None,
) -> str:
    """Render the Markdown report of a run.

    Parameters
    ----------
    metrics : dict
        The ``metrics.json`` dict: ``config``, ``dataset``, ``engines`` (one or both),
        ``twin`` (only when both engines ran) and ``machine``.
    figures : sequence of str or path
        Figure files as they should be linked from the report (usually bare file names beside
        it); embedded as ``![caption](file.png)``.
    class_names : sequence of str, optional
        Overrides ``metrics["dataset"]["class_names"]`` (which older files lack; then the
        ``per_class`` entries name the classes).

    Returns
    -------
    str
        The report, ending in a newline.
    """
    figs = [PurePath(f).as_posix() for f in figures]
    view = dataset_view(metrics, class_names)
    sections = (_header(metrics, view), _architecture(metrics), _results(metrics),
                _per_class(metrics, view), _confused_pairs(metrics, view.class_names),
                _twin(metrics, figs), _training(metrics, figs), _history(metrics),
                _figures(metrics, figs, view), _machine(metrics.get("machine")))
    lines = [line for section in sections for line in section]
    return "\n".join(lines).rstrip() + "\n"


def write_report(
    path: str | os.PathLike,
    metrics: Mapping[str, Any],
    figures: Sequence[str | os.PathLike],
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write :func:`render_report` to ``path`` atomically; return the path.

    Figure paths are linked relative to the report's folder (absolute paths or paths that exist
    from the current directory are made relative to it).
    """
    path = Path(path)
    base = path.parent.resolve()
    links = []
    for fig in figures:
        fig_path = Path(fig)
        if fig_path.is_absolute() or fig_path.exists():
            links.append(os.path.relpath(fig_path.resolve(), base))
        else:
            links.append(str(fig))
    return atomic_write_text(path, render_report(metrics, links, class_names))
