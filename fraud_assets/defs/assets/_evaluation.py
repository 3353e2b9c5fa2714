"""What `evaluation_report` draws and logs: the test plots, in MLflow and in the asset's page."""

import tempfile
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np

from fraud_assets.defs.assets._metadata import image
from fraud_core import plots


def log_plots(
    y: np.ndarray, scores: np.ndarray, figures: dict[str, float], importance: dict[str, float]
) -> dict[str, dg.MarkdownMetadataValue]:
    """The four test plots, logged to the active MLflow run and returned as metadata images."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pngs = {
            "Precision-recall curve": plots.pr_curve(
                y,
                scores,
                figures["average_precision"],
                figures["threshold"],
                folder / "pr_curve.png",
            ),
            "ROC curve": plots.roc(y, scores, figures["roc_auc"], folder / "roc_curve.png"),
            "Scores by class": plots.score_distribution(
                y, scores, figures["threshold"], folder / "score_distribution.png"
            ),
            "Feature importance": plots.feature_importance(
                importance, folder / "feature_importance.png"
            ),
        }
        for png in pngs.values():
            mlflow.log_artifact(str(png), artifact_path="plots")
        return {f"plot_{p.stem}": image(p, title) for title, p in pngs.items()}


def confusion_rows(figures: dict[str, float]) -> dict[str, dict[str, int]]:
    """The confusion matrix at the threshold, as rows of a metadata table."""
    return {
        "actual fraud": {
            "predicted fraud": int(figures["tp"]),
            "predicted legit": int(figures["fn"]),
        },
        "actual legit": {
            "predicted fraud": int(figures["fp"]),
            "predicted legit": int(figures["tn"]),
        },
    }
