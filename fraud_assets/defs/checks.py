"""Blocking asset checks: bad data or a bad model never reaches `promoted_model`."""

from collections.abc import Iterable

import dagster as dg
import pandas as pd

from fraud_assets.defs import constants
from fraud_assets.defs.assets.data import contract_of, raw_transactions
from fraud_assets.defs.assets.model import EvaluationReport
from fraud_assets.defs.resources import PromotionRules
from fraud_core import schema
from fraud_core.cards import schema as card_schema
from fraud_core.contracts import CARDS
from fraud_core.data import Splits

_RAW_CHECKS = {
    "check_raw_transactions_schema": (
        schema.structure_problems,
        "All columns of the contract present and of their type, at least one row",
    ),
    "check_raw_transactions_nulls": (schema.null_problems, "No missing or infinite values"),
    "check_raw_transactions_labels": (schema.label_problems, "The label holds only 0 and 1"),
    "check_raw_transactions_ranges": (
        schema.range_problems,
        "Values within their valid range (times and amounts >= 0)",
    ),
}
UNIQUE_IDS = "check_raw_transactions_unique_ids"
_DESCRIPTIONS = {
    **{name: description for name, (_, description) in _RAW_CHECKS.items()},
    UNIQUE_IDS: "Every transaction_id appears once (card transactions)",
}
#: Which check reports each kind of problem of the card contract (`fraud_core.cards.schema`).
_CARD_CHECK_OF_KIND = {
    "missing_column": "check_raw_transactions_schema",
    "empty": "check_raw_transactions_schema",
    "not_numeric": "check_raw_transactions_schema",
    "datetime": "check_raw_transactions_schema",
    "id": "check_raw_transactions_schema",
    "nulls": "check_raw_transactions_nulls",
    "label": "check_raw_transactions_labels",
    "range": "check_raw_transactions_ranges",
    "duplicate_id": UNIQUE_IDS,
}


def _result(
    context: dg.AssetCheckExecutionContext, name: str, passed: bool, description: str, **metadata
) -> dg.AssetCheckResult:
    """A blocking (ERROR) result; a failure is also logged at ERROR level, so the command line
    shows the reason next to Dagster's own failure message, not only in the event's details."""
    if not passed:
        context.log.error(f"{name} failed: {description}")
    return dg.AssetCheckResult(
        check_name=name,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata=metadata,
    )


def _problems_result(
    context: dg.AssetCheckExecutionContext,
    name: str,
    problems: list[schema.Problem],
    ok: str = "ok",
) -> dg.AssetCheckResult:
    return _result(
        context,
        name,
        not problems,
        "; ".join(p.message for p in problems) or ok,
        columns=dg.MetadataValue.json(sorted({p.column for p in problems if p.column})),
        bad_rows=sum(p.count for p in problems),
        examples=dg.MetadataValue.json([e for p in problems for e in p.examples][:10]),
    )


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(name, asset=raw_transactions, blocking=True, description=description)
        for name, description in _DESCRIPTIONS.items()
    ]
)
def raw_transactions_checks(
    context: dg.AssetCheckExecutionContext, raw_transactions: pd.DataFrame
) -> Iterable[dg.AssetCheckResult]:
    """Schema, nulls, labels, ranges and unique ids of the raw data, with columns and rows.

    Each contract has its own rules (`fraud_core.schema` for Kaggle's fields,
    `fraud_core.cards.schema` for card transactions), reported under the same check names.
    """
    if contract_of(raw_transactions) == CARDS:
        found: dict[str, list[schema.Problem]] = {name: [] for name in _DESCRIPTIONS}
        for problem in card_schema.problems(raw_transactions):
            found[_CARD_CHECK_OF_KIND.get(problem.kind, "check_raw_transactions_schema")].append(
                problem
            )
        for name, problems in found.items():
            yield _problems_result(context, name, problems)
        return
    for name, (find, _) in _RAW_CHECKS.items():
        yield _problems_result(context, name, find(raw_transactions))
    # Kaggle rows have no id: identical rows are legitimate there (the real file holds some).
    yield _problems_result(
        context, UNIQUE_IDS, [], ok="the Kaggle contract has no transaction ids to check"
    )


def training_checks(
    partitions_def: dg.PartitionsDefinition | None = None,
) -> list[dg.AssetChecksDefinition]:
    """The blocking checks of the splits and the report, of each partition where they have one."""

    @dg.asset_check(asset="transaction_splits", blocking=True, partitions_def=partitions_def)
    def check_transaction_splits_min_frauds(
        context: dg.AssetCheckExecutionContext, transaction_splits: Splits
    ) -> dg.AssetCheckResult:
        """Every split holds enough frauds to train, stop early and evaluate on."""
        counts = {name: int(v["frauds"]) for name, v in transaction_splits.summary().items()}
        short = {name: n for name, n in counts.items() if n < constants.MIN_FRAUDS_PER_SPLIT}
        return _result(
            context,
            "check_transaction_splits_min_frauds",
            not short,
            (
                f"too few frauds in column {transaction_splits.label}: "
                + ", ".join(f"{k} has {n}" for k, n in short.items())
                + f" (minimum {constants.MIN_FRAUDS_PER_SPLIT} per split)"
                if short
                else f"at least {constants.MIN_FRAUDS_PER_SPLIT} frauds in every split"
            ),
            **{f"{name}_frauds": n for name, n in counts.items()},
        )

    @dg.asset_check(asset="evaluation_report", blocking=True, partitions_def=partitions_def)
    def check_evaluation_report_quality_floor(
        context: dg.AssetCheckExecutionContext,
        evaluation_report: EvaluationReport,
        promotion_rules: PromotionRules,
    ) -> dg.AssetCheckResult:
        """The model clears the absolute quality floor on the test split."""
        policy = promotion_rules.policy()
        contract = evaluation_report.contract
        failures = policy.floor_failures(evaluation_report.metrics, contract)
        floor_ap, floor_auc = policy.floors(contract)
        return _result(
            context,
            "check_evaluation_report_quality_floor",
            not failures,
            "; ".join(failures) or "above the floor",
            contract=contract,
            average_precision=evaluation_report.metrics["average_precision"],
            roc_auc=evaluation_report.metrics["roc_auc"],
            floor_average_precision=floor_ap,
            floor_roc_auc=floor_auc,
        )

    return [check_transaction_splits_min_frauds, check_evaluation_report_quality_floor]


check_transaction_splits_min_frauds, check_evaluation_report_quality_floor = training_checks()
