"""The API's online feature state: opened for the served card model, filled, kept across restarts.

`ServingState` holds the `fraud_core.cards.state.FeatureState` that `/transactions/score` uses:

- before a card model serves (at start-up and at every hot swap), `prepare(model)` makes sure the
  state has the model's feature definition (a new definition opens a new state) and loads the
  bundle's history (`load_history(model.history(), marker=<version>)`: idempotent, so several
  replicas starting at once load it once);
- in process (`FRAUD_FEATURE_STATE` unset or `memory`), a restart keeps the state: `close()` at
  shutdown writes a snapshot (`FRAUD_FEATURE_STATE_SNAPSHOT`), and opening restores it, then
  replays the prediction log's card predictions newer than it, and the labels stored since, so
  what was scored after the snapshot (or since the last start, after a crash) counts again;
- in Redis (`redis://…`) the state outlives the API by itself: workers and replicas on the same
  `FRAUD_FEATURE_STATE_PREFIX` share it.

One in-process state belongs to one process: with several workers, use Redis.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from api.config import Settings
from fraud_core.bundle import FraudModel
from fraud_core.cards.definition import FeatureDefinition
from fraud_core.cards.state import FeatureState, iso, open_state
from fraud_core.contracts import CARDS
from fraud_core.prediction_log import card_events, card_labels, newest_card_tx_us

log = logging.getLogger("fraud_api.feature_state")

#: Predictions logged this long before a snapshot are replayed too: clocks and the log's queue.
REPLAY_MARGIN = timedelta(minutes=1)
#: How old the state's counts on /ready and /metrics may be.
STATS_MAX_AGE_S = 10.0


class StateUnavailable(RuntimeError):
    """The feature state cannot be used now (Redis unreachable, a history that does not load)."""


def backend_of(url: str | None) -> str:
    return "memory" if not url or url == "memory" else "redis"


def _snapshot_info(path: Path) -> Path:
    """The file beside a snapshot that says when it was taken."""
    return path.with_name(path.name + ".json")


class ServingState:
    """The feature state of the served card model; `state_for(model)` is what a request uses."""

    def __init__(self, settings: Settings, engine: Callable[[], sa.Engine | None]) -> None:
        self.url = settings.feature_state_url
        self.backend = backend_of(self.url)
        self.prefix = settings.feature_state_prefix
        self.snapshot_path = settings.snapshot_path if self.backend == "memory" else None
        self._engine = engine
        self._state: FeatureState | None = None
        self._lock = threading.Lock()  # one prepare at a time; requests never wait on it
        self._stats_lock = threading.Lock()
        self._stats: dict[str, int] = {}
        self._stats_at = -float("inf")
        self._stats_of: FeatureState | None = None

    @property
    def where(self) -> str:
        if self.backend == "memory":
            return "in process"
        return f"Redis {_hide_password(self.url or '')} (prefix {self.prefix!r})"

    @property
    def state(self) -> FeatureState | None:
        return self._state

    def state_for(self, model: FraudModel) -> FeatureState | None:
        """The state to score `model`'s transactions with; None if it is not ready for it."""
        state = self._state
        if state is None or state.definition != model.feature_definition:
            return None
        return state

    # -- before a model serves -----------------------------------------------------------------
    def prepare(self, model: FraudModel) -> None:
        """Make the state ready for `model` (a card model; others need nothing).

        Raises `StateUnavailable`; the state is then as it was.
        """
        if model.contract != CARDS or model.feature_definition is None:
            return
        with self._lock:
            try:
                self._prepare(model, model.feature_definition)
            except (RedisError, OSError, SQLAlchemyError, ValueError) as exc:
                raise StateUnavailable(
                    f"the feature state ({self.where}) is not ready for model {model.version}: "
                    f"{exc}"
                ) from exc

    def _prepare(self, model: FraudModel, definition: FeatureDefinition) -> None:
        state, restored_at = self._state, None
        fresh = state is None or state.definition != definition
        if fresh:
            state, restored_at = self._open(definition)
        assert state is not None
        history = model.history()
        if history is not None:
            added = state.load_history(history, marker=model.version)
            if added:
                log.info(
                    "feature state: %d transactions of model %s's history", added, model.version
                )
        if fresh:
            self._replay(state, restored_at)
            previous, self._state = self._state, state
            if previous is not None:
                previous.close()

    def _open(self, definition: FeatureDefinition) -> tuple[FeatureState, datetime | None]:
        """A state of `definition`; restored from the snapshot when there is one of it, with
        when that snapshot was taken (None: it holds nothing the log has not)."""
        if self.backend == "redis":
            return open_state(self.url, definition, prefix=self.prefix), None
        from fraud_core.cards.memory_state import InProcessState

        path = self.snapshot_path
        if path is not None and path.is_file():
            try:
                state = InProcessState.restore(path, definition)
            except (OSError, ValueError) as exc:  # another definition's, or damaged: rebuilt
                log.warning(
                    "feature state: snapshot %s not restored (%s); replaying the log", path, exc
                )
            else:
                log.info("feature state: restored %s (%s)", path, state.stats())
                return state, self._snapshot_taken_at(path)
        return InProcessState(definition), None

    def _replay(self, state: FeatureState, since: datetime | None) -> None:
        """The logged card transactions (and labels) the in-process state may lack: those logged
        since its snapshot was taken (`since`), or all of them within the retention."""
        engine = self._engine()
        if self.backend != "memory" or engine is None:
            return
        created_since = since - REPLAY_MARGIN if since is not None else None
        newest = newest_card_tx_us(engine)
        if newest is None:
            return
        # Nothing older than the retention behind the newest transaction can be in a window.
        floor = max(newest, state.newest_us() or newest) - state.definition.retention_us
        events = card_events(engine, created_since=created_since, tx_since_us=floor)
        added = state.load_history(events)
        relabelled = sum(
            state.label(tid, fraud)
            for tid, fraud in card_labels(engine, since=created_since, tx_since_us=floor)
        )
        log.info(
            "feature state: replayed the prediction log since %s: %d transactions added, "
            "%d labels set",
            since.isoformat(timespec="seconds") if since else "the start",
            added,
            relabelled,
        )

    @staticmethod
    def _snapshot_taken_at(path: Path) -> datetime | None:
        try:
            info = json.loads(_snapshot_info(path).read_text())
            return datetime.fromisoformat(info["taken_at"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # replay everything within the retention: slower, never wrong

    # -- reporting and shutdown ----------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Backend, newest time and counts for /ready and /metrics; raises `StateUnavailable`
        when Redis does not answer.

        Asked on every call whether it answers (one read); the counts are at most
        `STATS_MAX_AGE_S` old (Redis measures its memory key by key: not on every probe).
        """
        out: dict[str, Any] = {"backend": self.backend}
        state = self._state
        if state is None:
            return out
        try:
            newest = state.newest_us()
            with self._stats_lock:
                fresh = time.monotonic() - self._stats_at < STATS_MAX_AGE_S
                if not fresh or self._stats_of is not state:
                    self._stats = state.stats()
                    self._stats_at, self._stats_of = time.monotonic(), state
                stats = dict(self._stats)
        except (RedisError, OSError) as exc:
            raise StateUnavailable(
                f"the feature state ({self.where}) is unreachable: {exc}"
            ) from exc
        out["newest"] = iso(newest) if newest is not None else None
        out.update(stats)
        return out

    def close(self) -> None:
        """Snapshot the in-process state (after the log has written every prediction), release."""
        with self._lock:
            state, self._state = self._state, None
        if state is None:
            return
        path = self.snapshot_path
        snapshot = getattr(state, "snapshot", None)
        if path is not None and snapshot is not None:
            taken_at = datetime.now(UTC)
            try:
                snapshot(path)
                info = _snapshot_info(path)
                tmp = info.with_name(f".{info.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps({"taken_at": taken_at.isoformat()}))
                os.replace(tmp, info)
            except OSError as exc:
                log.error("feature state: cannot write snapshot %s: %s", path, exc)
            else:
                log.info("feature state: snapshot written to %s", path)
        try:
            state.close()
        except RedisError as exc:  # its last writes are optimisations: each answer stays right
            log.warning("feature state: %s not closed cleanly: %s", self.where, exc)


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


class FeatureStateCollector(Collector):
    """`fraud_api_feature_state_*` gauges: whether the state answers, and its size, per scrape."""

    def __init__(self, serving: ServingState) -> None:
        self.serving = serving

    def collect(self) -> Iterator[Metric]:
        if self.serving.state is None:
            return
        up = GaugeMetricFamily(
            "fraud_api_feature_state_up",
            "1 when the online feature state answers (0: Redis unreachable)",
            labels=["backend"],
        )
        try:
            stats = self.serving.describe()
        except StateUnavailable:
            up.add_metric([self.serving.backend], 0)
            yield up
            return
        up.add_metric([self.serving.backend], 1)
        yield up
        for name in ("customers", "terminals", "events", "labels", "memory_bytes"):
            if name in stats:
                yield GaugeMetricFamily(
                    f"fraud_api_feature_state_{name}",
                    f"The online feature state's {name.replace('_', ' ')}",
                    value=stats[name],
                )
