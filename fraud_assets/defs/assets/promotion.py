"""The deployment asset: challenger vs production on the same test rows, then publish or keep."""

from typing import Any

import dagster as dg
import numpy as np

from fraud_assets.defs import constants
from fraud_assets.defs.assets._metadata import table
from fraud_assets.defs.assets.model import EvaluationReport, TrainedModel
from fraud_assets.defs.resources import MlflowTracking, ModelStoreResource, PromotionRules
from fraud_core.bundle import BundleError, FraudModel
from fraud_core.cards.definition import TX_US
from fraud_core.cards.evaluate import card_precision_top_k
from fraud_core.cards.splits import features_under
from fraud_core.contracts import CARDS
from fraud_core.data import Splits
from fraud_core.evaluate import ThresholdPolicy, metrics
from fraud_core.promote import decide


@dg.asset(
    group_name="deployment",
    kinds={"mlflow", "python"},
    owners=[constants.OWNER],
    tags={"stage": "deploy"},
)
def promoted_model(
    context: dg.AssetExecutionContext,
    fraud_model: TrainedModel,
    evaluation_report: EvaluationReport,
    transaction_splits: Splits,
    model_store: ModelStoreResource,
    mlflow_tracking: MlflowTracking,
    promotion_rules: PromotionRules,
) -> dg.Output:
    """The production bundle: the challenger if it beats production, else production as it was."""
    store = model_store.store()
    policy = promotion_rules.policy()
    splits = transaction_splits
    x_test, y_test = splits.arrays(splits.test)
    champion_scores = champion_metrics = champion_version = None
    note = ""
    no_champion = "no production model yet"
    try:
        champion = store.load_production(verify=True)
    except BundleError as exc:
        champion, note = None, f" (production bundle unusable, replaced: {exc})"
        context.log.warning(f"production bundle cannot be loaded: {exc}")
    if champion is not None and champion.contract != splits.contract:
        # A team that switched data: the champion's inputs do not exist in these rows.
        champion_version = champion.version
        no_champion = (
            f"production {champion.version} is a model of the {champion.contract} contract, "
            f"which cannot score these {splits.contract} transactions"
        )
        context.log.warning(no_champion + ": the challenger is judged as a first model")
    elif champion is not None:
        champion_version = champion.version
        if champion.feature_definition is not None:
            # A champion of other windows scores its own features of the same test rows.
            x_champion = features_under(splits, champion.feature_definition)
        else:
            x_champion = x_test
        champion_scores = champion.predict_proba(x_champion)
        # The champion keeps its own threshold: it is judged as it serves.
        champion_metrics = metrics(
            y_test,
            champion_scores,
            champion.threshold,
            ThresholdPolicy(**fraud_model.threshold_policy),
        )
        if splits.contract == CARDS:
            precision = card_precision_top_k(
                splits.test, champion_scores, constants.CARD_PRECISION_K
            )
            champion_metrics[f"card_precision_top_{precision.k}"] = precision.mean
    decision = decide(
        y_test,
        evaluation_report.test_scores,
        evaluation_report.metrics,
        champion_scores,
        champion_metrics,
        policy,
        champion_version,
        no_champion_reason=no_champion,
        contract=splits.contract,
    )
    decision.reason += note
    overlap = _trained_into_test(champion, splits)
    if overlap:
        # A backtest of an older week: the champion learnt from these test rows, so the
        # comparison says nothing, and an older model never replaces a newer one.
        decision.promote = False
        decision.reason = f"kept production: {overlap}"
    context.log.info(decision.reason)
    tags: dict[str, Any] = {
        "promotion_decision": "promoted" if decision.promote else "kept_production",
        "promotion_reason": decision.reason,
    }
    production_version = champion_version
    registered: dict[str, str] = {}
    if decision.promote:
        registry_version = mlflow_tracking.register_and_tag(
            fraud_model.model_uri,
            fraud_model.mlflow_run_id,
            {
                "model_version": fraud_model.version,
                "data_fingerprint": fraud_model.data_fingerprint,
            },
        )
        registered = {"name": mlflow_tracking.registered_model_name, "version": registry_version}
        staged = store.stage(
            fraud_model.model,
            {
                "model_version": fraud_model.version,
                "mlflow_run_id": fraud_model.mlflow_run_id,
                "mlflow_model_uri": fraud_model.model_uri,
                "registered_model": registered,
                "data_fingerprint": fraud_model.data_fingerprint,
                "data_source": fraud_model.data_source,
                # Cards: the newest transaction it learnt from (the refit's train + validation).
                **_trained_through(splits),
                "variant": fraud_model.variant,
                "threshold_policy": fraud_model.threshold_policy["kind"],
                "training": fraud_model.training,
                "metrics": evaluation_report.metrics,
                "promotion": decision.as_dict(),
            },
        )
        published = store.publish(staged)
        # The registry follows the files: the alias moves only once production has switched.
        mlflow_tracking.set_champion(registry_version)
        production_version = published.version
        tags["registered_model_version"] = registry_version
        context.log.info(f"published {published.version} (previous: {published.previous_version})")
    mlflow_tracking.set_run_tags(fraud_model.mlflow_run_id, tags)
    comparison = {"challenger": _headline(decision.challenger)}
    if decision.champion is not None:
        comparison[f"production {champion_version}"] = _headline(decision.champion)
    metadata: dict[str, Any] = {
        "decision": "promoted" if decision.promote else "kept production",
        "promoted": decision.promote,
        "reason": decision.reason,
        "challenger_version": fraud_model.version,
        "production_version": production_version or "none",
        "production_path": str(store.production),
        "comparison": table(comparison, "model"),
        "mlflow_run": dg.MetadataValue.url(mlflow_tracking.run_url(fraud_model.mlflow_run_id)),
    }
    if decision.ap_gain is not None:
        metadata["ap_gain"] = decision.ap_gain
        metadata["bootstrap_confidence"] = decision.confidence
    if registered:
        metadata["registered_model_version"] = registered["version"]
    return dg.Output(
        {**decision.as_dict(), "production_version": production_version, **registered},
        metadata=metadata,
    )


def _trained_through(splits: Splits) -> dict[str, int]:
    if splits.contract != CARDS or not len(splits.validation):
        return {}
    newest = max(int(part[TX_US].max()) for part in (splits.train, splits.validation) if len(part))
    return {"trained_through_us": newest}


def _trained_into_test(champion: FraudModel | None, splits: Splits) -> str | None:
    """Why the champion cannot be judged on these test rows (None: it can)."""
    if champion is None or splits.contract != CARDS or not len(splits.test):
        return None
    through = champion.manifest.get("trained_through_us")
    test_from = int(splits.test[TX_US].min())
    if through is None or int(through) < test_from:
        return None
    return (
        f"production {champion.version} was trained on transactions up to "
        f"{_day(int(through))}, inside this test period (from {_day(test_from)}): an older "
        "week's model is evaluated, not published"
    )


def _day(tx_us: int) -> str:
    return str(np.datetime64(tx_us, "us").astype("datetime64[D]"))


def _headline(figures: dict[str, float]) -> dict[str, float]:
    keys = ("average_precision", "roc_auc", "recall_at_precision_90", "threshold")
    shown = {k: float(figures[k]) for k in keys}
    precision = f"card_precision_top_{constants.CARD_PRECISION_K}"
    if precision in figures:
        shown[precision] = float(figures[precision])
    return shown
