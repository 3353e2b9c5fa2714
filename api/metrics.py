"""Prometheus metrics of the API, in a registry of its own (one per app)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.prediction_log import DROP_REASONS, PredictionLog
from fraud_core.prediction_log import LABELS

CARD_OUTCOMES = ("new", "resent", "too_late")
AUTH_REFUSALS = ("missing", "invalid", "scope")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
SCORE_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fraud_api_requests_total",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fraud_api_request_duration_seconds",
            "Time to answer a request, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "fraud_api_predictions_total",
            "Transactions scored, by decision",
            ["decision"],
            registry=self.registry,
        )
        self.scores = Histogram(
            "fraud_api_fraud_probability",
            "Distribution of the fraud probabilities returned",
            buckets=SCORE_BUCKETS,
            registry=self.registry,
        )
        self.model_info = Gauge(
            "fraud_api_model_info",
            "1 for the model version being served",
            ["model_version"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "fraud_api_model_reloads_total",
            "Attempts to load a newly promoted model, by result",
            ["result"],
            registry=self.registry,
        )
        self.feedback = Counter(
            "fraud_api_feedback_total",
            "Labels stored by POST /feedback (a repeat of the same label is not counted again)",
            ["label"],
            registry=self.registry,
        )
        for label in LABELS:
            self.feedback.labels(label=label)
        self.card_transactions = Counter(
            "fraud_api_card_transactions_total",
            "Card transactions sent to /transactions/score, by outcome: new (scored and added to "
            "the feature state), resent (a transaction_id seen before: its first features, not "
            "counted again), too_late (refused: behind the newest seen by more than the limit)",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in CARD_OUTCOMES:
            self.card_transactions.labels(outcome=outcome)
        self.label_corrections = Counter(
            "fraud_api_label_corrections_total",
            "Stored labels replaced by POST /feedback with a key of the label:correct scope",
            registry=self.registry,
        )
        self.auth_refused = Counter(
            "fraud_api_auth_refused_total",
            "Requests refused for their API key: missing, invalid (unknown, revoked, malformed), "
            "scope (a valid key without the route's scope)",
            ["reason"],
            registry=self.registry,
        )
        for reason in AUTH_REFUSALS:
            self.auth_refused.labels(reason=reason)
        self.rate_limited = Counter(
            "fraud_api_rate_limited_total",
            "Requests answered 429, by group of routes (score, feedback)",
            ["group"],
            registry=self.registry,
        )
        for group in ("score", "feedback"):
            self.rate_limited.labels(group=group)
        self.rate_limit_errors = Counter(
            "fraud_api_rate_limit_errors_total",
            "Requests let through unlimited because the rate limits' storage was unreachable",
            registry=self.registry,
        )
        self.prediction_log = PredictionLogCollector()
        self.registry.register(self.prediction_log)

    def model_loaded(self, version: str, previous: str | None) -> None:
        if previous is not None:
            self.model_info.remove(previous)
        self.model_info.labels(model_version=version).set(1)
        self.reloads.labels(result="loaded").inc()

    def reload_refused(self) -> None:
        self.reloads.labels(result="refused").inc()

    def observe_scores(self, probabilities: list[float], decisions: list[bool]) -> None:
        frauds = sum(decisions)
        if frauds:
            self.predictions.labels(decision="fraud").inc(frauds)
        if len(decisions) - frauds:
            self.predictions.labels(decision="legit").inc(len(decisions) - frauds)
        for p in probabilities:
            self.scores.observe(p)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class PredictionLogCollector(Collector):
    """The prediction log's counters, read when scraped (the log itself knows no Prometheus)."""

    def __init__(self) -> None:
        self.log: PredictionLog | None = None  # set in the app's lifespan; None: logging off

    def collect(self) -> Iterator[Metric]:
        stats = self.log.stats() if self.log is not None else None
        written = CounterMetricFamily(
            "fraud_api_prediction_log_written", "Predictions written to the prediction log"
        )
        written.add_metric([], stats.written if stats else 0)
        dropped = CounterMetricFamily(
            "fraud_api_prediction_log_dropped",
            "Predictions not logged, by reason: queue_full (the database is slower than the "
            "traffic), duplicate_id (a reused X-Request-ID), write_failed, closed",
            labels=["reason"],
        )
        for reason in DROP_REASONS:
            dropped.add_metric([reason], stats.dropped[reason] if stats else 0)
        depth = GaugeMetricFamily(
            "fraud_api_prediction_log_queue_depth", "Predictions waiting to be written"
        )
        depth.add_metric([], stats.queued if stats else 0)
        errors = CounterMetricFamily(
            "fraud_api_prediction_log_write_errors",
            "Failed attempts to write a batch (retried until the shutdown deadline)",
        )
        errors.add_metric([], stats.write_errors if stats else 0)
        yield from (written, dropped, depth, errors)


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (pure ASGI: no extra task)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(path, scope["method"], str(status["code"])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)
