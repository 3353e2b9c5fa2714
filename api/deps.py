"""The app's shared objects as typed FastAPI dependencies: routes take these, not `app.state`.

`create_app` puts them on `app.state` (the prediction log once the lifespan has opened it).
Each is an `async def`: FastAPI would run a plain function on a worker thread per request.

The key dependencies (`api.auth`) do answer before the body is looked at: a caller without a key
learns nothing about what the route would have said of its body.

There is no dependency that raises 503 without a model: FastAPI resolves dependencies before it
reports an invalid body, and a bad request must keep its 422 whether or not a model is loaded.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.auth import Caller, admin_caller, feedback_key, score_caller
from api.config import Settings
from api.feature_state import ServingState
from api.metrics import Metrics
from api.prediction_log import PredictionLog
from api.serving import ModelHolder
from fraud_core.api_keys import ApiKey


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


async def _feature_state(request: Request) -> ServingState:
    feature_state: ServingState = request.app.state.feature_state
    return feature_state


AppSettings = Annotated[Settings, Depends(_settings)]
#: The model holder: `.current` is the served model (None before one is loaded).
Holder = Annotated[ModelHolder, Depends(_holder)]
AppMetrics = Annotated[Metrics, Depends(_metrics)]
#: None when the log is off (`FRAUD_PREDICTION_LOG_URL=off`).
PredictionLogDep = Annotated[PredictionLog | None, Depends(_prediction_log)]
#: The card contract's online feature state: `.state_for(model)` is the one to score with.
FeatureStateDep = Annotated[ServingState, Depends(_feature_state)]
#: The caller of a scoring route (its key when it sent one), counted against the score limit;
#: 401/403 without a `score` key when FRAUD_API_REQUIRE_SCORE_KEY is on.
ScoreCaller = Annotated[Caller, Depends(score_caller)]
#: The key of a label: `feedback` or `label:correct` scope, counted against the feedback limit.
FeedbackKey = Annotated[ApiKey, Depends(feedback_key)]
#: Who calls an admin route: an `admin` key, or the reload token.
AdminCaller = Annotated[str, Depends(admin_caller)]
