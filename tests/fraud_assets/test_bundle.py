"""The model bundle: round trip, manifest, and refusal of anything damaged."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fraud_core import synthetic
from fraud_core.bundle import (
    ANOMALY,
    CLASSIFIER,
    MANIFEST,
    BundleError,
    FraudModel,
    load_bundle,
    new_version,
    save_bundle,
)
from fraud_core.data import as_arrays
from fraud_core.features import MODEL_FEATURES
from fraud_core.schema import FEATURE_COLUMNS

MANIFEST_IN: dict[str, Any] = {
    "model_version": "20250102T030405Z-abcdef12",
    "mlflow_run_id": "abcdef1234567890",
    "data_fingerprint": "f" * 64,
    "metrics": {"average_precision": 0.81, "roc_auc": 0.97, "tp": 40.0},
}


@pytest.fixture(scope="module")
def raw() -> np.ndarray:
    x, _ = as_arrays(synthetic.generate(n_rows=500, fraud_rate=0.05, seed=21))
    return x


@pytest.fixture(scope="module")
def saved(
    tmp_path_factory: pytest.TempPathFactory, make_fraud_model: Callable[..., FraudModel]
) -> tuple[FraudModel, Path]:
    """One bundle written once; tests that damage it work on a copy."""
    model = make_fraud_model(seed=1, threshold=0.37)
    directory = save_bundle(model, tmp_path_factory.mktemp("bundle") / "b", dict(MANIFEST_IN))
    return model, directory


@pytest.fixture
def bundle_copy(saved: tuple[FraudModel, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved[1], tmp_path / "copy"))


def test_round_trip_gives_identical_probabilities(
    saved: tuple[FraudModel, Path], raw: np.ndarray
) -> None:
    model, directory = saved
    loaded = load_bundle(directory)
    expected = model.predict_proba(raw)
    np.testing.assert_array_equal(loaded.predict_proba(raw), expected)
    assert loaded.threshold == 0.37
    assert loaded.version == MANIFEST_IN["model_version"]
    # The probabilities are not all one value: the comparison above means something.
    assert np.ptp(expected) > 0.1


def test_manifest_records_what_the_model_is(saved: tuple[FraudModel, Path]) -> None:
    _, directory = saved
    manifest = json.loads((directory / MANIFEST).read_text())
    for key in ("model_version", "mlflow_run_id", "data_fingerprint"):
        assert manifest[key] == MANIFEST_IN[key]
    assert manifest["metrics"] == MANIFEST_IN["metrics"]
    assert manifest["threshold"] == 0.37
    assert manifest["features"] == list(MODEL_FEATURES)
    assert manifest["input_fields"] == list(FEATURE_COLUMNS)
    assert set(manifest["files"]) == {CLASSIFIER, ANOMALY}
    for name, digest in manifest["files"].items():
        assert digest == hashlib.sha256((directory / name).read_bytes()).hexdigest()
    assert 0.0 <= manifest["smoke_test"]["fraud_probability"] <= 1.0
    assert load_bundle(directory).manifest == manifest


def test_save_refuses_an_existing_directory(saved: tuple[FraudModel, Path], tmp_path: Path) -> None:
    model, _ = saved
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError):
        save_bundle(model, tmp_path / "taken", dict(MANIFEST_IN))


def test_a_changed_byte_in_the_classifier_is_refused(bundle_copy: Path) -> None:
    path = bundle_copy / CLASSIFIER
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=CLASSIFIER):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("name", [CLASSIFIER, ANOMALY])
def test_a_missing_file_is_refused(bundle_copy: Path, name: str) -> None:
    (bundle_copy / name).unlink()
    with pytest.raises(BundleError, match=name):
        load_bundle(bundle_copy)


def test_a_corrupted_manifest_is_refused(bundle_copy: Path) -> None:
    path = bundle_copy / MANIFEST
    path.write_text(path.read_text()[:-20])
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle_copy)


def test_a_manifest_without_files_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / MANIFEST).write_text(json.dumps({"model_version": "x"}))
    with pytest.raises(BundleError, match="files"):
        load_bundle(bundle_copy)


def test_a_missing_manifest_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / MANIFEST).unlink()
    with pytest.raises(BundleError, match=MANIFEST):
        load_bundle(bundle_copy)


def test_a_missing_bundle_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no model bundle"):
        load_bundle(tmp_path / "nothing")


def test_a_wrong_smoke_prediction_is_refused(bundle_copy: Path) -> None:
    path = bundle_copy / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["smoke_test"]["fraud_probability"] += 0.01
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="smoke"):
        load_bundle(bundle_copy)
    # Without verification, a bundle is loaded as it is.
    assert load_bundle(bundle_copy, verify=False).version == MANIFEST_IN["model_version"]


def test_predict_record_matches_predict_proba(
    saved: tuple[FraudModel, Path], raw: np.ndarray
) -> None:
    model = load_bundle(saved[1])
    probabilities = model.predict_proba(raw[:5])
    for row, expected in zip(raw[:5], probabilities, strict=True):
        record = dict(zip(FEATURE_COLUMNS, row.tolist(), strict=True))
        assert model.predict_record(record) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(KeyError, match="Amount"):
        model.predict_record({k: v for k, v in record.items() if k != "Amount"})


def test_new_version_is_sortable_and_names_the_run() -> None:
    early = new_version("abcdef1234567890", datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    late = new_version(None, datetime(2025, 1, 2, 3, 4, 6, tzinfo=UTC))
    assert early == "20250102T030405Z-abcdef12"
    assert late == "20250102T030406Z-local"
    assert early < late


# -- the card-transactions contract ---------------------------------------------------------


@pytest.fixture(scope="module")
def cards_saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[FraudModel, Path]:
    """A cards model trained on the features of a small simulated set, saved once."""
    import xgboost as xgb

    from fraud_core.cards.definition import FeatureDefinition
    from fraud_core.cards.features import feature_matrix
    from fraud_core.cards.splits import HISTORY_COLUMNS
    from fraud_core.cards.synthetic import generate
    from fraud_core.features import AnomalyScorer, model_features

    definition = FeatureDefinition(customer_windows_days=(1, 14), terminal_windows_days=(7,))
    frame = generate(n_customers=80, n_terminals=150, n_days=30, seed=4)
    x = feature_matrix(frame, definition)
    anomaly = AnomalyScorer.fit(x, n_estimators=20, seed=0)
    classifier = xgb.XGBClassifier(n_estimators=15, max_depth=3, n_jobs=1)
    classifier.fit(model_features(x, anomaly.score(x)), frame["is_fraud"])
    model = FraudModel(
        anomaly,
        classifier.get_booster(),
        0.4,
        contract="cards",
        feature_definition=definition,
        history_frame=frame[list(HISTORY_COLUMNS)].tail(500).reset_index(drop=True),
    )
    directory = save_bundle(model, tmp_path_factory.mktemp("cards") / "b", dict(MANIFEST_IN))
    return model, directory


def test_a_cards_bundle_round_trips_its_definition_and_history(
    cards_saved: tuple[FraudModel, Path],
) -> None:
    model, directory = cards_saved
    loaded = load_bundle(directory)
    assert loaded.contract == "cards" and loaded.feature_definition == model.feature_definition
    assert loaded.input_fields == model.feature_definition.feature_names  # type: ignore[union-attr]
    assert len(loaded.input_fields) == 3 + 2 * 2 + 2 * 1
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["contract"] == "cards" and set(manifest["files"]) == {
        CLASSIFIER,
        ANOMALY,
        "history.parquet",
    }
    assert manifest["feature_definition"]["terminal_windows_days"] == [7]
    history = loaded.history()
    assert history is not None and model.history_frame is not None
    assert history.equals(model.history_frame)
    rows = np.random.default_rng(0).uniform(0, 50, size=(20, len(loaded.input_fields)))
    np.testing.assert_array_equal(loaded.predict_proba(rows), model.predict_proba(rows))
    with pytest.raises(ValueError, match=r"\(n, 9\) matrix of cards"):
        loaded.predict_proba(rows[:, :5])


def test_a_cards_bundle_with_an_altered_history_is_refused(
    cards_saved: tuple[FraudModel, Path], tmp_path: Path
) -> None:
    import pandas as pd

    copy = Path(shutil.copytree(cards_saved[1], tmp_path / "copy"))
    history = pd.read_parquet(copy / "history.parquet")
    history.loc[0, "is_fraud"] = 1 - history.loc[0, "is_fraud"]
    history.to_parquet(copy / "history.parquet", index=False)
    with pytest.raises(BundleError, match=r"history\.parquet"):
        load_bundle(copy)
