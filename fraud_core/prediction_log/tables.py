"""The prediction log's two tables, its engine (SQLite or PostgreSQL), and one row of it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event

from fraud_core.schema import FEATURE_COLUMNS

#: `FRAUD_PREDICTION_LOG_URL` values that turn the log off.
DISABLED = frozenset({"", "off"})
LABELS = ("fraud", "legit")
#: Room for a client's 64-character X-Request-ID plus a batch item's `-<index>`.
REQUEST_ID_LENGTH = 100
#: The databases whose bulk insert `bulk.insert_rows` knows (backend, driver).
SUPPORTED = {("sqlite", "pysqlite"), ("postgresql", "psycopg2")}


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A UTC timestamp that reads back timezone-aware on SQLite too (which stores no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        # SQLite compares timestamps as text: one zone-free format keeps the order right.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


metadata = sa.MetaData()
predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("request_id", sa.String(REQUEST_ID_LENGTH), primary_key=True),
    sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("model_version", sa.String(200), nullable=False),
    sa.Column("threshold", sa.Double(), nullable=False),
    *(sa.Column(name, sa.Double(), nullable=False) for name in FEATURE_COLUMNS),
    sa.Column("fraud_probability", sa.Double(), nullable=False),
    sa.Column("is_fraud", sa.Boolean(), nullable=False),
)
feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column(
        "request_id",
        sa.String(REQUEST_ID_LENGTH),
        sa.ForeignKey("predictions.request_id"),
        primary_key=True,
    ),
    sa.Column("label", sa.String(5), nullable=False),
    sa.Column("labelled_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("source", sa.String(200)),
    sa.Column("comment", sa.Text()),
    sa.CheckConstraint("label IN ('fraud', 'legit')", name="feedback_label"),
)


class PredictionRow(NamedTuple):
    """One scored transaction, as the request path hands it over (no conversion there)."""

    request_id: str
    created_at: datetime  # UTC; a naive time is taken as UTC
    model_version: str
    threshold: float
    #: The 30 fields in `FEATURE_COLUMNS` order: a numpy row or a sequence of floats.
    features: Sequence[float] | np.ndarray
    fraud_probability: float
    is_fraud: bool


def resolve_url(value: str | None) -> str | None:
    """The database URL to log to, or None when the log is off (`off` or empty)."""
    if value is None or value.strip().lower() in DISABLED:
        return None
    return value.strip()


def make_engine(url: str, *, busy_timeout_s: float = 5.0) -> sa.Engine:
    """An engine for the log; on SQLite in WAL mode, so the API and a reader share the file.

    Raises `ValueError` for a database other than a SQLite file or PostgreSQL through psycopg2.
    """
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        # Not echoed: a URL that failed to parse may still hold a password.
        raise ValueError(
            "the prediction log's URL is not a database URL: sqlite:///FILE or postgresql://…"
        ) from None
    backend = parsed.get_backend_name()
    shown = parsed.render_as_string(hide_password=True)
    if (backend, parsed.get_driver_name()) not in SUPPORTED:
        raise ValueError(
            f"the prediction log runs on sqlite:///FILE or postgresql:// (psycopg2), not {shown}"
        )
    if backend == "postgresql":
        # pre_ping: after a restart the pool's old connections would each fail once otherwise.
        return sa.create_engine(parsed, pool_pre_ping=True, client_encoding="utf8")
    database = parsed.database
    if not database or database == ":memory:":
        # Each pooled connection would get a database of its own: the writer's rows unseen.
        raise ValueError(f"the prediction log needs a SQLite file, not {shown}")
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed)

    @event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        # WAL: readers never block the writer, nor it them; the busy timeout makes two writers
        # (API workers, a labelling job) wait for each other instead of failing at once.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={round(busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Safe from corruption in WAL mode; only a power cut can lose the last commits.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def create_tables(engine: sa.Engine) -> None:
    metadata.create_all(engine)
