"""The one graph on the card-transactions contract: features, delay-gapped splits, CP@100, bundle.

A small synthetic card set (the Handbook's simulator: 250 customers, 500 terminals, 60 days,
~28,000 transactions) runs through the same assets and checks as the Kaggle data.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from fraud_assets.definitions import ASSETS, CHECKS
from fraud_core.bundle import load_bundle
from fraud_core.cards.definition import DEFAULT, US_PER_DAY
from fraud_core.cards.splits import HISTORY_COLUMNS
from fraud_core.cards.synthetic import generate
from fraud_core.data import Splits
from fraud_core.store import ModelStore
from tests.conftest import SMALL_CARDS, make_resources
from tests.fraud_assets.test_pipeline import checks, metadata
from tests.fraud_assets.trained import Trained, materialize

CP = "card_precision_top_100"


def test_the_graph_trains_evaluates_and_promotes_a_cards_model(trained_cards: Trained) -> None:
    result = trained_cards.result
    assert result.success
    assert len(checks(result)) == 7 and all(e.passed for e in checks(result).values())

    raw = metadata(result, "raw_transactions")
    assert raw["contract"] == "cards" and raw["data_source"] == "synthetic"
    assert raw["customers"] <= SMALL_CARDS[0] and raw["terminals"] <= SMALL_CARDS[1]

    split_meta = metadata(result, "transaction_splits")
    assert split_meta["contract"] == "cards"
    assert split_meta["feature_definition"]["feature_names"] == list(DEFAULT.feature_names)
    assert split_meta["delay_gap_rows"] > 0
    in_splits = sum(split_meta[f"{name}_rows"] for name in ("train", "validation", "test"))
    assert in_splits + split_meta["delay_gap_rows"] == raw["rows"]
    splits: Splits = result.output_for_node("transaction_splits")
    # No row of the label delay before the test period is in any split.
    test_start = splits.test["tx_us"].min() // US_PER_DAY
    assert splits.validation["tx_us"].max() // US_PER_DAY < test_start - DEFAULT.delay_days

    report = metadata(result, "evaluation_report")
    assert 0.0 < report[CP] <= 1.0
    # Above the cards floor (AP 0.5, ROC AUC 0.8): the Kaggle floor's AUC 0.9 is not for cards.
    assert report["average_precision"] > 0.5 and report["roc_auc"] > 0.8
    days = splits.test["tx_us"] // US_PER_DAY
    assert report["card_precision_per_day"].count("\n| 2018-") == days.nunique()

    model = metadata(result, "fraud_model")
    client = MlflowClient(trained_cards.resources["mlflow_tracking"].tracking_uri)
    run = client.get_run(model["mlflow_run_id"])
    assert run.data.metrics[f"test_{CP}"] == pytest.approx(report[CP])
    assert run.data.tags["contract"] == "cards" and run.data.params["contract"] == "cards"
    assert run.data.params["features"].split(",") == [*DEFAULT.feature_names, "anomaly_score"]
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/card_precision_per_day.json" in logged
    definition = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/features/definition.json")
    assert definition["delay_days"] == DEFAULT.delay_days

    promoted = metadata(result, "promoted_model")
    assert promoted["decision"] == "promoted"
    assert promoted["reason"].startswith("first model: no production model yet")


def test_the_production_bundle_is_a_cards_bundle_with_its_history(trained_cards: Trained) -> None:
    splits: Splits = trained_cards.result.output_for_node("transaction_splits")
    production = trained_cards.root / "models" / "production"
    model = ModelStore(trained_cards.root / "models").load_production(verify=True)
    assert model is not None and model.contract == "cards"
    assert model.feature_definition == DEFAULT
    assert model.input_fields == DEFAULT.feature_names
    manifest = json.loads((production / "manifest.json").read_text())
    assert manifest["contract"] == "cards" and "history.parquet" in manifest["files"]
    assert manifest["metrics"][CP] == pytest.approx(
        metadata(trained_cards.result, "evaluation_report")[CP]
    )
    history = model.history()
    assert history is not None and tuple(history.columns) == HISTORY_COLUMNS
    assert splits.history is not None
    pd.testing.assert_frame_equal(history, splits.history, check_dtype=False)
    # The history ends with the data: the state scores what comes after it.
    assert history["tx_us"].max() == splits.test["tx_us"].max()
    # The bundle scores the test rows' features as the evaluation did.
    x_test, _ = splits.arrays(splits.test)
    report = trained_cards.result.output_for_node("evaluation_report")
    np.testing.assert_allclose(model.predict_proba(x_test), report.test_scores, atol=1e-9)
    # The MLflow champion is the same model, taking the 15 feature columns by name.
    mlflow.set_tracking_uri(trained_cards.resources["mlflow_tracking"].tracking_uri)
    pyfunc = mlflow.pyfunc.load_model("models:/fraud-detector@champion")
    sample = splits.test[list(DEFAULT.feature_names)].head(50)
    got = np.asarray(pyfunc.predict(sample))
    np.testing.assert_allclose(
        got, load_bundle(production).predict_proba(sample.to_numpy()), atol=1e-9
    )
    assert pyfunc.metadata.get_input_schema().input_names() == list(DEFAULT.feature_names)


def test_a_kaggle_champion_is_replaced_as_a_first_model_saying_why(
    tmp_path: Path, trained: Trained
) -> None:
    """A team that switches to card data: the Kaggle champion cannot score card rows."""
    resources = trained.copy_to(tmp_path)
    kaggle_version = ModelStore(tmp_path / "models").current_version()
    resources = make_resources(tmp_path, contract="cards")
    result = materialize(resources)
    assert result.success
    promoted = metadata(result, "promoted_model")
    assert promoted["decision"] == "promoted"
    assert promoted["reason"].startswith(
        f"first model: production {kaggle_version} is a model of the kaggle contract, "
        "which cannot score these cards transactions"
    )
    store = ModelStore(tmp_path / "models")
    assert store.load_production(verify=True).contract == "cards"  # type: ignore[union-attr]
    # The Kaggle model was backed up: a rollback brings it back.
    assert [m["model_version"] for _, m in store.list_backups()] == [kaggle_version]


# -- bad card inputs -------------------------------------------------------------------------


def handbook_file(tmp_path: Path, frame: pd.DataFrame) -> Path:
    """`frame` written as the Handbook's simulated data is: its names, a scenario column beside."""
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    out = pd.DataFrame(
        {
            "TRANSACTION_ID": frame["transaction_id"],
            "TX_DATETIME": frame["tx_datetime"].astype(str),
            "CUSTOMER_ID": frame["customer_id"],
            "TERMINAL_ID": frame["terminal_id"],
            "TX_AMOUNT": frame["amount"],
            "TX_TIME_SECONDS": (frame["tx_us"] - frame["tx_us"].min()) // 1_000_000,
            "TX_FRAUD": frame["is_fraud"],
            "TX_FRAUD_SCENARIO": frame["fraud_scenario"],
        }
    )
    path = raw / "transactions.csv"
    out.to_csv(path, index=False)
    return path


