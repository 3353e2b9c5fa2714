"""The app's shared objects as typed FastAPI dependencies: routes take these, not `app.state`.

`create_app` puts them on `app.state` (the prediction log once the lifespan has opened it).
Each is an `async def`: FastAPI would run a plain function on a worker thread per request.

There is no dependency that raises 503 without a model: FastAPI resolves dependencies before it
reports an invalid body, and a bad request must keep its 422 whether or not a model is loaded.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.config import Settings
from api.metrics import Metrics
from api.prediction_log import PredictionLog
from api.serving import ModelHolder


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _holder(request: Request) -> ModelHolder:
    holder: ModelHolder = request.app.state.holder
    return holder


async def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def _prediction_log(request: Request) -> PredictionLog | None:
    prediction_log: PredictionLog | None = request.app.state.prediction_log
    return prediction_log


AppSettings = Annotated[Settings, Depends(_settings)]
#: The model holder: `.current` is the served model (None before one is loaded).
Holder = Annotated[ModelHolder, Depends(_holder)]
AppMetrics = Annotated[Metrics, Depends(_metrics)]
#: None when the log is off (`FRAUD_PREDICTION_LOG_URL=off`).
PredictionLogDep = Annotated[PredictionLog | None, Depends(_prediction_log)]
