"""The label history: every label and correction stored for a prediction, by which key, and when.

Both contracts' labels are written here, by `store_label`, in one transaction each: the current
label in `feedback` (by `request_id`) or `card_feedback` (by `transaction_id`), which training
reads, and one row appended to `label_events`, which is never updated. A first label is stored; the
same label again changes nothing; the other label is refused unless the caller may correct labels
(an API key with `label:correct`), in which case it replaces the current one and the history keeps
both, each with the key that sent it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from fraud_core.contracts import CARDS, KAGGLE
from fraud_core.prediction_log.tables import (
    card_feedback,
    card_predictions,
    create_tables,
    feedback,
    label_events,
    predictions,
)

#: `label_history`'s columns, oldest entry first.
HISTORY_COLUMNS = (
    "id",
    "contract",
    "prediction_id",
    "label",
    "previous_label",
    "key_id",
    "labelled_at",
    "source",
    "comment",
)


@dataclass(frozen=True)
class StoredLabel:
    """The current label of a prediction after `store_label`."""

    prediction_id: str
    label: str
    labelled_at: datetime
    source: str | None
    comment: str | None
    key_id: str | None
    created: bool  # a label was stored: the first one, or a correction
    previous_label: str | None = None  # set for a correction: the label it replaced

    @property
    def corrected(self) -> bool:
        return self.previous_label is not None


@dataclass(frozen=True)
class _Tables:
    labels: sa.Table
    predictions: sa.Table
    key: str  # the id column both tables share


_TABLES = {
    KAGGLE: _Tables(feedback, predictions, "request_id"),
    CARDS: _Tables(card_feedback, card_predictions, "transaction_id"),
}

#: Engines whose tables `store_label` has created or upgraded already: checked once a process.
_READY: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


def ensure_label_tables(engine: sa.Engine) -> None:
    """Create the log's tables and add missing columns, once per engine in this process."""
    if engine not in _READY:
        create_tables(engine)
        _READY.add(engine)


def _utc(value: datetime | None) -> datetime:
    value = value or datetime.now(UTC)
    # A naive time is UTC, as the tables read it (not the machine's local time).
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _current(conn: sa.Connection, tables: _Tables, prediction_id: str) -> StoredLabel | None:
    t = tables.labels
    row = conn.execute(sa.select(t).where(t.c[tables.key] == prediction_id)).first()
    if row is None:
        return None
    return StoredLabel(
        prediction_id,
        row.label,
        row.labelled_at,
        row.source,
        row.comment,
        row.key_id,
        created=False,
    )


class _Changed(Exception):
    """The current label changed between reading and updating it."""


def store_label(
    engine: sa.Engine,
    contract: str,
    prediction_id: str,
    label: str,
    *,
    source: str | None,
    comment: str | None,
    labelled_at: datetime | None,
    key_id: str | None,
    correct: bool,
    unknown: Callable[[str], Exception],
    conflict: Callable[[StoredLabel, str], Exception],
) -> StoredLabel:
    """Store `label` as the current label of `prediction_id` and append it to the history.

    Raises `unknown(prediction_id)` when no prediction has the id, and `conflict(stored, label)`
    when it has the other label and `correct` is False; nothing is written then.
    """
    tables = _TABLES[contract]
    ensure_label_tables(engine)
    labelled_at = _utc(labelled_at)
    values: dict[str, Any] = {
        "label": label,
        "labelled_at": labelled_at,
        "source": source,
        "comment": comment,
        "key_id": key_id,
    }
    t, key = tables.labels, tables.key
    last: Exception | None = None
    for _ in range(3):  # another caller's label in between: read again and decide again
        try:
            with engine.begin() as conn:
                known = conn.execute(
                    sa.select(tables.predictions.c[key]).where(
                        tables.predictions.c[key] == prediction_id
                    )
                ).first()
                if known is None:
                    raise unknown(prediction_id)
                stored = _current(conn, tables, prediction_id)
                if stored is not None and stored.label == label:
                    return stored
                if stored is not None and not correct:
                    raise conflict(stored, label)
                if stored is None:
                    conn.execute(t.insert().values({key: prediction_id, **values}))
                else:
                    # Only if it still holds the label just read: a concurrent correction wins
                    # the row, and this one decides again on what that wrote.
                    done = conn.execute(
                        t.update()
                        .where(t.c[key] == prediction_id, t.c.label == stored.label)
                        .values(values)
                    )
                    if done.rowcount != 1:
                        raise _Changed
                previous = stored.label if stored is not None else None
                conn.execute(
                    label_events.insert().values(
                        contract=contract,
                        prediction_id=prediction_id,
                        previous_label=previous,
                        **values,
                    )
                )
            return StoredLabel(
                prediction_id, label, labelled_at, source, comment, key_id, True, previous
            )
        except (IntegrityError, _Changed) as exc:
            # Another caller's first label between our read and our insert, or its correction
            # between our read and our update: rolled back, decided again on what it wrote.
            last = exc
    if isinstance(last, IntegrityError):
        raise last
    raise RuntimeError(f"the label of {prediction_id!r} kept changing: not stored")