def small_cards() -> pd.DataFrame:
    return generate(n_customers=150, n_terminals=300, n_days=60, seed=7, with_scenario=True)


def test_bad_card_inputs_are_blocked_naming_column_and_rows(tmp_path: Path) -> None:
    frame = small_cards().astype({"tx_datetime": str, "is_fraud": "int64"})
    frame.loc[5, "transaction_id"] = frame.loc[4, "transaction_id"]  # a duplicate id
    frame.loc[10, "amount"] = -3.5
    frame.loc[12, "tx_datetime"] = "2018-04-31 10:00:00"
    frame.loc[20, "is_fraud"] = 2
    frame = frame.astype({"customer_id": object})
    frame.loc[30, "customer_id"] = None  # an empty field
    path = handbook_file(tmp_path, frame)
    result = materialize(make_resources(tmp_path))
    assert not result.success
    failed = {k: v.description or "" for k, v in checks(result).items() if not v.passed}
    assert set(failed) == {
        "check_raw_transactions_unique_ids",
        "check_raw_transactions_ranges",
        "check_raw_transactions_schema",
        "check_raw_transactions_labels",
        "check_raw_transactions_nulls",
    }
    # Each names the column (by the file's name for it) and the file's lines (row + 2).
    for check, column, line in [
        ("check_raw_transactions_unique_ids", "TRANSACTION_ID", 7),
        ("check_raw_transactions_ranges", "TX_AMOUNT", 12),
        ("check_raw_transactions_schema", "TX_DATETIME", 14),
        ("check_raw_transactions_labels", "TX_FRAUD", 22),
        ("check_raw_transactions_nulls", "CUSTOMER_ID", 32),
    ]:
        assert column in failed[check], failed[check]
        assert f"{path}:{line}" in failed[check], failed[check]
    materialized = {e.asset_key.path[0] for e in result.get_asset_materialization_events()}
    assert materialized == {"labelled_transactions", "raw_transactions"}
    assert not (tmp_path / "models" / "production").exists()


def test_a_handbook_file_loads_as_it_is_and_its_scenario_column_is_ignored(
    tmp_path: Path,
) -> None:
    frame = small_cards()
    handbook_file(tmp_path, frame)
    ingestion = {"labelled_transactions", "raw_transactions", "transaction_splits"}
    selection = [a for a in ASSETS if a.key.path[0] in ingestion]
    result = dg.materialize(
        [*selection, *CHECKS[:2]], resources=make_resources(tmp_path), raise_on_error=False
    )
    assert result.success
    raw = metadata(result, "raw_transactions")
    assert raw["contract"] == "cards" and raw["data_source"] == "real"
    assert raw["ignored_columns"] == ["TX_TIME_SECONDS", "TX_FRAUD_SCENARIO"]
    assert raw["frauds"] == int(frame["is_fraud"].sum())
    splits: Splits = result.output_for_node("transaction_splits")
    columns = set(splits.train.columns)
    assert not columns & {"TX_FRAUD_SCENARIO", "fraud_scenario", "TX_TIME_SECONDS"}
    assert set(DEFAULT.feature_names) <= columns


