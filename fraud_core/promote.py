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

from fraud_core.evaluate import paired_bootstrap_ap


@dataclass(frozen=True)
class PromotionPolicy:
    margin: float = 0.005
    confidence: float = 0.90
    n_resamples: int = 1000
    floor_average_precision: float = 0.50
    floor_roc_auc: float = 0.90
    #: metric -> largest drop from the champion that is tolerated
    guards: dict[str, float] = field(
        default_factory=lambda: {"roc_auc": 0.01, "recall_at_precision_90": 0.10}
    )
    seed: int = 0

    def floor_failures(self, metrics: dict[str, float]) -> list[str]:
        failures = []
        if metrics["average_precision"] < self.floor_average_precision:
            failures.append(
                f"average_precision {metrics['average_precision']:.4f} "
                f"< floor {self.floor_average_precision:.4f}"
            )
        if metrics["roc_auc"] < self.floor_roc_auc:
            failures.append(f"roc_auc {metrics['roc_auc']:.4f} < floor {self.floor_roc_auc:.4f}")
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
) -> Decision:
    """Apply the promotion rule to two models' scores on the same test rows."""
    failures = policy.floor_failures(challenger_metrics)
    if failures:
        return Decision(
            False, "below the quality floor: " + "; ".join(failures), challenger_metrics
        )
    if champion_scores is None or champion_metrics is None:
        return Decision(
            True,
            "first model: no production model yet and the challenger clears the floor",
            challenger_metrics,
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
