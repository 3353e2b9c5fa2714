"""Labels for logged predictions, and reading the log back: training rows, recent scores."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Generic, TypedDict, TypeVar, Unpack

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


@dataclass(frozen=True)
class StoredFeedback:
    """What storing a label answers, for either contract (each names its prediction's id)."""

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


@dataclass(frozen=True)
class Feedback(StoredFeedback):
    request_id: str = field(kw_only=True)


Answer = TypeVar("Answer", bound=StoredFeedback)


class Conflict(FeedbackError, Generic[Answer]):
    """The prediction already has the other label; `what` names its id (`request id`)."""

    def __init__(self, what: str, prediction_id: str, stored: Answer, label: str) -> None:
        super().__init__(
            f"{what} {prediction_id!r} was labelled {stored.label!r} at "
            f"{stored.labelled_at.isoformat(timespec='seconds')}; refusing {label!r}"
        )
        self.stored = stored
        self.label = label


class ConflictingLabel(Conflict[Feedback]):
    def __init__(self, stored: Feedback, label: str) -> None:
        super().__init__("request id", stored.request_id, stored, label)


class LabelOptions(TypedDict, total=False):
    """`add_feedback`'s and `add_card_feedback`'s options (`history.store_label` has their use)."""

    source: str | None
    comment: str | None
    labelled_at: datetime | None
    key_id: str | None
    correct: bool


def store_feedback(
    engine: sa.Engine,
    contract: str,
    prediction_id: str,
    label: str,
    answer: Callable[[StoredLabel], Answer],
    unknown: Callable[[str], FeedbackError],
    conflict: Callable[[Answer, str], FeedbackError],
    options: LabelOptions,
) -> Answer:
    """`add_feedback` for either contract: `answer` makes its answer from the stored label,
    `unknown` and `conflict` its errors."""
    if label not in LABELS:
        raise InvalidLabel(label)
    stored = store_label(
        engine,
        contract,
        prediction_id,
        label,
        source=options.get("source"),
        comment=options.get("comment"),
        labelled_at=options.get("labelled_at"),
        key_id=options.get("key_id"),
        correct=options.get("correct", False),
        unknown=unknown,
        conflict=lambda current, wanted: conflict(answer(current), wanted),
    )
    return answer(stored)


def answer_fields(stored: StoredLabel) -> dict[str, Any]:
    """The fields of `StoredFeedback` from a stored label (the id field is the caller's)."""
    return {f.name: getattr(stored, f.name) for f in fields(StoredFeedback)}


def _feedback(stored: StoredLabel) -> Feedback:
    return Feedback(request_id=stored.prediction_id, **answer_fields(stored))


def add_feedback(
    engine: sa.Engine, request_id: str, label: str, **options: Unpack[LabelOptions]
) -> Feedback:
    """Store the true label of a logged prediction, and its entry in the label history.

    The same label again is answered with the stored one (`created=False`). The other label raises
    `ConflictingLabel`, unless `correct` (the sender may correct labels): then it replaces the
    stored one, and the history keeps both. Raises `InvalidLabel`, `UnknownRequestId` or
    `ConflictingLabel` having written nothing.
    """
    return store_feedback(
        engine, KAGGLE, request_id, label, _feedback, UnknownRequestId, ConflictingLabel, options
    )


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
            *provenance(predictions, feedback),
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
        rows = recent_rows(engine, predictions, "request_id", names, limit, since)
        frame = pd.DataFrame.from_records(rows, columns=names)
    frame = frame.astype({name: "float64" for name in (*FEATURE_COLUMNS, "fraud_probability")})
    frame = frame.astype({"is_fraud": bool, "request_id": object, "model_version": object})
    return _utc(frame, "created_at")


def provenance(scored: sa.Table, labels: sa.Table) -> list[sa.ColumnElement[Any]]:
    """The selected columns after a labelled row's id: where it came from (`PROVENANCE_COLUMNS`)."""
    p, f = scored.c, labels.c
    return [
        p.model_version,
        p.fraud_probability,
        p.created_at.label("predicted_at"),
        f.labelled_at,
        f.source.label("label_source"),
        f.key_id.label("label_key_id"),
    ]


def recent_rows(
    engine: sa.Engine,
    table: sa.Table,
    key: str,
    names: Sequence[str],
    limit: int | None,
    since: datetime | None,
) -> list[tuple[Any, ...]]:
    """The columns `names` of the latest `limit` rows of a predictions `table` (made at or after
    `since`), oldest first; ties in `created_at` go by its `key` column."""
    p = table.c
    query = sa.select(*(p[name] for name in names)).order_by(p.created_at.desc(), p[key].desc())
    if since is not None:
        query = query.where(p.created_at >= since)
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [tuple(r) for r in rows[::-1]]
