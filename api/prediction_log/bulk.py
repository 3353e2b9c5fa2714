"""Rows into the predictions table at a few microseconds of CPU each.

The writer thread shares the interpreter lock with the API that serves requests, so its CPU time
per row is taken from the requests. SQLAlchemy's `execute(insert(), rows)` cost about 75 µs per
row on SQLite and 275 µs on PostgreSQL, where psycopg2 renders every float as text (measured, 500
rows a batch). Here SQLite gets plain tuples through its own `executemany` (3 µs to build them,
12 µs in sqlite3, most of it inside SQLite) and PostgreSQL a binary COPY packed by numpy and
struct (6 µs to build, 12 µs a row in all). Both raise SQLAlchemy's exceptions, as `execute` does.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from fraud_core.prediction_log.tables import PredictionRow, predictions
from fraud_core.schema import FEATURE_COLUMNS


class RowError(ValueError):
    """A row that cannot be written as it is (a feature missing, a value of the wrong type)."""


COLUMNS = tuple(column.name for column in predictions.columns)
_SQLITE_INSERT = str(predictions.insert().compile(dialect=sqlite.dialect()))

_COPY = "COPY predictions ({}) FROM STDIN WITH (FORMAT binary)".format(
    ", ".join(f'"{name}"' for name in COLUMNS)
)
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)
#: Each feature as a binary COPY field: its length (8) and the big-endian double.
_FEATURE_FIELDS = np.dtype([("length", ">i4"), ("value", ">f8")])
_TAIL = struct.Struct("!idib")  # fraud_probability, is_fraud


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _features(rows: Sequence[PredictionRow]) -> np.ndarray:
    try:
        matrix = np.array([row.features for row in rows], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise RowError(f"features are not {len(FEATURE_COLUMNS)} numbers: {exc}") from exc
    if matrix.shape != (len(rows), len(FEATURE_COLUMNS)):
        raise RowError(f"features are not {len(FEATURE_COLUMNS)} numbers per row")
    return matrix


def sqlite_rows(rows: Sequence[PredictionRow]) -> list[tuple[object, ...]]:
    """`rows` as the parameters of `_SQLITE_INSERT`."""
    out = []
    times: dict[datetime, str] = {}  # a batch request's rows share one time
    try:
        for row in rows:
            features = row.features
            values = features.tolist() if isinstance(features, np.ndarray) else list(features)
            if len(values) != len(FEATURE_COLUMNS):
                raise RowError(f"{len(values)} features, not {len(FEATURE_COLUMNS)}")
            created = times.get(row.created_at)
            if created is None:
                # SQLAlchemy's own SQLite DATETIME format, which `UTCDateTime` reads back.
                created = _utc(row.created_at).replace(tzinfo=None).isoformat(" ", "microseconds")
                times[row.created_at] = created
            out.append(
                (
                    row.request_id,
                    created,
                    row.model_version,
                    float(row.threshold),
                    *values,
                    float(row.fraud_probability),
                    bool(row.is_fraud),
                )
            )
    except (AttributeError, TypeError, ValueError) as exc:
        raise RowError(f"cannot encode the row of request {row.request_id!r}: {exc}") from exc
    return out


def copy_data(rows: Sequence[PredictionRow]) -> bytes:
    """`rows` in PostgreSQL's binary COPY format, the columns in `COLUMNS` order."""
    fields = np.empty((len(rows), len(FEATURE_COLUMNS)), dtype=_FEATURE_FIELDS)
    fields["length"] = 8
    fields["value"] = _features(rows)
    block = fields.tobytes()
    width = len(block) // len(rows)
    parts = [_COPY_HEADER]
    try:
        for i, row in enumerate(rows):
            request_id = row.request_id.encode()
            version = row.model_version.encode()
            micros = (_utc(row.created_at) - _PG_EPOCH) // _MICROSECOND
            parts.append(
                struct.pack(
                    f"!hi{len(request_id)}siqi{len(version)}sid",
                    len(COLUMNS),
                    len(request_id),
                    request_id,
                    8,
                    micros,
                    len(version),
                    version,
                    8,
                    row.threshold,
                )
            )
            parts.append(block[i * width : (i + 1) * width])
            parts.append(_TAIL.pack(8, row.fraud_probability, 1, bool(row.is_fraud)))
    except (AttributeError, TypeError, struct.error) as exc:
        raise RowError(f"cannot encode the row of request {row.request_id!r}: {exc}") from exc
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def insert_rows(conn: sa.Connection, rows: Sequence[PredictionRow]) -> None:
    """Insert `rows` in the connection's transaction; database errors as SQLAlchemy's."""
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(_SQLITE_INSERT, sqlite_rows(rows))
        return
    copy_in(conn, _COPY, copy_data(rows))


def copy_in(conn: sa.Connection, copy: str, data: bytes) -> None:
    """Run the `COPY … FROM STDIN` statement `copy` on `data`, in the connection's transaction."""
    dbapi = conn.dialect.loaded_dbapi
    cursor = conn.connection.cursor()
    try:
        cursor.copy_expert(copy, io.BytesIO(data))
    except dbapi.Error as exc:
        # The raw cursor's error, as SQLAlchemy raises it elsewhere (IntegrityError for a repeated
        # id, OperationalError for a lost connection), so the writer handles both paths alike.
        raise sa.exc.DBAPIError.instance(copy, None, exc, dbapi.Error) from exc
    finally:
        cursor.close()
