"""Promotion: should the challenger replace production? (The `fraud-models` command: `cli`.)

The rule (DESIGN.md, "Promotion protocol"): both models are scored on the same time-ordered test
rows; the challenger must clear an absolute quality floor, beat the champion's average precision
by a margin with a paired bootstrap confident the gain is real, and regress no guard metric
beyond its tolerance. The first model promotes when it clears the floor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fraud_core.contracts import CARDS, KAGGLE
from fraud_core.evaluate import paired_bootstrap_ap


@dataclass(frozen=True)
class PromotionPolicy:
    margin: float = 0.005
    confidence: float = 0.90
    n_resamples: int = 1000
    floor_average_precision: float = 0.50
    floor_roc_auc: float = 0.90
    #: The floor of the card-transactions contract: ranking raw card transactions is harder
    #: than Kaggle's PCA fields (the Fraud-Detection-Handbook's XGBoost reaches ROC AUC 0.869
    #: on its data), so the same AUC floor would refuse the book's own models.
    cards_floor_average_precision: float = 0.50
    cards_floor_roc_auc: float = 0.80
    #: metric -> largest drop from the champion that is tolerated
    guards: dict[str, float] = field(
        default_factory=lambda: {"roc_auc": 0.01, "recall_at_precision_90": 0.10}
    )
    seed: int = 0

    def floors(self, contract: str = KAGGLE) -> tuple[float, float]:
        """(average precision, ROC AUC) a model of `contract` must reach on the test split."""
        if contract == CARDS:
            return self.cards_floor_average_precision, self.cards_floor_roc_auc
        return self.floor_average_precision, self.floor_roc_auc

    def floor_failures(self, metrics: dict[str, float], contract: str = KAGGLE) -> list[str]:
        floor_ap, floor_auc = self.floors(contract)
        failures = []
        if metrics["average_precision"] < floor_ap:
            failures.append(
                f"average_precision {metrics['average_precision']:.4f} < floor {floor_ap:.4f}"
            )
        if metrics["roc_auc"] < floor_auc:
            failures.append(f"roc_auc {metrics['roc_auc']:.4f} < floor {floor_auc:.4f}")
        return failures


@dataclass
class Decision:
    promote: bool
    reason: str
    challenger: dict[str, float]
    champion: dict[str, float] | None = None
    champion_version: str | None = None
    ap_gain: float | None = None
    confidence: float | None = None
    gain_interval: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    y: np.ndarray,
    challenger_scores: np.ndarray,
    challenger_metrics: dict[str, float],
    champion_scores: np.ndarray | None,
    champion_metrics: dict[str, float] | None,
    policy: PromotionPolicy,
    champion_version: str | None = None,
    no_champion_reason: str = "no production model yet",
    contract: str = KAGGLE,
) -> Decision:
    """Apply the promotion rule to two models' scores on the same test rows.

    Without champion scores the challenger is judged as a first model (the floor of its
    `contract` alone);
    `no_champion_reason` says why (e.g. production is a model of the other data contract, which
    cannot score these rows).
    """
    failures = policy.floor_failures(challenger_metrics, contract)
    if failures:
        return Decision(
            False, "below the quality floor: " + "; ".join(failures), challenger_metrics
        )
    if champion_scores is None or champion_metrics is None:
        return Decision(
            True,
            f"first model: {no_champion_reason} and the challenger clears the floor",
            challenger_metrics,
            champion_version=champion_version,
        )
    if len(champion_scores) != len(challenger_scores):
        raise ValueError("challenger and champion must be scored on the same rows")
    gain = challenger_metrics["average_precision"] - champion_metrics["average_precision"]
    deltas = paired_bootstrap_ap(
        y, challenger_scores, champion_scores, policy.n_resamples, policy.seed
    )
    confidence = float(np.mean(deltas > policy.margin))
    interval = (float(np.quantile(deltas, 0.05)), float(np.quantile(deltas, 0.95)))
    common = {
        "challenger": challenger_metrics,
        "champion": champion_metrics,
        "champion_version": champion_version,
        "ap_gain": gain,
        "confidence": confidence,
        "gain_interval": interval,
    }
    if gain <= policy.margin:
        reason = (
            f"kept production {champion_version}: AP gain {gain:+.4f} "
            f"is not above the margin {policy.margin:.4f}"
        )
        return Decision(False, reason, **common)  # type: ignore[arg-type]
    if confidence < policy.confidence:
        reason = (
            f"kept production {champion_version}: AP gain {gain:+.4f} is not significant "
            f"(bootstrap P(gain > margin) = {confidence:.2f} < {policy.confidence:.2f})"
        )
        return Decision(False, reason, **common)  # type: ignore[arg-type]
    for metric, tolerance in policy.guards.items():
        drop = champion_metrics[metric] - challenger_metrics[metric]
        if drop > tolerance:
            reason = (
                f"kept production {champion_version}: guard {metric} dropped by {drop:.4f} "
                f"(tolerance {tolerance:.4f})"
            )
            return Decision(False, reason, **common)  # type: ignore[arg-type]
    reason = (
        f"promoted: AP {challenger_metrics['average_precision']:.4f} vs "
        f"{champion_metrics['average_precision']:.4f} ({gain:+.4f}, "
        f"P(gain > margin) = {confidence:.2f}), guards held"
    )
    return Decision(True, reason, **common)  # type: ignore[arg-type]
