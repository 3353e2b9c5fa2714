"""Labels for logged predictions, and reading the log back: training rows, recent scores."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from fraud_core.contracts import KAGGLE
from fraud_core.prediction_log.history import StoredLabel, ensure_label_tables, store_label
from fraud_core.prediction_log.tables import LABELS, feedback, predictions
from fraud_core.schema import FEATURE_COLUMNS, LABEL


class FeedbackError(ValueError):
    """A label that cannot be stored; nothing was written."""


class UnknownRequestId(FeedbackError, LookupError):
    def __init__(self, request_id: str) -> None:
        super().__init__(f"no prediction with request id {request_id!r} in the prediction log")
        self.request_id = request_id


class InvalidLabel(FeedbackError):
    def __init__(self, label: object) -> None:
        super().__init__(f"label must be one of {', '.join(LABELS)}, not {label!r}")
        self.label = label


class ConflictingLabel(FeedbackError):
    def __init__(self, stored: Feedback, label: str) -> None:
        super().__init__(
            f"request id {stored.request_id!r} was labelled {stored.label!r} at "
            f"{stored.labelled_at.isoformat(timespec='seconds')}; refusing {label!r}"
        )
        self.stored = stored
        self.label = label


@dataclass(frozen=True)
class Feedback:
    request_id: str
    label: str
    labelled_at: datetime
    source: str | None
    comment: str | None
    created: bool  # False: the same label was already stored (and is returned as it was)
    key_id: str | None = None  # the API key that sent the label (None: sent without one)
    previous_label: str | None = None  # set when this label corrected another one

    @property
    def corrected(self) -> bool:
        return self.previous_label is not None


def _feedback(stored: StoredLabel) -> Feedback:
    return Feedback(
        stored.prediction_id,
        stored.label,
        stored.labelled_at,
        stored.source,
        stored.comment,
        stored.created,
        stored.key_id,
        stored.previous_label,
    )


def add_feedback(
    engine: sa.Engine,
    request_id: str,
    label: str,
    *,
    source: str | None = None,
    comment: str | None = None,
    labelled_at: datetime | None = None,
    key_id: str | None = None,
    correct: bool = False,
) -> Feedback:
    """Store the true label of a logged prediction, and its entry in the label history.

    The same label again is answered with the stored one (`created=False`). The other label raises
    `ConflictingLabel`, unless `correct` (the sender may correct labels): then it replaces the
    stored one, and the history keeps both. Raises `InvalidLabel`, `UnknownRequestId` or
    `ConflictingLabel` having written nothing.
    """
    if label not in LABELS:
        raise InvalidLabel(label)
    stored = store_label(
        engine,
        KAGGLE,
        request_id,
        label,
        source=source,
        comment=comment,
        labelled_at=labelled_at,
        key_id=key_id,
        correct=correct,
        unknown=UnknownRequestId,
        conflict=lambda current, wanted: ConflictingLabel(_feedback(current), wanted),
    )
    return _feedback(stored)


#: `labelled_rows`' columns after the 31 of the transaction schema.
PROVENANCE_COLUMNS = (
    "request_id",
    "model_version",
    "fraud_probability",
    "predicted_at",
    "labelled_at",
    "label_source",
    "label_key_id",
)


def _has_tables(engine: sa.Engine) -> bool:
    inspector = sa.inspect(engine)
    return all(inspector.has_table(table.name) for table in (predictions, feedback))


def _utc(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    for name in columns:
        frame[name] = pd.to_datetime(frame[name], utc=True)
    return frame


def labelled_rows(engine: sa.Engine, since: datetime | None = None) -> pd.DataFrame:
    """Every labelled prediction (labelled at or after `since`) as training data.

    The first 31 columns are the transaction schema: `Time`, `V1`…`V28`, `Amount`, `Class` (1 for
    fraud, 0 for legit), so `schema.conform` takes the frame as it is. After them come
    `PROVENANCE_COLUMNS`: where each row came from. Rows in the order they were scored.
    """
    columns = [*FEATURE_COLUMNS, LABEL, *PROVENANCE_COLUMNS]
    if not _has_tables(engine):
        return _typed_labelled(pd.DataFrame({name: [] for name in columns}))
    ensure_label_tables(engine)  # a database from before `key_id`: the column added
    p, f = predictions.c, feedback.c
    query = (
        sa.select(
            *(p[name] for name in FEATURE_COLUMNS),
            sa.case((f.label == "fraud", 1), else_=0).label(LABEL),
            p.request_id,
            p.model_version,
            p.fraud_probability,
            p.created_at.label("predicted_at"),
            f.labelled_at,
            f.source.label("label_source"),
            f.key_id.label("label_key_id"),
        )
        .join_from(feedback, predictions, f.request_id == p.request_id)
        .order_by(p.created_at, p.request_id)
    )
    if since is not None:
        query = query.where(f.labelled_at >= since)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return _typed_labelled(pd.DataFrame.from_records([tuple(r) for r in rows], columns=columns))


def _typed_labelled(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.astype({name: "float64" for name in (*FEATURE_COLUMNS, "fraud_probability")})
    frame[LABEL] = frame[LABEL].astype("int8")
    frame = frame.astype(
        {name: object for name in ("request_id", "model_version", "label_source", "label_key_id")}
    )
    return _utc(frame, "predicted_at", "labelled_at")


def recent_predictions(
    engine: sa.Engine, limit: int | None = 10_000, since: datetime | None = None
) -> pd.DataFrame:
    """The latest `limit` predictions (made at or after `since`), oldest first: inputs and scores.

    Columns: `request_id`, `created_at`, `model_version`, `Time`, `V1`…`V28`, `Amount`,
    `fraud_probability`, `is_fraud`.
    """
    names = ["request_id", "created_at", "model_version", *FEATURE_COLUMNS]
    names += ["fraud_probability", "is_fraud"]
    if not _has_tables(engine):
        frame = pd.DataFrame({name: [] for name in names})
    else:
        p = predictions.c
        query = sa.select(*(p[name] for name in names)).order_by(
            p.created_at.desc(), p.request_id.desc()
        )
        if since is not None:
            query = query.where(p.created_at >= since)
        if limit is not None:
            query = query.limit(limit)
        with engine.connect() as conn:
            rows = conn.execute(query).all()
        frame = pd.DataFrame.from_records([tuple(r) for r in rows[::-1]], columns=names)
    frame = frame.astype({name: "float64" for name in (*FEATURE_COLUMNS, "fraud_probability")})
    frame = frame.astype({"is_fraud": bool, "request_id": object, "model_version": object})
    return _utc(frame, "created_at")
