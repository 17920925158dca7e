"""The results table printed at the end of a run (plain text, the seed project's layout)."""

from __future__ import annotations

from nnscratch.report.display_names import engine_label
from nnscratch.report.markdown import format_duration


def results_table(metrics: dict) -> str:
    """Accuracy, weighted precision/recall/F1, errors and training time, one column per engine."""
    engines = list(metrics["engines"])
    rows = [("Metric", *[engine_label(e) for e in engines])]
    tests = [metrics["engines"][e]["test"] for e in engines]
    for label, key in (("Accuracy", "accuracy"), ("Precision", "precision"), ("Recall", "recall"), ("F1", "f1")):
        rows.append((label, *[f"{t[key]:.4f}" for t in tests]))
    rows.append(("Errors", *[f"{t['errors']:,} / {sum(map(sum, t['confusion_matrix'])):,}" for t in tests]))
    rows.append(("Training time", *[format_duration(metrics["engines"][e]["train_time_s"]) for e in engines]))
    plain = metrics["engines"].get("torch", {}).get("plain_torch")
    if plain:  # PyTorch at its best on the same work (report.md says how it was measured)
        rows.append(("  PyTorch's own loop (est.)", *[format_duration(plain["estimated_train_time_s"]) if e == "torch"
                                               else "-" for e in engines]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    twin = metrics.get("twin")
    if twin:
        lines.append("")
        lines.append(f"twin agreement: max |step loss diff| {twin['max_abs_step_loss_diff']:.3g}, "
                     f"max relative weight diff {twin['max_rel_weight_diff']:.3g}, "
                     f"same test prediction on {100 * twin['test_prediction_agreement']:.2f} % of images")
    return "\n".join(lines)
