"""Evaluation plots as PNG files: PR curve, ROC curve, score distributions, feature importance."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np
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
