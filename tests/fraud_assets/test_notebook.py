"""The exploration notebook runs top to bottom on small synthetic data and shows its results."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "data_exploration.ipynb"


def _outputs(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def _text(nb: nbformat.NotebookNode) -> str:
    """Everything the notebook printed or displayed as text, in order."""
    parts = []
    for out in _outputs(nb):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/plain", ""))
    return "\n".join(parts)


def test_notebook_is_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, "the notebook has no code cells"
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    # An exploration notebook explains its steps.
    assert sum(cell.cell_type == "markdown" for cell in nb.cells) >= 6


def test_notebook_runs_on_small_synthetic_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel inherits this environment: an empty data directory, so a small synthetic set.
    monkeypatch.setenv("FRAUD_DATA_DIR", str(tmp_path / "empty_raw"))
    monkeypatch.setenv("FRAUD_SYNTHETIC_ROWS", "30000")
    monkeypatch.setenv("FRAUD_SYNTHETIC_FRAUD_RATE", "0.01")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # "python3" is ipykernel's spec, whose `python` jupyter_client replaces by sys.executable.
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error

    outputs = _outputs(nb)
    assert not [out for out in outputs if out.output_type == "error"]
    text = _text(nb)
    assert f"at {sys.executable}" in text, "the kernel did not run the test's Python"
    assert "data source: synthetic" in text
    assert "30,000 rows x 31 columns" in text
    assert "fraud rate: 1.0000%" in text

    auc = re.search(r"anomaly score alone, ROC AUC on test: ([0-9.]+)", text)
    assert auc, "the anomaly-score ROC AUC was not printed"
    assert 0.5 < float(auc.group(1)) <= 1.0

    top = re.search(r"top components by \|correlation with Class\|: (.+)", text)
    assert top
    # The synthetic frauds shift V14 most, as the real ones do.
    assert "V14" in top.group(1).split(", ")[:3]

    images = [out for out in outputs if "image/png" in out.get("data", {})]
    # Class balance, amounts, hourly rhythm, heatmap, top components, their distributions, scores.
    assert len(images) >= 7
