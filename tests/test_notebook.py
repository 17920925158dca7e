"""The walkthrough notebook (issue 23, item 6): committed without outputs, and run top to bottom
in a real Jupyter kernel (``nbclient``), its outputs in a temporary folder, never in the repository.

The values it computes are checked against what they must be: the float32 twins' last step
losses agree to float32 rounding, the float64 twins to 1e-12, the gradient check passes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nnscratch
from helpers import optional_import

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


def test_the_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    assert len(code) >= 10
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None, "".join(cell["source"])[:80]
        assert "execution" not in cell.get("metadata", {})


def test_the_walkthrough_runs_top_to_bottom(mnist, tmp_path, monkeypatch):
    nbformat = optional_import("nbformat")
    nbclient = optional_import("nbclient")
    optional_import("ipykernel")
    optional_import("torch")
    out = tmp_path / "out"
    monkeypatch.setenv("NNSCRATCH_NOTEBOOK_OUT", str(out))  # the kernel inherits the environment
    before = sorted(p.name for p in NOTEBOOK.parent.iterdir())
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # which interpreter and package the kernel ran: this test's own (jupyter_client starts "python" as sys.executable)
    nb.cells.append(nbformat.v4.new_code_cell("import sys, nnscratch\nprint(sys.executable)\nprint(nnscratch.__file__)"))
    client = nbclient.NotebookClient(nb, timeout=150, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    executable, package = _printed(nb.cells[-1]).split()
    assert (executable, package) == (sys.executable, nnscratch.__file__)
    summary = json.loads(_printed(next(c for c in nb.cells if "summary" in c.metadata.get("tags", []))))
    numpy_loss, torch_loss = summary["final_step_loss"]["numpy"], summary["final_step_loss"]["torch"]
    assert abs(numpy_loss - torch_loss) <= 1e-5 * abs(torch_loss)  # float32: rounding only
    assert summary["twin_float32_max_rel_step_loss_diff"] < 1e-5
    assert summary["twin_float64_max_rel_step_loss_diff"] < 1e-12
    assert summary["gradcheck_worst_error"] < 1e-6
    assert min(summary["test_accuracy"].values()) > 0.7  # 3,000 images, 5 epochs: about 0.82
    assert {p.name for p in out.iterdir()} >= {"samples.png", "numpy_loss_curve.png", "torch_loss_curve.png",
                                                "numpy_confusion_matrix.png", "twin_divergence.png",
                                                "first_layer_weights.png", "saliency.png"}
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 7
    assert sorted(p.name for p in NOTEBOOK.parent.iterdir()) == before  # nothing written beside it


def _printed(cell) -> str:
    """What a code cell printed on stdout."""
    return "".join(o["text"] for o in cell.outputs if o.get("output_type") == "stream" and o.get("name") == "stdout")
