"""The prediction log's tables, its engine (SQLite or PostgreSQL), and one row of each kind.

`predictions` and `feedback` hold the Kaggle contract's scores and labels; `card_predictions` and
`card_feedback` the card-transactions contract's (keyed by the client's `transaction_id`, with the
behavioural features the online state computed, as JSON text). `feedback` and `card_feedback` hold
the current label of each prediction (what training reads); `label_events` every label and
correction ever stored, with the API key that sent it (`history`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import OperationalError, ProgrammingError

from fraud_core.schema import FEATURE_COLUMNS

#: `FRAUD_PREDICTION_LOG_URL` values that turn the log off.
DISABLED = frozenset({"", "off"})
LABELS = ("fraud", "legit")
#: Room for a client's 64-character X-Request-ID plus a batch item's `-<index>`.
REQUEST_ID_LENGTH = 100
#: The longest customer, terminal or transaction id the card contract accepts.
CARD_ID_LENGTH = 100
#: An API key's public id (`fraud_core.api_keys`): what the label tables record of who labelled.
KEY_ID_LENGTH = 12
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


def _prediction_table(name: str, key: str, key_length: int, *inputs: sa.Column[Any]) -> sa.Table:
    """A contract's predictions: its key, when and by which model, `inputs`, then the score."""
    return sa.Table(
        name,
        metadata,
        sa.Column(key, sa.String(key_length), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        *inputs,
        sa.Column("fraud_probability", sa.Double(), nullable=False),
        sa.Column("is_fraud", sa.Boolean(), nullable=False),
    )


def _label_table(name: str, scored: sa.Table, key: str) -> sa.Table:
    """A contract's current labels, one per prediction of `scored` (by its `key`)."""
    return sa.Table(
        name,
        metadata,
        sa.Column(key, scored.c[key].type, sa.ForeignKey(f"{scored.name}.{key}"), primary_key=True),
        sa.Column("label", sa.String(5), nullable=False),
        sa.Column("labelled_at", UTCDateTime(), nullable=False, index=True),
        sa.Column("source", sa.String(200)),
        sa.Column("comment", sa.Text()),
        #: The key that sent the current label; NULL for labels stored without one (before keys).
        sa.Column("key_id", sa.String(KEY_ID_LENGTH)),
        sa.CheckConstraint("label IN ('fraud', 'legit')", name=f"{name}_label"),
    )


predictions = _prediction_table(
    "predictions",
    "request_id",
    REQUEST_ID_LENGTH,
    *(sa.Column(name, sa.Double(), nullable=False) for name in FEATURE_COLUMNS),
)
feedback = _label_table("feedback", predictions, "request_id")
card_predictions = _prediction_table(
    "card_predictions",
    "transaction_id",
    CARD_ID_LENGTH,
    sa.Column("tx_datetime", UTCDateTime(), nullable=False),
    #: `tx_datetime` as microseconds since the epoch: the exact time the features were taken at.
    sa.Column("tx_us", sa.BigInteger(), nullable=False, index=True),
    sa.Column("customer_id", sa.String(CARD_ID_LENGTH), nullable=False),
    sa.Column("terminal_id", sa.String(CARD_ID_LENGTH), nullable=False),
    sa.Column("amount", sa.Double(), nullable=False),
    #: {feature name: value}, the model's behavioural features for this transaction (JSON).
    sa.Column("features", sa.Text(), nullable=False),
)
card_feedback = _label_table("card_feedback", card_predictions, "transaction_id")
#: Append-only: one row per label stored (a first label or a correction), never updated. No
#: foreign key: `prediction_id` is a `request_id` or a `transaction_id`, by `contract`.
label_events = sa.Table(
    "label_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("contract", sa.String(6), nullable=False),
    sa.Column("prediction_id", sa.String(max(REQUEST_ID_LENGTH, CARD_ID_LENGTH)), nullable=False),
    sa.Column("label", sa.String(5), nullable=False),
    #: The label this one replaced (a correction); NULL for a prediction's first label.
    sa.Column("previous_label", sa.String(5)),
    sa.Column("key_id", sa.String(KEY_ID_LENGTH), index=True),
    sa.Column("labelled_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("source", sa.String(200)),
    sa.Column("comment", sa.Text()),
    sa.CheckConstraint("contract IN ('kaggle', 'cards')", name="label_events_contract"),
    sa.CheckConstraint("label IN ('fraud', 'legit')", name="label_events_label"),
    sa.Index("label_events_prediction", "contract", "prediction_id"),
)
#: Columns added since a table was first created: `create_all` never adds a column to an
#: existing table, so `upgrade_tables` does.
ADDED_COLUMNS: dict[str, tuple[sa.Column[Any], ...]] = {
    feedback.name: (feedback.c.key_id,),
    card_feedback.name: (card_feedback.c.key_id,),
}


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


class CardPredictionRow(NamedTuple):
    """One scored card transaction, as the request path hands it over (no conversion there).

    Its key comes first, as `PredictionRow`'s does: the writer finds either by `row[0]`.
    """

    transaction_id: str
    created_at: datetime  # UTC; a naive time is taken as UTC
    model_version: str
    threshold: float
    tx_us: int
    customer_id: str
    terminal_id: str
    amount: float
    #: The names of `features` (the model's behavioural features, in order), shared by rows.
    feature_names: Sequence[str]
    features: Sequence[float]
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
    """Create the missing tables of the log, and the columns added since (`ADDED_COLUMNS`)."""
    metadata.create_all(engine)
    upgrade_tables(engine)


def upgrade_tables(engine: sa.Engine) -> None:
    """Add the columns of `ADDED_COLUMNS` that an existing database's tables lack.

    Safe to run from several processes at once (two API workers starting): PostgreSQL's
    `ADD COLUMN IF NOT EXISTS`; on SQLite, which has no such clause, a column another process
    added in between is taken as done.
    """
    inspector = sa.inspect(engine)
    for table_name, columns in ADDED_COLUMNS.items():
        if not inspector.has_table(table_name):
            continue
        present = {c["name"] for c in inspector.get_columns(table_name)}
        for column in columns:
            if column.name not in present:
                _add_column(engine, table_name, column)


def _add_column(engine: sa.Engine, table_name: str, column: sa.Column[Any]) -> None:
    preparer = engine.dialect.identifier_preparer
    kind = column.type.compile(dialect=engine.dialect)
    exists = " IF NOT EXISTS" if engine.dialect.name == "postgresql" else ""
    ddl = (
        f"ALTER TABLE {preparer.quote(table_name)} "
        f"ADD COLUMN{exists} {preparer.quote(column.name)} {kind}"
    )
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(ddl)
    except (OperationalError, ProgrammingError):
        names = {c["name"] for c in sa.inspect(engine).get_columns(table_name)}
        if column.name not in names:
            raise
