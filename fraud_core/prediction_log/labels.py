"""Labels for logged predictions, and reading the log back: training rows, recent scores."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

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


def _stored(conn: sa.Connection, request_id: str) -> Feedback | None:
    row = conn.execute(sa.select(feedback).where(feedback.c.request_id == request_id)).first()
    if row is None:
        return None
    return Feedback(
        row.request_id, row.label, row.labelled_at, row.source, row.comment, created=False
    )


def _same_or_conflict(stored: Feedback, label: str) -> Feedback:
    if stored.label != label:
        raise ConflictingLabel(stored, label)
    return stored


def add_feedback(
    engine: sa.Engine,
    request_id: str,
    label: str,
    *,
    source: str | None = None,
    comment: str | None = None,
    labelled_at: datetime | None = None,
) -> Feedback:
    """Store the true label of a logged prediction, in one transaction.

    The same label again is answered with the stored one (`created=False`); raises
    `InvalidLabel`, `UnknownRequestId` or `ConflictingLabel`, having written nothing.
    """
    if label not in LABELS:
        raise InvalidLabel(label)
    labelled_at = labelled_at or datetime.now(UTC)
    # A naive time is UTC, as the tables read it (not the machine's local time).
    labelled_at = (
        labelled_at.astimezone(UTC) if labelled_at.tzinfo else labelled_at.replace(tzinfo=UTC)
    )
    try:
        with engine.begin() as conn:
            known = conn.execute(
                sa.select(predictions.c.request_id).where(predictions.c.request_id == request_id)
            ).first()
            if known is None:
                raise UnknownRequestId(request_id)
            stored = _stored(conn, request_id)
            if stored is not None:
                return _same_or_conflict(stored, label)
            conn.execute(
                feedback.insert().values(
                    request_id=request_id,
                    label=label,
                    labelled_at=labelled_at,
                    source=source,
                    comment=comment,
                )
            )
    except IntegrityError:
        # Another caller labelled it between our read and our insert: answer as if we came second.
        with engine.connect() as conn:
            stored = _stored(conn, request_id)
        if stored is None:
            raise
        return _same_or_conflict(stored, label)
    return Feedback(request_id, label, labelled_at, source, comment, created=True)


#: `labelled_rows`' columns after the 31 of the transaction schema.
PROVENANCE_COLUMNS = (
    "request_id",
    "model_version",
    "fraud_probability",
    "predicted_at",
    "labelled_at",
    "label_source",
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
    frame = frame.astype({"request_id": object, "model_version": object, "label_source": object})
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