# -- the loop: card labels sent back, drift of the served features ---------------------------


def log_card_predictions(
    url: str, frame: pd.DataFrame, scores: np.ndarray, features: np.ndarray | None = None
) -> None:
    """Write scored card transactions to the prediction log, as the API does."""
    from api.prediction_log import PredictionLog
    from fraud_core.prediction_log.tables import CardPredictionRow, make_engine

    now = pd.Timestamp.now(tz="UTC").to_pydatetime()
    names = list(DEFAULT.feature_names)
    values = features if features is not None else np.zeros((len(frame), len(names)))
    rows = [
        CardPredictionRow(
            str(r.transaction_id),
            now,
            "v-cards",
            0.5,
            int(r.tx_us),
            str(r.customer_id),
            str(r.terminal_id),
            float(r.amount),
            names,
            [float(v) for v in values[i]],
            float(scores[i]),
            bool(scores[i] >= 0.5),
        )
        for i, r in enumerate(frame.itertuples(index=False))
    ]
    log = PredictionLog(make_engine(url))
    log.record(rows)
    log.close()
    assert log.stats().written == len(rows)


def test_card_labels_sent_back_join_the_next_raw_transactions(tmp_path: Path) -> None:
    from fraud_core.prediction_log import add_card_feedback
    from fraud_core.prediction_log.tables import make_engine

    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    served = generate(n_customers=60, n_terminals=100, n_days=5, seed=11).head(40).copy()
    served["transaction_id"] = [f"served-{i}" for i in range(40)]
    served.loc[0, "transaction_id"] = "5"  # a transaction the synthetic set holds too
    log_card_predictions(url, served, np.full(40, 0.3))
    engine = make_engine(url)
    for i in range(30):
        add_card_feedback(engine, served["transaction_id"][i], "fraud" if i % 3 == 0 else "legit")
    resources = make_resources(tmp_path, contract="cards", prediction_log_url=url)
    result = dg.materialize([*ASSETS[:3], *CHECKS[:2]], resources=resources, raise_on_error=False)
    assert result.success, [e for e in checks(result).values() if not e.passed]
    labelled = metadata(result, "labelled_transactions")
    assert labelled["contract"] == "cards" and labelled["rows"] == 30 and labelled["frauds"] == 10
    raw = metadata(result, "raw_transactions")
    synthetic_rows = len(generate(*SMALL_CARDS, seed=42))
    # Transaction "5" is in the data already: its row (and label) there is kept, not doubled.
    assert raw["feedback_rows"] == 29 and raw["rows"] == synthetic_rows + 29
    value = result.output_for_node("raw_transactions")
    tail = value.tail(29)
    assert tail["transaction_id"].tolist() == [f"served-{i}" for i in range(1, 30)]
    assert tail["is_fraud"].tolist() == [1 if i % 3 == 0 else 0 for i in range(1, 30)]


def test_drift_of_the_served_features_against_the_training_features(
    tmp_path: Path, trained_cards: Trained
) -> None:
    from fraud_assets.definitions import MONITORING_ASSETS, MONITORING_CHECKS

    resources = trained_cards.copy_to(tmp_path)
    splits: Splits = trained_cards.result.output_for_node("transaction_splits")
    model = ModelStore(tmp_path / "models").load_production()
    assert model is not None
    served = splits.test.tail(800)
    x = served[list(DEFAULT.feature_names)].to_numpy()
    log_card_predictions(
        resources["prediction_log"].url, served, model.predict_proba(x), features=x
    )
    result = dg.materialize(
        [*ASSETS[:3], *MONITORING_ASSETS, *MONITORING_CHECKS],
        resources=resources,
        raise_on_error=False,
    )
    drift = metadata(result, "prediction_drift")
    assert drift["contract"] == "cards" and drift["current_rows"] == 800
    assert drift["status"] in {"ok", "warn", "fail"}
    assert "| CUSTOMER_ID_NB_TX_1DAY_WINDOW |" in drift["table"]
    assert "| fraud_probability |" in drift["table"]


def test_drift_is_not_computed_for_a_model_of_the_other_contract(
    tmp_path: Path, trained: Trained
) -> None:
    from fraud_assets.definitions import MONITORING_ASSETS, MONITORING_CHECKS

    trained.copy_to(tmp_path)  # a Kaggle model in production
    resources = make_resources(tmp_path, contract="cards")
    result = dg.materialize(
        [*ASSETS[:3], *MONITORING_ASSETS, *MONITORING_CHECKS],
        resources=resources,
        raise_on_error=False,
    )
    drift = metadata(result, "prediction_drift")
    assert drift["status"] == "not_computed" and "kaggle contract" in drift["message"]
    check = checks(result)["check_prediction_drift"]
    assert not check.passed and "kaggle contract" in (check.description or "")
