"""The model bundle: everything from a transaction to a fraud probability, plus its manifest.

A bundle is a directory holding `classifier.ubj` (XGBoost's own binary format), `anomaly.npz` (the
IsolationForest's trees as plain arrays: loading a bundle unpickles nothing) and `manifest.json`
(contract, version, MLflow run, data fingerprint, features, threshold, metrics, the sha256 of every
file and a smoke prediction to re-check on load). The API loads nothing else.

The model's input depends on the contract it was trained on (`manifest["contract"]`):
- `kaggle`: the 30 raw fields (`Time`, `V1`…`V28`, `Amount`), turned into features here;
- `cards`: the behavioural features of `fraud_core.cards.definition` (computed offline for
  training, from the online state when serving), whose definition the manifest records. Such a
  bundle also holds `history.parquet`: the labelled transactions of the last retention period of
  its training data, which the serving state starts from.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from fraud_core.cards.definition import FeatureDefinition
from fraud_core.contracts import CARDS, CONTRACTS, KAGGLE
from fraud_core.features import (
    ANOMALY_FEATURE,
    MODEL_FEATURES,
    AnomalyScorer,
    CompiledForest,
    base_features,
    model_features,
)
from fraud_core.schema import FEATURE_COLUMNS

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CLASSIFIER = "classifier.ubj"
ANOMALY = "anomaly.npz"
HISTORY = "history.parquet"
#: A fixed transaction scored at save time and again at every load.
SMOKE_INPUT: tuple[float, ...] = (3_600.0, *([0.5] * 28), 42.0)


def smoke_input(contract: str, definition: FeatureDefinition | None) -> tuple[float, ...]:
    """The smoke transaction of a contract: for cards, a plausible behavioural feature row."""
    if contract == KAGGLE:
        return SMOKE_INPUT
    assert definition is not None
    values = {"TX_AMOUNT": 42.0, "TX_DURING_WEEKEND": 0.0, "TX_DURING_NIGHT": 1.0}
    for name in definition.feature_names:
        if name.startswith("CUSTOMER_ID_NB_TX") or name.startswith("TERMINAL_ID_NB_TX"):
            values[name] = 3.0
        elif name.startswith("CUSTOMER_ID_AVG_AMOUNT"):
            values[name] = 40.0
        elif name.startswith("TERMINAL_ID_RISK"):
            values[name] = 0.0
    return tuple(values[name] for name in definition.feature_names)


class BundleError(RuntimeError):
    """A bundle that is missing, incomplete, corrupt or does not predict as recorded."""


@dataclass
class FraudModel:
    """The served model: anomaly feature plus classifier, from its input fields to a probability.

    `input_fields` says what a row of the input matrix holds: the 30 Kaggle fields, or (contract
    `cards`) the behavioural features of `feature_definition`.
    """

    anomaly: AnomalyScorer
    booster: xgb.Booster
    threshold: float
    manifest: dict[str, Any] = field(default_factory=dict)
    contract: str = KAGGLE
    #: The behavioural features' definition (contract `cards` only).
    feature_definition: FeatureDefinition | None = None
    #: The labelled transactions the serving state starts from (contract `cards` only): given
    #: when training, read from the bundle's `history.parquet` on demand once loaded.
    history_frame: pd.DataFrame | None = None
    bundle_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.contract not in CONTRACTS:
            raise ValueError(f"unknown contract {self.contract!r}: one of {CONTRACTS}")
        if (self.contract == CARDS) != (self.feature_definition is not None):
            raise ValueError("a feature definition goes with the cards contract, and only there")

    @property
    def input_fields(self) -> tuple[str, ...]:
        """The columns of the matrix `predict_proba` takes, in order."""
        if self.feature_definition is None:
            return FEATURE_COLUMNS
        return self.feature_definition.feature_names

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The classifier's input columns: the base features and the anomaly score."""
        if self.feature_definition is None:
            return MODEL_FEATURES
        return (*self.feature_definition.feature_names, ANOMALY_FEATURE)

    def base(self, rows: np.ndarray) -> np.ndarray:
        """The features the anomaly forest and the classifier share, from input rows."""
        if self.feature_definition is None:
            return base_features(rows)
        rows = np.asarray(rows, dtype=np.float64)
        width = len(self.input_fields)
        if rows.ndim != 2 or rows.shape[1] != width:
            raise ValueError(
                f"expected an (n, {width}) matrix of {self.contract}, got {rows.shape}"
            )
        return rows

    def features(self, raw: np.ndarray) -> np.ndarray:
        """The classifier's input (`feature_names`) for a matrix of `input_fields` rows."""
        base = self.base(raw)
        return model_features(base, self.anomaly.score(base))

    def predict_proba(self, raw: np.ndarray) -> np.ndarray:
        """Fraud probabilities for a matrix of rows in `input_fields` order."""
        return np.asarray(self.booster.inplace_predict(self.features(raw)), dtype=np.float64)

    def history(self) -> pd.DataFrame | None:
        """The labelled history the online state starts from; None for the Kaggle contract."""
        if self.history_frame is not None or self.contract != CARDS:
            return self.history_frame
        if self.bundle_dir is None or not (self.bundle_dir / HISTORY).is_file():
            return None
        return pd.read_parquet(self.bundle_dir / HISTORY)

    def contributions(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """XGBoost's per-feature contributions (log-odds, SHAP values) and the bias, per row."""
        # XGBoost works in float32. A DMatrix refuses a value beyond float32's range, which
        # `inplace_predict` takes as infinite; clipped to that range it takes the same branches.
        limit = float(np.finfo(np.float32).max)
        features = np.clip(self.features(raw), -limit, limit)
        matrix = xgb.DMatrix(features, feature_names=list(self.feature_names))
        contribs = np.asarray(self.booster.predict(matrix, pred_contribs=True))
        return contribs[:, :-1], contribs[:, -1]

    def predict_record(self, record: dict[str, float]) -> float:
        """The fraud probability of one row given as an input field -> value mapping."""
        row = np.array([[record[name] for name in self.input_fields]], dtype=np.float64)
        return float(self.predict_proba(row)[0])

    @property
    def version(self) -> str:
        return str(self.manifest.get("model_version", "unversioned"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def new_version(run_id: str | None, now: datetime | None = None) -> str:
    """A sortable, unique version name: UTC time plus the MLflow run's first characters."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}Z-{(run_id or 'local')[:8]}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_bundle(model: FraudModel, directory: Path, manifest: dict[str, Any]) -> Path:
    """Write the bundle files and a manifest with their checksums into a new `directory`."""
    directory.mkdir(parents=True, exist_ok=False)
    model.booster.save_model(directory / CLASSIFIER)
    model.anomaly.forest.save(directory / ANOMALY)
    files = [CLASSIFIER, ANOMALY]
    history = model.history()
    if history is not None:
        history.to_parquet(directory / HISTORY, index=False)
        files.append(HISTORY)
    smoke_row = smoke_input(model.contract, model.feature_definition)
    smoke = model.predict_proba(np.array([smoke_row]))[0]
    contract: dict[str, Any] = {"contract": model.contract}
    if model.feature_definition is not None:
        contract["feature_definition"] = model.feature_definition.as_dict()
    full = {
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **contract,
        "input_fields": list(model.input_fields),
        "features": list(model.feature_names),
        "threshold": model.threshold,
        **manifest,
        "smoke_test": {"input": list(smoke_row), "fraud_probability": float(smoke)},
        "files": {name: sha256_file(directory / name) for name in files},
    }
    (directory / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=True, default=str))
    for name in (*files, MANIFEST):
        _fsync(directory / name)
    _fsync(directory)
    model.manifest = full
    return directory


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise BundleError(f"{directory}: no {MANIFEST}") from exc
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or "files" not in manifest:
        raise BundleError(f"{path}: not a bundle manifest (no 'files')")
    return manifest


def verify_checksums(directory: Path, manifest: dict[str, Any]) -> None:
    for name, expected in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise BundleError(f"{directory}: {name} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(f"{path}: sha256 {actual[:12]}… does not match manifest")


def load_bundle(directory: Path | str, verify: bool = True) -> FraudModel:
    """Load a bundle; with `verify`, check every checksum and re-run the smoke prediction."""
    directory = Path(directory)
    if not directory.exists():
        raise BundleError(f"{directory}: no model bundle there")
    manifest = read_manifest(directory)
    if verify:
        verify_checksums(directory, manifest)
    try:
        booster = xgb.Booster()
        booster.load_model(directory / CLASSIFIER)
        forest = CompiledForest.load(directory / ANOMALY)
    # What a truncated or altered archive raises varies with where the damage is.
    except (
        OSError,
        ValueError,
        EOFError,
        KeyError,
        IndexError,
        TypeError,
        zipfile.BadZipFile,
        xgb.core.XGBoostError,
    ) as exc:
        raise BundleError(f"{directory}: cannot load model files ({exc})") from exc
    contract = str(manifest.get("contract", KAGGLE))  # bundles before the cards contract
    if contract not in CONTRACTS:
        raise BundleError(f"{directory}: unknown contract {contract!r} in {MANIFEST}")
    try:
        definition = (
            FeatureDefinition.from_dict(manifest["feature_definition"])
            if contract == CARDS
            else None
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(
            f"{directory}: no valid feature_definition in {MANIFEST} ({exc})"
        ) from exc
    model = FraudModel(
        AnomalyScorer(forest),
        booster,
        float(manifest["threshold"]),
        manifest,
        contract=contract,
        feature_definition=definition,
        bundle_dir=directory,
    )
    if verify:
        smoke = manifest.get("smoke_test", {})
        default = smoke_input(contract, definition)
        got = model.predict_proba(np.array([smoke.get("input", default)]))[0]
        expected = smoke.get("fraud_probability")
        if expected is None or not math.isfinite(got) or abs(got - expected) > 1e-6:
            raise BundleError(
                f"{directory}: smoke prediction {got!r} differs from recorded {expected!r}"
            )
    return model
