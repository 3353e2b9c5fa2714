"""The served model: loaded, verified, swapped atomically when a new one is promoted.

Requests take a reference to the current `Served` once and use it to the end, so a swap never
changes a model under a request in flight. A bundle that fails verification (checksums, smoke
prediction) is refused and the old one keeps serving.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from api.config import Settings
from api.metrics import Metrics
from fraud_core.bundle import BundleError, FraudModel, load_bundle

log = logging.getLogger("fraud_api.serving")


@dataclass(frozen=True)
class Served:
    model: FraudModel
    source: str  # the release directory or the MLflow model version it came from
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def version(self) -> str:
        return self.model.version


@dataclass(frozen=True)
class ReloadResult:
    changed: bool
    version: str | None
    error: str | None = None


class ModelHolder:
    """Holds the current model; `refresh()` loads a new one when the source has moved."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._current: Served | None = None
        self._lock = threading.Lock()  # one load at a time; readers never wait on it
        self.last_error: str | None = None
        #: A source that was refused is not retried on every poll, only when it changes.
        self._refused_source: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> Served | None:
        return self._current

    def not_ready_reason(self) -> str:
        where = self.settings.model_uri or str(self.settings.models_dir / "production")
        if self.last_error:
            return f"no model loaded from {where}: {self.last_error}"
        return f"no model loaded: nothing published at {where} yet"

    # -- where the model comes from -------------------------------------------------------------
    def _source(self) -> str | None:
        """An identifier of what is in production now, cheap to read on every poll."""
        if self.settings.model_uri:
            return self._mlflow_source()
        production = self.settings.models_dir / "production"
        if not production.exists():
            return None
        return os.path.realpath(production)

    def _mlflow_source(self) -> str:
        from mlflow.tracking import MlflowClient

        # MLflow retries a failing request 7 times with exponential backoff (minutes): the
        # watcher and the start-up would hang on a tracking server that is down. Fail fast
        # instead and try again at the next poll (explicit settings still win).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

        uri = self.settings.model_uri or ""
        name, _, alias = uri.removeprefix("models:/").partition("@")
        if not alias:
            return uri
        # The registry is the tracking server's: MLflow would otherwise take a registry URI set
        # process-wide (`mlflow.set_registry_uri`) or MLFLOW_REGISTRY_URI over this setting.
        tracking_uri = self.settings.mlflow_tracking_uri
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        version = client.get_model_version_by_alias(name, alias)
        return f"models:/{name}/{version.version}"

    def _load(self, source: str) -> FraudModel:
        if not source.startswith("models:/"):
            return load_bundle(Path(source), verify=True)
        import mlflow

        if self.settings.mlflow_tracking_uri:
            mlflow.set_tracking_uri(self.settings.mlflow_tracking_uri)
            mlflow.set_registry_uri(self.settings.mlflow_tracking_uri)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp))
            return load_bundle(local / "artifacts" / "bundle", verify=True)

    # -- loading --------------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> ReloadResult:
        """Load the production model if it changed (or `force`); keep the old one on failure."""
        with self._lock:
            current = self._current
            try:
                source = self._source()
            except Exception as exc:  # an MLflow server that is down must not stop serving
                return self._refused(f"cannot resolve {self.settings.model_uri}: {exc}")
            if source is None:
                if current is None:
                    self.last_error = None
                return ReloadResult(False, current.version if current else None)
            if not force and (
                (current is not None and current.source == source) or source == self._refused_source
            ):
                return ReloadResult(
                    False,
                    current.version if current else None,
                    self.last_error if source == self._refused_source else None,
                )
            try:
                model = self._load(source)
            except (BundleError, OSError, ValueError) as exc:
                self._refused_source = source
                return self._refused(str(exc))
            # Single-row requests: one thread is faster than two on a busy machine.
            model.booster.set_param({"nthread": 1})
            served = Served(model, source)
            self._current = served  # the atomic swap: one reference assignment
            self.last_error = None
            self._refused_source = None
            self.metrics.model_loaded(served.version, previous=current.version if current else None)
            log.info("serving model %s from %s", served.version, source)
            return ReloadResult(True, served.version)

    def _refused(self, error: str) -> ReloadResult:
        self.last_error = error
        self.metrics.reload_refused()
        current = self._current
        log.error(
            "model refused, %s keeps serving: %s",
            current.version if current else "nothing",
            error,
        )
        return ReloadResult(False, current.version if current else None, error)

    # -- watching ------------------------------------------------------------------------------
    def start_watching(self) -> None:
        interval = self.settings.reload_interval_s
        if interval <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._watch, args=(interval,), name="model-watcher", daemon=True
        )
        self._thread.start()

    def _watch(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.refresh()

    def stop_watching(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
