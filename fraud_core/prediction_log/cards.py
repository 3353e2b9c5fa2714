"""The card contract's side of the prediction log: labels by transaction id, and reading it back.

- `add_card_feedback`: the true label of a scored card transaction (the same answers as
  `add_feedback`: unknown id, contradicting label unless it may correct it, the same label again);
- `labelled_card_transactions`: every labelled card transaction as canonical training rows;
- `card_events` and `card_labels`: what the API's in-process state replays at start-up;
- `recent_card_predictions`: the behavioural features and scores drift compares.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Unpack

import numpy as np
import pandas as pd
import sqlalchemy as sa

from fraud_core.cards.definition import (
    AMOUNT,
    CANONICAL_COLUMNS,
    CUSTOMER_ID,
    LABEL,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_DATETIME,
    TX_US,
)
from fraud_core.contracts import CARDS
from fraud_core.prediction_log.history import StoredLabel, ensure_label_tables
from fraud_core.prediction_log.labels import (
    PROVENANCE_COLUMNS,
    Conflict,
    FeedbackError,
    LabelOptions,
    StoredFeedback,
    answer_fields,
    provenance,
    recent_rows,
    store_feedback,
)
from fraud_core.prediction_log.tables import card_feedback, card_predictions

#: `labelled_card_transactions`' columns after the canonical ones: where each row came from.
CARD_PROVENANCE_COLUMNS = tuple(c for c in PROVENANCE_COLUMNS if c != "request_id")


class UnknownTransactionId(FeedbackError, LookupError):
    def __init__(self, transaction_id: str) -> None:
        super().__init__(
            f"no card prediction with transaction id {transaction_id!r} in the prediction log"
        )
        self.transaction_id = transaction_id


@dataclass(frozen=True)
class CardFeedback(StoredFeedback):
    transaction_id: str = field(kw_only=True)


class ConflictingCardLabel(Conflict[CardFeedback]):
    def __init__(self, stored: CardFeedback, label: str) -> None:
        super().__init__("transaction id", stored.transaction_id, stored, label)


def _card_feedback(stored: StoredLabel) -> CardFeedback:
    return CardFeedback(transaction_id=stored.prediction_id, **answer_fields(stored))


def add_card_feedback(
    engine: sa.Engine, transaction_id: str, label: str, **options: Unpack[LabelOptions]
) -> CardFeedback:
    """Store the true label of a logged card prediction, and its entry in the label history.

    The same answers as `add_feedback`: the same label again is answered with the stored one
    (`created=False`); the other one raises `ConflictingCardLabel` unless `correct`, which
    replaces it (the history keeps both). Raises `InvalidLabel`, `UnknownTransactionId` or
    `ConflictingCardLabel` having written nothing.
    """
    return store_feedback(
        engine,
        CARDS,
        transaction_id,
        label,
        _card_feedback,
        UnknownTransactionId,
        ConflictingCardLabel,
        options,
    )


def _has_tables(engine: sa.Engine) -> bool:
    inspector = sa.inspect(engine)
    return all(inspector.has_table(t.name) for t in (card_predictions, card_feedback))


def _canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """Typed like a canonical frame and sorted by (tx_us, transaction_id) as Python strings."""
    frame = frame.astype(
        {
            TRANSACTION_ID: object,
            TX_US: "int64",
            CUSTOMER_ID: object,
            TERMINAL_ID: object,
            AMOUNT: "float64",
            LABEL: "int8",
        }
    )
    frame[TX_DATETIME] = frame[TX_US].to_numpy().astype("datetime64[us]")
    # Sorted here, not in SQL: PostgreSQL's collation may order text unlike Python.
    frame = frame.sort_values([TX_US, TRANSACTION_ID], kind="stable").reset_index(drop=True)
    return frame


def _canonical_columns() -> list[sa.ColumnElement[Any]]:
    """The selected columns that `_canonical` types: the transaction, and 1 for a `fraud` label."""
    p, f = card_predictions.c, card_feedback.c
    label = sa.case((f.label == "fraud", 1), else_=0).label(LABEL)
    return [p.transaction_id, p.tx_us, p.customer_id, p.terminal_id, p.amount, label]


def _frame(rows: list[Any], columns: list[str]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame({name: pd.Series([], dtype=object) for name in columns})
    return pd.DataFrame.from_records([tuple(r) for r in rows], columns=columns)


def labelled_card_transactions(engine: sa.Engine, since: datetime | None = None) -> pd.DataFrame:
    """Every labelled card prediction (labelled at or after `since`) as canonical training rows.

    Columns: `CANONICAL_COLUMNS` (`is_fraud` 1 for a `fraud` label, 0 for `legit`), then
    `CARD_PROVENANCE_COLUMNS`; sorted by (`tx_us`, `transaction_id`) with a fresh RangeIndex.
    """
    columns = [*CANONICAL_COLUMNS, *CARD_PROVENANCE_COLUMNS]
    names = [c for c in columns if c != TX_DATETIME]
    rows: list[Any] = []
    if _has_tables(engine):
        ensure_label_tables(engine)  # a database from before `key_id`: the column added
        p, f = card_predictions.c, card_feedback.c
        query = sa.select(
            *_canonical_columns(),
            *provenance(card_predictions, card_feedback),
        ).join_from(card_feedback, card_predictions, f.transaction_id == p.transaction_id)
        if since is not None:
            query = query.where(f.labelled_at >= since)
        with engine.connect() as conn:
            rows = list(conn.execute(query).all())
    frame = _canonical(_frame(rows, names))
    frame = frame.astype({"model_version": object, "label_source": object, "label_key_id": object})
    frame["fraud_probability"] = frame["fraud_probability"].astype("float64")
    for name in ("predicted_at", "labelled_at"):
        frame[name] = pd.to_datetime(frame[name], utc=True)
    return frame[columns]


def card_events(
    engine: sa.Engine, created_since: datetime | None = None, tx_since_us: int | None = None
) -> pd.DataFrame:
    """The logged card transactions, each with its label (0 until labelled `fraud`), canonical.

    Only those logged at or after `created_since` and at or after `tx_since_us`, when given: the
    rows the online state may lack after a restart.
    """
    rows: list[Any] = []
    if _has_tables(engine):
        p, f = card_predictions.c, card_feedback.c
        query = sa.select(*_canonical_columns()).join_from(
            card_predictions,
            card_feedback,
            f.transaction_id == p.transaction_id,
            isouter=True,
        )
        if created_since is not None:
            query = query.where(p.created_at >= created_since)
        if tx_since_us is not None:
            query = query.where(p.tx_us >= tx_since_us)
        with engine.connect() as conn:
            rows = list(conn.execute(query).all())
    names = [c for c in CANONICAL_COLUMNS if c != TX_DATETIME]
    return _canonical(_frame(rows, names))[list(CANONICAL_COLUMNS)]


def card_labels(
    engine: sa.Engine, since: datetime | None = None, tx_since_us: int | None = None
) -> list[tuple[str, bool]]:
    """(transaction id, is fraud) of the card labels stored at or after `since`, of transactions
    at or after `tx_since_us` (when given), oldest label first."""
    if not _has_tables(engine):
        return []
    p, f = card_predictions.c, card_feedback.c
    query = sa.select(f.transaction_id, f.label).order_by(f.labelled_at, f.transaction_id)
    if since is not None:
        query = query.where(f.labelled_at >= since)
    if tx_since_us is not None:
        query = query.join_from(
            card_feedback, card_predictions, f.transaction_id == p.transaction_id
        ).where(p.tx_us >= tx_since_us)
    with engine.connect() as conn:
        return [(str(tid), label == "fraud") for tid, label in conn.execute(query)]


def newest_card_tx_us(engine: sa.Engine) -> int | None:
    """The latest transaction time in the log (µs), or None when no card was scored yet."""
    if not sa.inspect(engine).has_table(card_predictions.name):
        return None
    with engine.connect() as conn:
        value = conn.execute(sa.select(sa.func.max(card_predictions.c.tx_us))).scalar()
    return None if value is None else int(value)


def recent_card_predictions(
    engine: sa.Engine,
    limit: int | None = 10_000,
    since: datetime | None = None,
    feature_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The latest `limit` card predictions (made at or after `since`), oldest first.

    Columns: `transaction_id`, `created_at`, `model_version`, `tx_us`, the behavioural features
    (`feature_names`, NaN where a row lacks one; by default every name the rows carry),
    `fraud_probability`, `is_fraud`.
    """
    names = ["transaction_id", "created_at", "model_version", "tx_us", "features"]
    names += ["fraud_probability", "is_fraud"]
    rows: list[Any] = []
    if _has_tables(engine):
        rows = recent_rows(engine, card_predictions, "transaction_id", names, limit, since)
    frame = _frame(rows, names)
    features = pd.DataFrame(
        [json.loads(text) for text in frame["features"]], index=frame.index, dtype=np.float64
    )
    if feature_names is not None:
        features = features.reindex(columns=list(feature_names))
    frame = pd.concat([frame.drop(columns="features"), features], axis=1)
    ordered = [*names[:4], *features.columns, "fraud_probability", "is_fraud"]
    frame = frame[ordered].astype(
        {"fraud_probability": "float64", "is_fraud": bool, "tx_us": "int64"}
    )
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame
