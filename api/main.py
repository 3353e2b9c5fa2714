"""The FastAPI application: `create_app(settings)`, and `app` for uvicorn (`api.main:app`)."""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import Keys, document_optional_security
from api.config import Settings
from api.docs import add_offline_docs
from api.drift_metrics import DriftCollector
from api.feature_state import FeatureStateCollector, ServingState
from api.metrics import Metrics, MetricsMiddleware
from api.prediction_log import PredictionLog
from api.rate_limits import RateLimits
from api.routes import admin, feedback, health, predict, transactions
from api.serving import ModelHolder
from fraud_core.prediction_log import make_engine, resolve_url

log = logging.getLogger("fraud_api")

DESCRIPTION = """
Scores card transactions with the model promoted by the fraud platform.

The served model is of one of two contracts:

- `POST /predict` takes the 30 fields of the original contract (`Time`, `V1`…`V28`, `Amount`) and
  returns `fraud_probability`;
- `POST /transactions/score` takes a raw card transaction (`transaction_id`, `tx_datetime`,
  `customer_id`, `terminal_id`, `amount`), computes its behavioural features from the card's and
  the terminal's earlier transactions (the online feature state), and scores them.

The other contract's route answers 409. A newly promoted model is picked up while serving, without
dropping a request.

Every prediction is logged under its `request_id` (or `transaction_id`); `POST /feedback` takes
the true label back.

**API keys** (`Authorization: Bearer <key>`, the Authorize button here; made with
`fraud-keys create`): `POST /feedback` needs the `feedback` scope, and `label:correct` to replace a
stored label; `/admin/*` needs `admin`. Scoring is open unless the deployment sets
`FRAUD_API_REQUIRE_SCORE_KEY=true`, then it needs `score`. Requests are rate limited per key (per
client address without one): over the limit, 429 with `Retry-After`.
"""

#: The scoring routes: open by default, a `score` key when FRAUD_API_REQUIRE_SCORE_KEY is on.
SCORING_PATHS = ("/predict", "/predict/batch", "/transactions/score", "/transactions/score/batch")


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Validation errors with the field named; the offending value as text (NaN is not JSON)."""
    out = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        field = ".".join(p for p in loc if p not in ("body", "query")) or "body"
        if error.get("type") == "json_invalid":
            field = "body"
        item: dict[str, Any] = {
            "field": field,
            "loc": loc,
            "msg": error.get("msg", ""),
            "type": error.get("type", ""),
        }
        if "input" in error and field != "body":
            item["input"] = _json_safe(error["input"])
        out.append(item)
    return out


def _json_safe(value: Any) -> Any:
    """`value` with every non-finite float, however deeply nested, written as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _field_errors(exc)
    return JSONResponse(
        {"detail": errors, "message": "; ".join(f"{e['field']}: {e['msg']}" for e in errors[:5])},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


class BodySizeLimit:
    """Refuse bodies over `limit` bytes with 413 before they are read into memory."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.limit:
                response = JSONResponse(
                    {"detail": f"request body of {int(length)} bytes is over {self.limit}"},
                    status_code=status.HTTP_413_CONTENT_TOO_LARGE,
                )
                await response(scope, receive, send)
                return
            receive = self._counting(receive)
        await self.app(scope, receive, send)

    def _counting(self, receive: Receive) -> Receive:
        """`receive` that refuses a body as it grows past the limit (chunked: no Content-Length).

        FastAPI re-raises an HTTPException from reading the body, so this answers 413, not 400.
        """
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    detail = f"request body is over {self.limit} bytes"
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail)
            return message

        return counting_receive


def configure_logging() -> None:
    """Print the API's own log lines (model loads and refusals) when nothing else set logging up.

    uvicorn configures only its own loggers: without a handler, `fraud_api`'s INFO lines (each
    model loaded) went nowhere. A host that configures logging (pytest, a log config) keeps its own.
    """
    api_log = logging.getLogger("fraud_api")
    if api_log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    api_log.addHandler(handler)
    api_log.setLevel(logging.INFO)


def open_prediction_log(settings: Settings) -> PredictionLog | None:
    """The prediction log `settings` ask for, its writer started; None when it is off."""
    url = resolve_url(settings.prediction_log_url)
    if url is None:
        log.info("prediction log off (FRAUD_PREDICTION_LOG_URL=%r)", settings.prediction_log_url)
        return None
    # A malformed URL stops the start-up (a configuration error); a database that is down does
    # not: the log's writer keeps trying while the API serves.
    try:
        engine = make_engine(url)
    except ValueError as exc:
        raise ValueError(f"FRAUD_PREDICTION_LOG_URL: {exc}") from None
    prediction_log = PredictionLog(
        engine,
        queue_size=settings.prediction_log_queue_size,
        batch_size=settings.prediction_log_batch_size,
        max_latency_s=settings.prediction_log_flush_interval_s,
    )
    log.info("logging predictions to %s", prediction_log.where)
    return prediction_log


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    prediction_logs: list[PredictionLog | None] = [None]  # the lifespan's, once it is open
    feature_state = ServingState(
        settings, lambda: prediction_logs[0].engine if prediction_logs[0] else None
    )
    holder = ModelHolder(settings, metrics, prepare=feature_state.prepare)
    metrics.registry.register(FeatureStateCollector(feature_state))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging()
        # In the lifespan: Redis connections belong to the event loop that serves the requests.
        # A limit or a storage URL that cannot be read stops the start-up here.
        app.state.rate_limits = rate_limits = RateLimits(settings, metrics)
        prediction_log = open_prediction_log(settings)
        app.state.prediction_log = prediction_logs[0] = prediction_log
        metrics.prediction_log.log = prediction_log
        keys = None
        if prediction_log is not None:
            # The keys live beside the labels they sign; read again on a thread of their own.
            keys = Keys(prediction_log.engine, settings.api_keys_refresh_s)
            await anyio.to_thread.run_sync(keys.start)
        app.state.keys = keys
        log.info(
            "API keys: %s; scoring %s; rate limits %s in %s",
            "from the prediction log" if keys else "off (no prediction log)",
            "needs a score key" if settings.require_score_key else "open",
            rate_limits.describe(),
            rate_limits.where,
        )
        if prediction_log is not None:
            # The drift reports live beside the predictions they judge.
            drift = DriftCollector(lambda: prediction_log.engine)
            metrics.registry.register(drift)
        result = holder.refresh()
        if result.version is None:
            log.warning("starting without a model: %s", holder.not_ready_reason())
        # Move everything loaded so far out of the garbage collector's reach: with ~170,000
        # long-lived objects, each full collection took ~110 ms in the middle of a request
        # (the p99 of a 1,000-row batch fell from 150 ms to 53 ms).
        gc.collect()
        gc.freeze()
        holder.start_watching()
        try:
            yield
        finally:
            holder.stop_watching()
            if keys is not None:
                await anyio.to_thread.run_sync(keys.stop)
                app.state.keys = None
            await rate_limits.close()
            if prediction_log is not None:
                metrics.registry.unregister(drift)
                # The server has stopped taking requests and finished those in flight: every
                # prediction is queued by now, and closing writes them all.
                await anyio.to_thread.run_sync(
                    prediction_log.close, settings.prediction_log_shutdown_timeout_s
                )
                app.state.prediction_log = prediction_logs[0] = None
            # After the log: a snapshot then holds every prediction the log has.
            await anyio.to_thread.run_sync(feature_state.close)

    app = FastAPI(
        title="Fraud detection API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # Served by add_offline_docs from the package, not FastAPI's CDN pages.
        docs_url=None,
        redoc_url=None,
    )
    add_offline_docs(app)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.holder = holder
    app.state.prediction_log = None
    app.state.feature_state = feature_state
    app.state.keys = None
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.include_router(health.router)
    app.include_router(predict.router)
    app.include_router(transactions.router)
    app.include_router(feedback.router)
    app.include_router(admin.router)
    document_optional_security(app, settings, SCORING_PATHS)
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


app = create_app()
