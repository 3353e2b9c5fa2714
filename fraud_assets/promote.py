"""Promotion: should the challenger replace production? And the `fraud-models` command.

The rule (DESIGN.md, "Promotion protocol"): both models are scored on the same time-ordered test
rows; the challenger must clear an absolute quality floor, beat the champion's average precision
by a margin with a paired bootstrap confident the gain is real, and regress no guard metric
beyond its tolerance. The first model promotes when it clears the floor.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fraud_assets.evaluate import paired_bootstrap_ap


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


# -- the command line ---------------------------------------------------------------------------


def _print(data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def main(argv: list[str] | None = None) -> int:
    """`fraud-models status | history | rollback [--to VERSION]`."""
    from fraud_assets.bundle import BundleError
    from fraud_assets.settings import PlatformSettings
    from fraud_assets.store import ModelStore, StoreError

    settings = PlatformSettings()
    parser = argparse.ArgumentParser(prog="fraud-models", description=main.__doc__)
    parser.add_argument("--models-dir", default=str(settings.models_dir), help="models root")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="print what is in production")
    sub.add_parser("history", help="list the backups a rollback can go to")
    rollback = sub.add_parser("rollback", help="put the previous backup back in production")
    rollback.add_argument("--to", dest="to_version", help="a backed-up version (default: previous)")
    rollback.add_argument(
        "--no-registry", action="store_true", help="do not move the MLflow alias 'champion'"
    )
    args = parser.parse_args(argv)
    store = ModelStore(args.models_dir)
    try:
        if args.command == "status":
            # Only the manifest is read here: the model files are loaded once they are verified.
            if store.current_version() is None:
                print(f"no production model in {store.root}", file=sys.stderr)
                return 1
            model = store.load_production(verify=True)
            assert model is not None
            manifest = model.manifest
            _print(
                {
                    "path": str(store.production.resolve()),
                    "verified": True,
                    **{k: manifest.get(k) for k in _STATUS_KEYS},
                    "promotion_reason": manifest.get("promotion", {}).get("reason"),
                }
            )
        elif args.command == "history":
            current = store.current_version()
            for path, manifest in store.list_backups():
                mark = "  (production)" if manifest["model_version"] == current else ""
                ap = manifest.get("metrics", {}).get("average_precision", float("nan"))
                print(f"{manifest['model_version']}  AP={ap:.4f}  {path}{mark}")
        else:
            published = store.rollback(args.to_version)
            print(f"production: {published.previous_version} -> {published.version}")
            if not args.no_registry:
                return _move_alias(store, settings)
    except (StoreError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


_STATUS_KEYS = (
    "model_version",
    "mlflow_run_id",
    "registered_model",
    "data_fingerprint",
    "data_source",
    "threshold",
    "metrics",
    "created_at",
)


def _move_alias(store: Any, settings: Any) -> int:
    from fraud_assets import tracking

    manifest = store.load_production(verify=False).manifest
    registered = manifest.get("registered_model") or {}
    if not registered.get("version"):
        print("no MLflow registry entry in the manifest; alias left as it is")
        return 0
    try:
        tracking.set_champion(
            settings.mlflow_tracking_uri, registered["name"], registered["version"]
        )
    except Exception as exc:  # any tracking failure is reported; the files stay rolled back
        print(
            f"error: production rolled back, but the MLflow alias 'champion' was not moved: {exc}",
            file=sys.stderr,
        )
        return 1
    print(f"MLflow: {registered['name']}@champion -> version {registered['version']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
