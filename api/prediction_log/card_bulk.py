"""Rows into `card_predictions` cheaply: plain tuples for SQLite, a CSV COPY for PostgreSQL.

The same reasons as `bulk` (the writer's CPU is taken from the requests): SQLite gets its own
`executemany` and PostgreSQL a `COPY … FROM STDIN (FORMAT csv)`, whose quoting the `csv` module
does. Floats go as `repr`, which reads back as the same double. Database errors are raised as
SQLAlchemy's, as `execute` raises them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from api.prediction_log.bulk import RowError, copy_in
from fraud_core.prediction_log.tables import CardPredictionRow, card_predictions

COLUMNS = tuple(column.name for column in card_predictions.columns)
_SQLITE_INSERT = str(card_predictions.insert().compile(dialect=sqlite.dialect()))
_COPY = "COPY card_predictions ({}) FROM STDIN WITH (FORMAT csv)".format(
    ", ".join(f'"{name}"' for name in COLUMNS)
)
_EPOCH = datetime(1970, 1, 1)


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _values(row: CardPredictionRow, created: str, tx_time: str) -> tuple[object, ...]:
    features = dict(zip(row.feature_names, map(float, row.features), strict=True))
    return (
        str(row.transaction_id),
        created,
        str(row.model_version),
        float(row.threshold),
        tx_time,
        int(row.tx_us),
        str(row.customer_id),
        str(row.terminal_id),
        float(row.amount),
        json.dumps(features, allow_nan=False),
        float(row.fraud_probability),
        bool(row.is_fraud),
    )


def _encoded(rows: Sequence[CardPredictionRow], zone: str) -> list[tuple[object, ...]]:
    """Each row's column values; times as text in SQLAlchemy's SQLite format (+ `zone`)."""
    out = []
    times: dict[datetime, str] = {}  # a batch request's rows share one time
    try:
        for row in rows:
            created = times.get(row.created_at)
            if created is None:
                created = _naive_utc(row.created_at).isoformat(" ", "microseconds") + zone
                times[row.created_at] = created
            tx_time = (_EPOCH + timedelta(microseconds=int(row.tx_us))).isoformat(
                " ", "microseconds"
            )
            out.append(_values(row, created, tx_time + zone))
    except (AttributeError, TypeError, ValueError, OverflowError) as exc:
        raise RowError(f"cannot encode the row of transaction {row[0]!r}: {exc}") from exc
    return out


def copy_data(rows: Sequence[CardPredictionRow]) -> bytes:
    """`rows` as the CSV that `_COPY` reads (booleans as t/f, times with their zone)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for values in _encoded(rows, "+00:00"):
        writer.writerow([("t" if v else "f") if isinstance(v, bool) else v for v in values])
    return buffer.getvalue().encode()


def insert_card_rows(conn: sa.Connection, rows: Sequence[CardPredictionRow]) -> None:
    """Insert `rows` in the connection's transaction; database errors as SQLAlchemy's."""
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(_SQLITE_INSERT, _encoded(rows, ""))
        return
    copy_in(conn, _COPY, copy_data(rows))
