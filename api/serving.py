"""The served model: loaded, verified, swapped atomically when a new one is promoted.

Requests take a reference to the current `Served` once and use it to the end, so a swap never
changes a model under a request in flight. A bundle that fails verification (checksums, smoke
prediction) is refused and the old one keeps serving. A card model serves only once the online
feature state is ready for it (`prepare`, `api.feature_state`); until then the old one serves and
each poll tries again.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from api.config import Settings
from api.feature_state import StateUnavailable
from api.metrics import Metrics
from fraud_core.bundle import BundleError, FraudModel, load_bundle, read_manifest

log = logging.getLogger("fraud_api.serving")


@dataclass(frozen=True)
class Served:
    model: FraudModel
    source: str  # the release directory or the MLflow model version it came from
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def version(self) -> str:
        return self.model.version


class RefusedBundle(Exception):
    """A bundle that failed to load or verify; its cause says why."""

    def __init__(self, version: str) -> None:
        super().__init__(f"model version {version} refused")
        self.version = version


def _load_verified(directory: Path, source: str) -> FraudModel:
    """The bundle in `directory`, every checksum and the smoke prediction checked."""
    try:
        return load_bundle(directory, verify=True)
    except (BundleError, OSError, ValueError) as exc:
        raise RefusedBundle(_version_of(directory, fallback=source)) from exc


def _version_of(directory: Path, fallback: str) -> str:
    """The version a bundle's manifest names, however broken the rest; else `fallback`."""
    try:
        return str(read_manifest(directory).get("model_version", fallback))
    except (BundleError, OSError, ValueError):
        return fallback


@dataclass(frozen=True)
class ReloadResult:
    changed: bool
    version: str | None
    error: str | None = None


class ModelHolder:
    """Holds the current model; `refresh()` loads a new one when the source has moved."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        prepare: Callable[[FraudModel], None] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        #: Called with a loaded model before it serves (the feature state loads its history);
        #: raises `StateUnavailable` to keep the old model for now.
        self.prepare = prepare
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
            # A release folder is named after its version.
            return _load_verified(Path(source), Path(source).name)
        import mlflow

        if self.settings.mlflow_tracking_uri:
            mlflow.set_tracking_uri(self.settings.mlflow_tracking_uri)
            mlflow.set_registry_uri(self.settings.mlflow_tracking_uri)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp))
            return _load_verified(local / "artifacts" / "bundle", source)

    def describe(self, source: str) -> str:
        """Where `source` is, for a log line: a directory, or the MLflow model (and its alias)."""
        if not source.startswith("models:/"):
            return f"directory {source}"
        uri = self.settings.model_uri or source
        return f"MLflow {uri} = {source}" if uri != source else f"MLflow {source}"

    # -- loading --------------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> ReloadResult:
        """Load the production model if it changed (or `force`); keep the old one on failure."""
        with self._lock:
            current = self._current
            try:
                source = self._source()
            except Exception as exc:  # an MLflow server that is down must not stop serving
                error = f"cannot resolve {self.settings.model_uri}: {exc}"
                # Said once while it lasts, not on every poll of the watcher.
                level = logging.DEBUG if error == self.last_error else logging.ERROR
                result = self._refused(error)
                log.log(level, "%s; still serving version %s", error, result.version or "none")
                return result
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
            except RefusedBundle as exc:
                return self._refused_bundle(source, exc.version, exc.__cause__)
            except (BundleError, OSError, ValueError) as exc:  # fetching it from MLflow
                return self._refused_bundle(source, source, exc)
            # Single-row requests: one thread is faster than two on a busy machine.
            model.booster.set_param({"nthread": 1})
            if self.prepare is not None:
                try:
                    self.prepare(model)
                except StateUnavailable as exc:
                    # Not the bundle's fault: not marked refused, so the next poll tries again.
                    error = str(exc)
                    level = logging.DEBUG if error == self.last_error else logging.ERROR
                    result = self._refused(error)
                    log.log(level, "%s; still serving version %s", error, result.version or "none")
                    return result
            served = Served(model, source)
            self._current = served  # the atomic swap: one reference assignment
            self.last_error = None
            self._refused_source = None
            previous = current.version if current else None
            self.metrics.model_loaded(served.version, previous=previous)
            log.info(
                "loaded model: from version %s to version %s (source: %s)",
                previous or "none",
                served.version,
                self.describe(source),
            )
            return ReloadResult(True, served.version)

    def _refused_bundle(self, source: str, version: str, why: BaseException | None) -> ReloadResult:
        self._refused_source = source
        result = self._refused(str(why))
        log.error(
            "refused model version %s (source: %s), still serving version %s: %s",
            version,
            self.describe(source),
            result.version or "none",
            why,
        )
        return result

    def _refused(self, error: str) -> ReloadResult:
        self.last_error = error
        self.metrics.reload_refused()
        current = self._current
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
            try:
                self.refresh()
            # What a failed MLflow download raises is MLflow's own; the watcher must outlive it.
            except Exception:
                log.exception("model check failed; trying again in %s s", interval)

    def stop_watching(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
