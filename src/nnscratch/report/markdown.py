"""``report.md``: the results of a run as Markdown, rendered from its ``metrics.json`` dict.

:func:`render_report` builds the text; :func:`write_report` writes it atomically. The report works
for one engine (``train``) or both (``compare``); the twin section appears only with both.
"""

from __future__ import annotations

import math
import os
from pathlib import Path, PurePath
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from nnscratch.io import atomic_write_text

ENGINE_NAMES = {"numpy": "NumPy", "torch": "PyTorch"}
_DASH = "—"

#: Figure file-name suffix -> caption (the engine's name is prefixed).
_FIGURE_CAPTIONS = {
    "loss_curve": "training loss per step",
    "metrics": "per-epoch accuracy, F1 and loss",
    "confusion_matrix": "confusion matrix (test set)",
    "correct_predictions": "correct test predictions",
    "incorrect_predictions": "most confident mistakes",
}


# --------------------------------------------------------------------------- formatting


def engine_label(engine: str) -> str:
    """Display name of an engine key: ``"numpy"`` -> ``"NumPy"``, ``"torch"`` -> ``"PyTorch"``."""
    return ENGINE_NAMES.get(engine, engine)


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


def _header(metrics: Mapping[str, Any]) -> list[str]:
    """Title, the command line (when recorded), the configuration and the dataset split."""
    engines = list(metrics.get("engines", {}))
    dataset = metrics.get("dataset", {})
    name = str(dataset.get("name", "dataset"))
    lines = [f"# nnscratch: {' vs '.join(engine_label(e) for e in engines)} on "
             f"{_dataset_title(name)}", ""]
    config = metrics.get("config", {})
    command = _command(metrics)
    if command:
        lines += ["```", command, "```", ""]
    shown = {k: v for k, v in config.items() if k != "command"}
    lines.append("**Config:** " + ", ".join(f"`{k}={_config_value(k, v)}`"
                                            for k, v in shown.items()))
    split = [f"{dataset[part]:,} {label}" for part, label in
             (("train", "train"), ("val", "validation"), ("test", "test"))
             if isinstance(dataset.get(part), int)]
    if split:
        lines += ["", f"**Data:** {_dataset_title(name)}, " + " / ".join(split) + " images."]
    return lines + [""]


def _command(metrics: Mapping[str, Any]) -> str | None:
    """The command line of the run: as recorded, else rebuilt from the config's flags."""
    config = metrics.get("config", {})
    recorded = metrics.get("command") or config.get("command")
    if recorded:
        return " ".join(map(str, recorded)) if isinstance(recorded, list) else str(recorded)
    if "epochs" not in config:
        return None
    from nnscratch.config import RunConfig

    engines = list(metrics.get("engines", {}))
    verb = "compare" if len(engines) > 1 else f"train --engine {engines[0]}" if engines else "train"
    defaults = RunConfig().to_dict()
    flags = []
    for key, value in config.items():  # every setting that differs from its default, as its flag
        if key not in defaults or key == "engines" or value == defaults[key]:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{key.replace('_', '-')}")
        else:
            flags.append(f"{flag} {' '.join(map(str, value)) if isinstance(value, (list, tuple)) else value}")
    return " ".join(["nnscratch", verb, *flags])


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
    """A config value as written in the config line (``None`` reads as ``all`` for subsets)."""
    if value is None:
        return "all" if key.endswith("subset") else "none"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def _dataset_title(name: str) -> str:
    """``"mnist"`` -> ``"MNIST"``, ``"fashion-mnist"`` -> ``"Fashion-MNIST"``; others as given."""
    return {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}.get(name.lower(), name)


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
    title = "## Results" + (f" (seed {seed})" if seed is not None else "")
    return [title, "", *_table(["Metric", *map(engine_label, engines)], rows), ""]


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


def _per_digit(metrics: Mapping[str, Any]) -> list[str]:
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
        rows.append([str(entry.get("class", k)), f"{int(entry.get('support', 0)):,}", *cells])
    digits = str(metrics.get("dataset", {}).get("name", "mnist")).lower() == "mnist"
    header = ["Digit" if digits else "Class", "Test images",
              *(f"{engine_label(e)} accuracy" for e in engines)]
    title = "## Per-digit accuracy" if digits else "## Per-class accuracy"
    return [title, "", "Accuracy on the test images of each class (the recall of that class).",
            "", *_table(header, rows), ""]


def _confused_pairs(metrics: Mapping[str, Any], class_names: Sequence[str] | None) -> list[str]:
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


def _figure_caption(stem: str, engines: Iterable[str]) -> str:
    """Alt text for a figure from its file name (``numpy_loss_curve`` -> 'NumPy: training...')."""
    if stem.endswith("_samples"):
        return "Samples of the training set"
    for engine in engines:
        suffix = stem[len(engine) + 1:] if stem.startswith(engine + "_") else None
        if suffix in _FIGURE_CAPTIONS:
            return f"{engine_label(engine)}: {_FIGURE_CAPTIONS[suffix]}"
    return stem.replace("_", " ")


def _figures(metrics: Mapping[str, Any], figures: Sequence[str]) -> list[str]:
    """Every figure not already shown in another section, grouped by engine."""
    engines = list(metrics.get("engines", {}))
    twin_shown = bool(metrics.get("twin"))
    rest = [f for f in figures if not (twin_shown and PurePath(f).stem == "twin_divergence")]
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
            lines += [f"![{_figure_caption(PurePath(fig).stem, engines)}]({fig})", ""]
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


def render_report(metrics: Mapping[str, Any], figures: Sequence[str | os.PathLike]) -> str:
    """Render the Markdown report of a run.

    Parameters
    ----------
    metrics : dict
        The ``metrics.json`` dict: ``config``, ``dataset``, ``engines`` (one or both),
        ``twin`` (only when both engines ran) and ``machine``.
    figures : sequence of str or path
        Figure files as they should be linked from the report (usually bare file names beside
        it); embedded as ``![caption](file.png)``.

    Returns
    -------
    str
        The report, ending in a newline.
    """
    figs = [PurePath(f).as_posix() for f in figures]
    per_class = next((r.get("test", {}).get("per_class") for r in
                      metrics.get("engines", {}).values() if r.get("test", {}).get("per_class")),
                     None)
    class_names = [str(pc.get("class", k)) for k, pc in enumerate(per_class)] if per_class else None
    sections = (_header(metrics), _architecture(metrics), _results(metrics), _per_digit(metrics),
                _confused_pairs(metrics, class_names), _twin(metrics, figs), _history(metrics),
                _figures(metrics, figs), _machine(metrics.get("machine")))
    lines = [line for section in sections for line in section]
    return "\n".join(lines).rstrip() + "\n"


def write_report(
    path: str | os.PathLike, metrics: Mapping[str, Any], figures: Sequence[str | os.PathLike]
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
    return atomic_write_text(path, render_report(metrics, links))
