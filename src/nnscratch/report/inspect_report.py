"""``nnscratch inspect``'s files: the figures of an :class:`~nnscratch.analysis.inspect.Inspection`,
``inspect.json`` (its numbers) and ``inspect.md`` (the index: each figure, what it shows, the
command that made it). Each file is written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from nnscratch.analysis.inspect import Inspection
from nnscratch.files.atomic import atomic_write_text, write_json
from nnscratch.report import inspect_plots as plots

#: What each figure shows, for inspect.md (one place: the docs say the same at more length).
CAPTIONS = {
    "first_layer_weights.png": "The first dense layer's incoming weights, one image per hidden unit ({how}): the "
                               "pattern each unit responds to (red: a brighter pixel there raises the unit's input, "
                               "blue: lowers it).",
    "class_units.png": "For each class, the {units} units of the first hidden layer that respond most to it: score = "
                       "mean activation on the class's test images minus the mean on all test images; each unit "
                       "drawn as its incoming weights.",
    "activations.png": "Each hidden layer's output for the chosen test images (units laid out row by row in a "
                       "near-square grid, one colour scale per layer, up to its 99th percentile of |activation|), "
                       "and the output probabilities (true class in bold).",
    "saliency.png": "Saliency: the gradient of the predicted class's logit with respect to each input pixel "
                    "(pixel / 255), by the engine's own backward pass in evaluation mode{smooth}.",
    "top_losses.png": "The {top} test images with the highest cross-entropy loss, highest first, with the true "
                      "and predicted class and the predicted class's probability.",
}


def write_inspection(out_dir: Path, result: Inspection, *, test_images: np.ndarray, test_labels: np.ndarray,
                     class_names: Sequence[str], model: str, model_text: str, dataset: str,
                     command: str) -> list[str]:
    """Draw every figure ``result`` has into ``out_dir`` (none when its inputs are not images),
    then ``inspect.json`` and ``inspect.md``; return the names written. ``model_text``
    (``784-533-10 (relu)``) and ``dataset`` (``MNIST``) go into the titles."""
    names = list(class_names)
    who = f"{model_text} on {dataset}"
    figures = _figures(out_dir, result, test_images, test_labels, names, who) if result.weights is not None else []
    write_json(out_dir / "inspect.json", inspection_record(result, test_labels, names, model, command))
    atomic_write_text(out_dir / "inspect.md", _markdown(result, test_labels, names, model, who, command, figures))
    return figures + ["inspect.json", "inspect.md"]


def _figures(out_dir: Path, result: Inspection, test_images, test_labels, names, who) -> list[str]:
    shape, written = result.image_shape, []
    one_layer = result.scores is None  # the first dense layer gives the logits: its units are the classes
    plots.plot_first_layer(result.weights[result.units], result.units, shape, out_dir / "first_layer_weights.png",
                           labels=[names[u] for u in result.units] if one_layer else None, unused=result.unused,
                           title=f"First-layer weights, {result.units_how}:\n{who}")
    written.append("first_layer_weights.png")
    if not one_layer:
        plots.plot_class_units(result.top_units, result.scores, result.weights, result.class_means, names, shape,
                               out_dir / "class_units.png", unused=result.unused,
                               title=f"Per class, the {result.top_units.shape[1]} first-hidden-layer units that "
                                     "respond most, drawn as their weights\n(score: mean activation on the class "
                                     f"- mean on all test images)\n{who}")
        written.append("class_units.png")
    chosen = np.asarray(result.images)
    if result.hidden:
        plots.plot_activations(test_images[chosen], result.images, test_labels[chosen], result.hidden,
                               result.layer_names, result.probs, names, out_dir / "activations.png",
                               title=f"Each hidden layer's output (evaluation mode):\n{who}")
        written.append("activations.png")
    maps = [("gradient of the\npredicted class's logit", result.saliency)]
    if result.smoothgrad is not None:
        s = result.settings
        maps.append((f"SmoothGrad ({s['smooth']} samples,\nnoise {100 * s['noise']:g} % of range)", result.smoothgrad))
    plots.plot_saliency(test_images[chosen], result.images, test_labels[chosen], result.predicted, result.confidence,
                        maps, names, shape, out_dir / "saliency.png",
                        title=f"Saliency, d logit[predicted] / d pixel:\n{who}")
    written.append("saliency.png")
    top = result.top
    plots.plot_top_losses(test_images[top["index"]], top, names, out_dir / "top_losses.png",
                          title=f"The {len(top['index'])} test images of highest loss (of {len(test_labels):,}): {who}")
    written.append("top_losses.png")
    return written


def _list(indices: Sequence[int]) -> str:
    return ", ".join(f"#{i}" for i in indices)


def inspection_record(result: Inspection, labels: np.ndarray, names: list[str], model: str, command: str) -> dict:
    """The numbers of ``result`` as plain JSON data."""
    predicted = result.logits.argmax(axis=1)
    top = result.top
    record = {"model": model, "command": command, "test_images": int(len(labels)),
              "accuracy": float(np.mean(predicted == labels)), "image_shape": list(result.image_shape),
              "settings": result.settings,
              "top_losses": [{"index": int(i), "loss": float(l), "true": names[t], "predicted": names[p],
                              "confidence": float(c)}
                             for i, l, t, p, c in zip(top["index"], top["loss"], top["true"], top["predicted"],
                                                      top["confidence"])]}
    if result.units is not None:
        record["first_layer_units_shown"] = [int(u) for u in result.units]
        record["first_layer_units_how"] = result.units_how
    if result.top_units is not None:
        record["class_units"] = {names[c]: [[int(u), float(result.scores[c, u])] for u in row]
                                 for c, row in enumerate(result.top_units)}
    if result.images and result.probs is not None:
        record["images"] = [{"index": i, "true": names[int(labels[i])], "predicted": names[int(p)],
                             "confidence": float(c)}
                            for i, p, c in zip(result.images, result.predicted, result.confidence)]
    return record


def _markdown(result: Inspection, labels, names, model: str, who: str, command: str, figures: list[str]) -> str:
    accuracy = float(np.mean(result.logits.argmax(axis=1) == labels))
    s = result.settings
    smooth = (f"; beside it SmoothGrad, the mean gradient over {s['smooth']} noisy copies (noise sigma "
              f"{s['noise']:g} of the image's pixel range, seed {s['seed']})") if s["smooth"] else ""
    how = result.units_how
    lines = [f"# Inspection of {model}", "", f"{who}: test accuracy {accuracy:.4f} on {len(labels):,} images.", "",
             "```", command, "```", ""]
    if result.weights is None:
        h, w, c = result.image_shape
        lines += [f"The inputs are {h}x{w}x{c} arrays of features, not images: only the top losses are written.", ""]
    for name in figures:
        text = CAPTIONS[name].format(how=how, units=s["units"], smooth=smooth, top=len(result.top["index"]))
        lines += [f"## {name}", "", text, "", f"![{name}]({name})", ""]
    if result.top_units is not None:
        lines += ["### Top units per class", "", "| class | units (score) |", "|---|---|"]
        lines += [f"| {names[c]} | " + ", ".join(f"{u} ({result.scores[c, u]:+.3g})" for u in row) + " |"
                  for c, row in enumerate(result.top_units)]
        lines.append("")
    lines += ["## Top losses", "", "| rank | test image | true | predicted | confidence | loss |",
              "|---:|---:|---|---|---:|---:|"]
    top = result.top
    for rank, (i, l, t, p, c) in enumerate(zip(top["index"], top["loss"], top["true"], top["predicted"],
                                               top["confidence"]), 1):
        lines.append(f"| {rank} | {i} | {names[t]} | {names[p]} | {c:.3f} | {l:.3f} |")
    return "\n".join(lines) + "\n"
