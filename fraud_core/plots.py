"""Evaluation plots as PNG files: PR curve, ROC curve, score distributions, feature importance.

Also drift: reference against current histograms of the columns that moved most.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

_DPI = 80


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def pr_curve(y: np.ndarray, scores: np.ndarray, ap: float, threshold: float, path: Path) -> Path:
    precision, recall, thresholds = precision_recall_curve(y, scores)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(recall, precision, label=f"AP = {ap:.3f}")
    at = int(np.searchsorted(thresholds, threshold).clip(0, len(thresholds) - 1))
    ax.scatter([recall[at]], [precision[at]], color="red", zorder=3, label="decision threshold")
    ax.set(xlabel="Recall", ylabel="Precision", title="Precision-recall (test)", ylim=(0, 1.02))
    ax.legend(loc="lower left")
    return _save(fig, path)


def roc(y: np.ndarray, scores: np.ndarray, auc: float, path: Path) -> Path:
    fpr, tpr, _ = roc_curve(y, scores)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(fpr, tpr, label=f"ROC AUC = {auc:.4f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC (test)")
    ax.legend(loc="lower right")
    return _save(fig, path)


def score_distribution(y: np.ndarray, scores: np.ndarray, threshold: float, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4))
    bins = np.linspace(0, 1, 51).tolist()
    ax.hist(scores[y == 0], bins=bins, alpha=0.6, density=True, label="legit", log=True)
    ax.hist(scores[y == 1], bins=bins, alpha=0.6, density=True, label="fraud", log=True)
    ax.axvline(threshold, color="red", linestyle="--", label="threshold")
    ax.set(xlabel="Fraud probability", ylabel="Density (log)", title="Scores by class (test)")
    ax.legend()
    return _save(fig, path)


def feature_importance(importance: dict[str, float], path: Path, top: int = 15) -> Path:
    items = sorted(importance.items(), key=lambda kv: kv[1])[-top:]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set(xlabel="Gain", title="Feature importance (XGBoost gain)")
    return _save(fig, path)


def anomaly_by_class(y: np.ndarray, anomaly: np.ndarray, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4))
    bins = np.linspace(float(anomaly.min()), float(anomaly.max()), 51).tolist()
    ax.hist(anomaly[y == 0], bins=bins, alpha=0.6, density=True, label="legit")
    ax.hist(anomaly[y == 1], bins=bins, alpha=0.6, density=True, label="fraud")
    ax.set(xlabel="IsolationForest anomaly score", ylabel="Density", title="Anomaly score by class")
    ax.legend()
    return _save(fig, path)


def drift_histograms(
    reference: pd.DataFrame, current: pd.DataFrame, psi: Mapping[str, float], path: Path
) -> Path:
    """Reference vs current histograms of each column of `psi` (in its order), PSI in the title.

    The frames hold the compared columns (`fraud_core.drift.comparable` makes them from raw
    fields); `psi` is typically `DriftReport.worst(k)`.
    """
    if not psi:
        raise ValueError("no columns to plot")
    ncols = min(3, len(psi))
    nrows = math.ceil(len(psi) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3 * nrows), squeeze=False)
    for ax, (name, value) in zip(axes.flat, psi.items(), strict=False):
        ref = reference[name].to_numpy(np.float64)
        cur = current[name].to_numpy(np.float64)
        both = np.concatenate([ref, cur])
        both = both[np.isfinite(both)]
        # Shared bins over the bulk of both samples: one far outlier (amounts have a long tail)
        # would otherwise squeeze everything else into a single bar.
        low, high = np.quantile(both, [0.005, 0.995])
        bins = np.linspace(low, high if high > low else low + 1.0, 41).tolist()
        ax.hist(ref, bins=bins, alpha=0.55, density=True, label="reference")
        ax.hist(cur, bins=bins, alpha=0.55, density=True, label="current")
        ax.set(title=f"{name} (PSI {value:.3f})", ylabel="Density")
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(psi) :]:
        ax.set_visible(False)
    return _save(fig, path)
