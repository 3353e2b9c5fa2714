"""Drift reports beside the prediction log: the drift asset writes them, the API exports them.

One table, `drift_reports`, in the prediction log's database: each row is one drift computation
(status, rows compared, and per column PSI and KS statistic as JSON). The API's `/metrics` turns
the newest into `fraud_drift_*` gauges, so Prometheus and Grafana see what Dagster computed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from fraud_core.prediction_log.tables import UTCDateTime

metadata = sa.MetaData()
drift_reports = sa.Table(
    "drift_reports",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
    #: ok | warn | fail | insufficient_data
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("reference_rows", sa.Integer(), nullable=False),
    sa.Column("current_rows", sa.Integer(), nullable=False),
    #: {"features": {name: {"psi", "ks_statistic", "status"}}, "score_psi", "message", ...}
    sa.Column("details", sa.Text(), nullable=False),
)
#: Numeric codes of the statuses for the `fraud_drift_status` gauge.
STATUS_CODES = {"ok": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True)
class StoredReport:
    created_at: datetime
    status: str
    reference_rows: int
    current_rows: int
    details: dict[str, Any]


def save_report(
    engine: sa.Engine,
    status: str,
    reference_rows: int,
    current_rows: int,
    details: dict[str, Any],
    created_at: datetime | None = None,
) -> StoredReport:
    """Append one drift computation."""
    metadata.create_all(engine)
    report = StoredReport(
        created_at or datetime.now(UTC), status, reference_rows, current_rows, details
    )
    with engine.begin() as conn:
        conn.execute(
            drift_reports.insert().values(
                created_at=report.created_at,
                status=status,
                reference_rows=reference_rows,
                current_rows=current_rows,
                details=json.dumps(details),
            )
        )
    return report


def latest_report(engine: sa.Engine) -> StoredReport | None:
    """The newest drift computation, or None when none was made yet."""
    if not sa.inspect(engine).has_table(drift_reports.name):
        return None
    query = sa.select(drift_reports).order_by(drift_reports.c.id.desc()).limit(1)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    return StoredReport(
        row.created_at, row.status, row.reference_rows, row.current_rows, json.loads(row.details)
    )
