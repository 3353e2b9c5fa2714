"""Drift figures on /metrics: the newest report Dagster's `prediction_drift` wrote, as gauges.

The drift asset stores each report in the prediction log's database (`drift_reports`); this
collector reads the newest when Prometheus scrapes (at most every `max_age_s`), so Prometheus
alerts and Grafana show what Dagster computed without a push gateway.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from fraud_core.prediction_log.reports import STATUS_CODES, StoredReport, latest_report

log = logging.getLogger("fraud_api")


class DriftCollector(Collector):
    """`fraud_drift_*` gauges from the newest drift report; nothing when there is none."""

    def __init__(self, engine: Callable[[], sa.Engine | None], max_age_s: float = 30.0) -> None:
        self._engine = engine
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._report: StoredReport | None = None

    def _newest(self) -> StoredReport | None:
        with self._lock:
            if time.monotonic() - self._read_at < self._max_age_s:
                return self._report
            engine = self._engine()
            try:
                self._report = latest_report(engine) if engine is not None else None
            except SQLAlchemyError as exc:
                # /metrics must answer even when the database does not: the stale-report alert
                # fires instead.
                log.warning("drift report unavailable: %s", exc)
            self._read_at = time.monotonic()
            return self._report

    def collect(self) -> Iterator[Metric]:
        report = self._newest()
        if report is None:
            return
        yield GaugeMetricFamily(
            "fraud_drift_report_timestamp_seconds",
            "When the newest drift report was computed (Unix time)",
            value=report.created_at.timestamp(),
        )
        yield GaugeMetricFamily(
            "fraud_drift_current_rows",
            "Recent predictions the newest drift report compared",
            value=report.current_rows,
        )
        if report.status not in STATUS_CODES:  # too few predictions: no figures to show
            return
        yield GaugeMetricFamily(
            "fraud_drift_status",
            "Drift verdict of the newest report: 0 ok, 1 warn, 2 fail",
            value=STATUS_CODES[report.status],
        )
        psi = GaugeMetricFamily(
            "fraud_drift_psi", "Population stability index per feature", labels=["feature"]
        )
        ks = GaugeMetricFamily(
            "fraud_drift_ks_statistic", "Two-sample KS statistic per feature", labels=["feature"]
        )
        for feature, figures in report.details.get("features", {}).items():
            psi.add_metric([feature], float(figures["psi"]))
            ks.add_metric([feature], float(figures["ks_statistic"]))
        yield psi
        yield ks
        score_psi = report.details.get("score_psi")
        if score_psi is not None:
            yield GaugeMetricFamily(
                "fraud_drift_score_psi",
                "Population stability index of the model's score",
                value=float(score_psi),
            )
