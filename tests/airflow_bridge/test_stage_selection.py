"""The Airflow stages split Dagster's `weekly_retrain_job` exactly, in dependency order.

Unit tier: the code location is loaded in this process (no server). The stages name assets by
their keys in `airflow_bridge.pipeline`, which cannot import Dagster; this ties the two, so an
asset renamed in one place only fails here rather than at 02:00 on a Sunday.
"""

from __future__ import annotations

import dataclasses

import pytest

from airflow_bridge import pipeline
from airflow_bridge.dagster_results import JobShape


@pytest.fixture(scope="module")
def job_assets() -> dict[str, set[str]]:
    """Each asset of the job's resolved selection -> the assets it depends on."""
    from fraud_assets.definitions import defs

    layer = defs.resolve_job_def(pipeline.JOB_NAME).asset_layer
    graph = layer.asset_graph
    return {
        key.to_user_string(): {parent.to_user_string() for parent in graph.get(key).parent_keys}
        for key in layer.selected_asset_keys
    }


def test_the_stages_are_the_job_split_in_dependency_order(job_assets: dict[str, set[str]]) -> None:
    assert pipeline.stage_problems(pipeline.STAGES, job_assets) == []
    selected = [asset for stage in pipeline.STAGES for asset in stage.assets]
    assert sorted(selected) == sorted(job_assets)
    # The data, the model, its evaluation and the promotion: the job holds all four stages.
    assert {"raw_transactions", "fraud_model", "evaluation_report", "promoted_model"} <= set(
        job_assets
    )


def test_a_key_renamed_in_one_place_only_is_caught(job_assets: dict[str, set[str]]) -> None:
    validate, train, evaluate, deploy = pipeline.STAGES
    renamed = dataclasses.replace(train, assets=("anomaly_scores", "fraud_classifier"))
    assert pipeline.stage_problems((validate, renamed, evaluate, deploy), job_assets) == [
        "weekly_retrain_job holds fraud_model, which no stage selects",
    ]
    lost = dataclasses.replace(deploy, assets=("promoted_models",))
    assert pipeline.stage_problems((validate, train, evaluate, lost), job_assets) == [
        "deploy_if_better selects nothing weekly_retrain_job holds",
        "weekly_retrain_job holds promoted_model, which no stage selects",
    ]
    dropped = dataclasses.replace(validate, assets=("raw_transactions", "transaction_splits"))
    assert pipeline.stage_problems((dropped, train, evaluate, deploy), job_assets) == [
        "weekly_retrain_job holds labelled_transactions, which no stage selects"
    ]


def test_two_stages_with_one_asset_or_out_of_order_are_caught(
    job_assets: dict[str, set[str]],
) -> None:
    validate, train, evaluate, deploy = pipeline.STAGES
    twice = dataclasses.replace(evaluate, assets=("evaluation_report", "fraud_model"))
    assert pipeline.stage_problems((validate, train, twice, deploy), job_assets) == [
        "fraud_model is in two stages: train and evaluate_and_compare"
    ]
    swapped = pipeline.stage_problems((validate, evaluate, train, deploy), job_assets)
    assert swapped == [
        "evaluation_report (evaluate_and_compare) depends on fraud_model, which the later "
        "stage train materializes"
    ]


def test_the_stages_split_the_card_contracts_weekly_job() -> None:
    """Card data: the weekly job has no raw_transactions or labels (daily_cards_job's)."""
    from fraud_assets.definitions import build_defs

    layer = build_defs("cards").resolve_job_def(pipeline.JOB_NAME).asset_layer
    graph = layer.asset_graph
    cards = {
        key.to_user_string(): {parent.to_user_string() for parent in graph.get(key).parent_keys}
        for key in layer.selected_asset_keys
    }
    assert pipeline.stage_problems(pipeline.STAGES, cards) == []
    shape = JobShape(frozenset(cards), ("2018-05-20", "2018-05-27"))
    assert [stage.selection(shape) for stage in pipeline.STAGES] == [
        ["transaction_splits"],
        ["anomaly_scores", "fraud_model"],
        ["evaluation_report"],
        ["promoted_model"],
    ]
    assert [stage.brings_days for stage in pipeline.STAGES] == [True, False, False, False]
