"""The model bundle: everything from the 30 raw fields to a fraud probability, plus its manifest.

A bundle is a directory holding `classifier.ubj` (XGBoost's own binary format), `anomaly.npz` (the
IsolationForest's trees as plain arrays: loading a bundle unpickles nothing) and `manifest.json`
(version, MLflow run, data fingerprint, features, threshold, metrics, the sha256 of every file and
a smoke prediction to re-check on load). The API loads nothing else.
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
import xgboost as xgb

from fraud_core.features import (
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
#: A fixed transaction scored at save time and again at every load.
SMOKE_INPUT: tuple[float, ...] = (3_600.0, *([0.5] * 28), 42.0)


class BundleError(RuntimeError):
    """A bundle that is missing, incomplete, corrupt or does not predict as recorded."""


@dataclass
class FraudModel:
    """The served model: anomaly feature plus classifier, from raw fields to a probability."""

    anomaly: AnomalyScorer
    booster: xgb.Booster
    threshold: float
    manifest: dict[str, Any] = field(default_factory=dict)

    def features(self, raw: np.ndarray) -> np.ndarray:
        """The classifier's input (`MODEL_FEATURES`) for an (n, 30) matrix of raw fields."""
        base = base_features(raw)
        return model_features(base, self.anomaly.score(base))

    def predict_proba(self, raw: np.ndarray) -> np.ndarray:
        """Fraud probabilities for an (n, 30) matrix of raw fields in `FEATURE_COLUMNS` order."""
        return np.asarray(self.booster.inplace_predict(self.features(raw)), dtype=np.float64)

    def contributions(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """XGBoost's per-feature contributions (log-odds, SHAP values) and the bias, per row."""
        # XGBoost works in float32. A DMatrix refuses a value beyond float32's range, which
        # `inplace_predict` takes as infinite; clipped to that range it takes the same branches.
        limit = float(np.finfo(np.float32).max)
        features = np.clip(self.features(raw), -limit, limit)
        matrix = xgb.DMatrix(features, feature_names=list(MODEL_FEATURES))
        contribs = np.asarray(self.booster.predict(matrix, pred_contribs=True))
        return contribs[:, :-1], contribs[:, -1]

    def predict_record(self, record: dict[str, float]) -> float:
        """The fraud probability of one transaction given as a field -> value mapping."""
        row = np.array([[record[name] for name in FEATURE_COLUMNS]], dtype=np.float64)
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
    smoke = model.predict_proba(np.array([SMOKE_INPUT]))[0]
    full = {
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "input_fields": list(FEATURE_COLUMNS),
        "features": list(MODEL_FEATURES),
        "threshold": model.threshold,
        **manifest,
        "smoke_test": {"input": list(SMOKE_INPUT), "fraud_probability": float(smoke)},
        "files": {name: sha256_file(directory / name) for name in (CLASSIFIER, ANOMALY)},
    }
    (directory / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=True, default=str))
    for name in (CLASSIFIER, ANOMALY, MANIFEST):
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
    model = FraudModel(AnomalyScorer(forest), booster, float(manifest["threshold"]), manifest)
    if verify:
        smoke = manifest.get("smoke_test", {})
        got = model.predict_proba(np.array([smoke.get("input", SMOKE_INPUT)]))[0]
        expected = smoke.get("fraud_probability")
        if expected is None or not math.isfinite(got) or abs(got - expected) > 1e-6:
            raise BundleError(
                f"{directory}: smoke prediction {got!r} differs from recorded {expected!r}"
            )
    return model