def _has(engine: sa.Engine, table: sa.Table) -> bool:
    return sa.inspect(engine).has_table(table.name)


def label_history(
    engine: sa.Engine, contract: str | None = None, prediction_id: str | None = None
) -> pd.DataFrame:
    """The label history (`HISTORY_COLUMNS`), oldest entry first; of one contract, one id."""
    rows: list[Any] = []
    if _has(engine, label_events):
        e = label_events.c
        query = sa.select(*(e[name] for name in HISTORY_COLUMNS)).order_by(e.id)
        if contract is not None:
            query = query.where(e.contract == contract)
        if prediction_id is not None:
            query = query.where(e.prediction_id == prediction_id)
        with engine.connect() as conn:
            rows = list(conn.execute(query).all())
    frame = pd.DataFrame.from_records(
        [tuple(r) for r in rows], columns=list(HISTORY_COLUMNS)
    ).astype({"id": "int64"})
    frame["labelled_at"] = pd.to_datetime(frame["labelled_at"], utc=True)
    return frame


@dataclass(frozen=True)
class LabelSummary:
    """Who sent a contract's labels: current labels by key id, and how many were corrections."""

    by_key: dict[str, int]  # current labels by the key that sent them; "(none)" without one
    events_by_key: dict[str, int]  # every label stored, corrections included, by key
    corrections: int  # labels that replaced another one
    corrected_predictions: int  # predictions whose label was corrected at least once


NO_KEY = "(none)"


def label_summary(engine: sa.Engine, contract: str) -> LabelSummary:
    """Counts by key id and corrections of `contract`'s labels, for the training's metadata."""
    tables = _TABLES[contract]
    by_key: dict[str, int] = {}
    events_by_key: dict[str, int] = {}
    corrections = corrected = 0
    with engine.connect() as conn:
        if _has(engine, tables.labels):
            t = tables.labels.c
            counts = conn.execute(sa.select(t.key_id, sa.func.count()).group_by(t.key_id))
            by_key = {str(k or NO_KEY): int(n) for k, n in counts}
        if _has(engine, label_events):
            e = label_events.c
            mine = e.contract == contract
            grouped = conn.execute(
                sa.select(e.key_id, sa.func.count()).where(mine).group_by(e.key_id)
            )
            events_by_key = {str(k or NO_KEY): int(n) for k, n in grouped}
            fixed = sa.and_(mine, e.previous_label.is_not(None))
            corrections = int(conn.execute(sa.select(sa.func.count()).where(fixed)).scalar() or 0)
            corrected = int(
                conn.execute(
                    sa.select(sa.func.count(sa.distinct(e.prediction_id))).where(fixed)
                ).scalar()
                or 0
            )
    return LabelSummary(by_key, events_by_key, corrections, corrected)
