"""`PredictionLog`: predictions written in batches by a thread of its own, never in a request.

Both contracts' rows share the queue and the thread: a `PredictionRow` goes to `predictions`, a
`CardPredictionRow` to `card_predictions`, each batch split by kind before it is written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice

import sqlalchemy as sa
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from api.prediction_log.bulk import RowError, insert_rows
from api.prediction_log.card_bulk import insert_card_rows
from fraud_core.prediction_log.tables import (
    CardPredictionRow,
    PredictionRow,
    card_predictions,
    create_tables,
    predictions,
)

log = logging.getLogger("fraud_core.prediction_log")

DROP_REASONS = ("queue_full", "duplicate_id", "write_failed", "closed")
_FIRST_RETRY_S = 0.1
#: At most one "queue full" line per this many seconds, not one per request.
_DROP_LOG_EVERY_S = 10.0

#: A row of either contract; its key (request or transaction id) is its first field.
LogRow = PredictionRow | CardPredictionRow


def _by_kind(batch: list[LogRow]) -> list[list[LogRow]]:
    """`batch` split into the rows of each table, each part in the order it was recorded."""
    cards: list[LogRow] = [row for row in batch if isinstance(row, CardPredictionRow)]
    if not cards:
        return [batch]
    kaggle: list[LogRow] = [row for row in batch if not isinstance(row, CardPredictionRow)]
    return [part for part in (kaggle, cards) if part]


def _insert(conn: sa.Connection, rows: Sequence[LogRow]) -> None:
    """Insert rows of one kind (`_by_kind`) into their table."""
    if rows and isinstance(rows[0], CardPredictionRow):
        insert_card_rows(conn, rows)  # type: ignore[arg-type]
    else:
        insert_rows(conn, rows)  # type: ignore[arg-type]


@dataclass(frozen=True)
class LogStats:
    written: int
    dropped: dict[str, int]  # by reason, every reason of DROP_REASONS present
    queued: int  # waiting in the queue now
    write_errors: int  # failed attempts to write a batch (each retried, or dropped at shutdown)


class PredictionLog:
    """Writes `LogRow`s in batches from a background thread; `record()` never blocks."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        queue_size: int = 20_000,
        batch_size: int = 500,
        max_latency_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        self.engine = engine
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.max_latency_s = max_latency_s
        self.retry_max_s = retry_max_s
        # A deque under our own lock, bounded here in rows: queue.Queue.put_nowait cost 2.5 µs a
        # row, 2.5 ms of a 1,000-row batch request; extending a deque costs 100 times less.
        self._queue: deque[LogRow] = deque()
        self._lock = threading.Lock()  # the queue and the counters below
        self._settled = threading.Condition(self._lock)
        self._accepted = 0  # rows put on the queue
        self._done = 0  # of those, rows written or dropped by the writer
        self._written = 0
        self._dropped = dict.fromkeys(DROP_REASONS, 0)
        self._write_errors = 0
        self._closed = False
        self._last_drop_log = -_DROP_LOG_EVERY_S
        #: Set when a batch is ready, or on flush() and close(): the writer sleeps until then or
        #: for `max_latency_s`. Never woken per row: a thread that wakes for every request takes
        #: the interpreter lock from the event loop each time (the server's CPU per request rose
        #: 20 % in the serving benchmark; woken per batch, 2-6 %).
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._give_up = threading.Event()
        self._schema_ready = False
        try:
            self._ensure_schema()
        except SQLAlchemyError as exc:  # serve anyway: the writer creates them once it can
            log.error("prediction log %s unavailable, will retry: %s", self.where, exc)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    @property
    def where(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    # -- the request side -----------------------------------------------------------------------
    def record(self, rows: Sequence[LogRow]) -> int:
        """Queue `rows` without waiting; the number queued (the rest are counted as dropped)."""
        with self._lock:
            room = 0 if self._closed else max(self.queue_size - len(self._queue), 0)
            queued = min(len(rows), room)
            self._queue.extend(islice(rows, queued))
            self._accepted += queued
            if len(self._queue) >= self.batch_size and not self._wake.is_set():
                self._wake.set()
            lost = len(rows) - queued
            if lost:
                reason = "closed" if self._closed else "queue_full"
                self._dropped[reason] += lost
                now = time.monotonic()
                if now - self._last_drop_log > _DROP_LOG_EVERY_S:
                    self._last_drop_log = now
                    log.warning(
                        "prediction log: dropped %d rows (%s), %d in all so far",
                        lost,
                        reason,
                        self._dropped[reason],
                    )
        return queued

    def stats(self) -> LogStats:
        with self._lock:
            return LogStats(
                self._written, dict(self._dropped), len(self._queue), self._write_errors
            )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row recorded so far is written (or dropped); False on timeout."""
        with self._settled:
            target = self._accepted
            self._wake.set()
            return self._settled.wait_for(lambda: self._done >= target, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, then stop; what cannot be written within `timeout` is dropped.

        Rows recorded after this call are dropped and counted `closed`.
        """
        with self._lock:
            self._closed = True
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._give_up.set()
            self._thread.join(5.0)
        if self._thread.is_alive():
            log.error(
                "prediction log writer still inside a database call after %.0fs; "
                "%d queued rows are lost with the process",
                timeout + 5.0,
                len(self._queue),
            )
            return
        self.engine.dispose()

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the writer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self.max_latency_s)
            self._wake.clear()
            # Read before draining: every row recorded before close() is on the queue by then.
            closing = self._closing.is_set()
            while True:  # everything queued now, a full batch at a time
                batch = self._take()
                for part in _by_kind(batch) if batch else ():
                    self._write(part)
                if len(batch) < self.batch_size:
                    break
            if closing:
                return

    def _take(self) -> list[LogRow]:
        with self._lock:
            return [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]

    def _settle(self, count: int, reason: str | None = None) -> None:
        with self._settled:
            if reason is None:
                self._written += count
            else:
                self._dropped[reason] += count
            self._done += count
            self._settled.notify_all()

    def _ensure_schema(self) -> None:
        if not self._schema_ready:
            create_tables(self.engine)
            self._schema_ready = True

    def _write(self, batch: list[LogRow]) -> None:
        """Write `batch`, retrying while the database is unreachable; settle every row."""
        pending = list(batch)  # shrinks as rows are settled
        delay = _FIRST_RETRY_S
        while pending:
            try:
                self._ensure_schema()
                self._write_some(pending)
            except SQLAlchemyError as exc:  # down, locked, restarted: worth another try
                with self._lock:
                    self._write_errors += 1
                if self._give_up.is_set():
                    log.error(
                        "prediction log: shutting down, %d rows dropped: cannot write to %s: %s",
                        len(pending),
                        self.where,
                        exc,
                    )
                    self._settle(len(pending), "write_failed")
                    return
                log.error(
                    "prediction log: cannot write %d rows to %s, retrying in %.1fs "
                    "(%d more queued): %s",
                    len(pending),
                    self.where,
                    delay,
                    len(self._queue),
                    exc,
                )
                self._schema_ready = False  # the database may have come back empty
                self._give_up.wait(delay)  # close() past its deadline cuts the wait short
                delay = min(delay * 2, self.retry_max_s)
            except Exception:  # a bug here must not stop the writer, and every row after with it
                log.exception("prediction log: %d rows dropped", len(pending))
                self._settle(len(pending), "write_failed")
                return

    def _write_some(self, pending: list[LogRow]) -> None:
        """Insert `pending` and empty it, or remove the rows the database refuses for good.

        Raises `SQLAlchemyError` for an error worth retrying; `pending` then holds what is left.
        """
        try:
            with self.engine.begin() as conn:
                _insert(conn, pending)
        except IntegrityError:
            fresh = self._not_yet_logged(pending)
            if len(fresh) == len(pending):  # refused for another reason: find the culprits
                self._one_by_one(pending)
                return
            log.warning(
                "prediction log: %d rows not logged, their request id already is",
                len(pending) - len(fresh),
            )
            self._settle(len(pending) - len(fresh), "duplicate_id")
            pending[:] = fresh
        except (DataError, RowError):
            self._one_by_one(pending)
        else:
            self._settle(len(pending))
            pending.clear()

    def _one_by_one(self, pending: list[LogRow]) -> None:
        """Insert the rows singly, dropping each one the database refuses, with its reason."""
        while pending:
            row = pending[0]
            try:
                with self.engine.begin() as conn:
                    _insert(conn, [row])
            except (IntegrityError, DataError, RowError) as exc:
                log.error("prediction log: row of %r refused: %s", row[0], exc)
                self._settle(1, "write_failed")
            else:
                self._settle(1)
            del pending[0]

    def _not_yet_logged(self, pending: list[LogRow]) -> list[LogRow]:
        """`pending` (one kind) without the rows whose key is in its table or earlier in it."""
        ids = [row[0] for row in pending]
        table = card_predictions if isinstance(pending[0], CardPredictionRow) else predictions
        key = table.primary_key.columns[0]
        with self.engine.connect() as conn:
            seen = set(conn.scalars(sa.select(key).where(key.in_(ids))))
        fresh = []
        for row in pending:
            if row[0] not in seen:
                seen.add(row[0])
                fresh.append(row)
        return fresh
