"""Scoring routes of the Kaggle contract: one transaction, a batch, with an optional explanation."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, Header, Request, Response
from pydantic import Field, TypeAdapter

from api.auth import AUTH_RESPONSES
from api.deps import AppMetrics, AppSettings, Holder, PredictionLogDep, ScoreCaller
from api.schemas import (
    EXAMPLE,
    BatchItem,
    BatchPrediction,
    Explanation,
    Prediction,
    Transaction,
)
from api.scoring import (
    ExplainFlag,
    batch_body,
    explanations,
    read_batch,
    require_contract,
    served_model,
)
from fraud_core.contracts import KAGGLE
from fraud_core.prediction_log import PredictionRow
from fraud_core.schema import FEATURE_COLUMNS

router = APIRouter(tags=["scoring"])

RequestIdHeader = Annotated[
    str | None,
    Header(
        alias="X-Request-ID",
        description="Your id for this request, kept when it is 1-64 letters, digits or `._:-` "
        "(else one is made); the prediction is logged under it",
    ),
]
#: A client's id is kept only when it is this plain: it becomes a primary key and a log field.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def _request_id(given: str | None, response: Response) -> str:
    request_id = given if given and _CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    response.headers["X-Request-ID"] = request_id
    return request_id


def _matrix(transactions: list[Any]) -> np.ndarray:
    return np.array(
        [[getattr(t, name) for name in FEATURE_COLUMNS] for t in transactions], dtype=np.float64
    )


@router.post(
    "/predict",
    response_model=Prediction,
    response_model_exclude_none=True,
    responses={
        **AUTH_RESPONSES,
        409: {"description": "The served model is of the card contract: use /transactions/score"},
        503: {"description": "No model loaded yet"},
    },
)
async def predict(
    caller: ScoreCaller,
    response: Response,
    transaction: Annotated[Transaction, Body(examples=[EXAMPLE])],
    holder: Holder,
    settings: AppSettings,
    metrics: AppMetrics,
    prediction_log: PredictionLogDep,
    explain: ExplainFlag = False,
    x_request_id: RequestIdHeader = None,
) -> Prediction:
    """Score one transaction: `fraud_probability` and the decision at the model's threshold.

    The prediction is logged under `request_id`, which `POST /feedback` takes with the true label.
    """
    served = served_model(holder)
    require_contract(served, KAGGLE)
    request_id = _request_id(x_request_id, response)
    raw = _matrix([transaction])
    probability = float(served.model.predict_proba(raw)[0])
    is_fraud = probability >= served.model.threshold
    metrics.observe_scores([probability], [is_fraud])
    if prediction_log is not None:
        # Only a tuple onto a queue here; the database work happens on the log's own thread.
        prediction_log.record(
            [
                PredictionRow(
                    request_id,
                    datetime.now(UTC),
                    served.version,
                    served.model.threshold,
                    raw[0],
                    probability,
                    is_fraud,
                )
            ]
        )
    return Prediction(
        request_id=request_id,
        fraud_probability=probability,
        is_fraud=is_fraud,
        threshold=served.model.threshold,
        model_version=served.version,
        explanation=explanations(served, raw, settings.explain_top)[0] if explain else None,
    )


#: A non-empty list, parsed and validated by `read_batch`.
_BATCH = TypeAdapter(Annotated[list[Transaction], Field(min_length=1)])
_BATCH_BODY = batch_body("Transaction", {"two transactions": [EXAMPLE, EXAMPLE]})


@router.post(
    "/predict/batch",
    response_model=BatchPrediction,
    response_model_exclude_none=True,
    openapi_extra={"requestBody": _BATCH_BODY},
    responses={
        **AUTH_RESPONSES,
        409: {"description": "The served model is of the card contract: use /transactions/score"},
        413: {"description": "More transactions than the batch limit (1,000 by default)"},
        422: {"description": "A transaction is invalid: the field and the reason"},
        503: {"description": "No model loaded yet"},
    },
)
async def predict_batch(
    caller: ScoreCaller,
    request: Request,
    response: Response,
    holder: Holder,
    settings: AppSettings,
    metrics: AppMetrics,
    prediction_log: PredictionLogDep,
    explain: ExplainFlag = False,
    x_request_id: RequestIdHeader = None,
) -> BatchPrediction:
    """Score up to `FRAUD_API_MAX_BATCH` (default 1,000) transactions; results in input order.

    The body is a JSON list of the objects `/predict` takes. Item `i` is logged under
    `<request_id>-<i>`, its own `request_id` in the answer.
    """
    transactions = await read_batch(request, _BATCH, settings.max_batch)
    served = served_model(holder)
    require_contract(served, KAGGLE)
    batch_id = _request_id(x_request_id, response)
    item_ids = [f"{batch_id}-{i}" for i in range(len(transactions))]
    raw = _matrix(transactions)
    probabilities = served.model.predict_proba(raw).tolist()
    threshold = served.model.threshold
    decisions = [p >= threshold for p in probabilities]
    metrics.observe_scores(probabilities, decisions)
    if prediction_log is not None:
        now = datetime.now(UTC)
        prediction_log.record(
            [
                PredictionRow(item_id, now, served.version, threshold, row, p, d)
                for item_id, row, p, d in zip(item_ids, raw, probabilities, decisions, strict=True)
            ]
        )
    explained: list[Explanation | None] = (
        list(explanations(served, raw, settings.explain_top))
        if explain
        else [None] * len(probabilities)
    )
    return BatchPrediction(
        request_id=batch_id,
        model_version=served.version,
        threshold=threshold,
        count=len(probabilities),
        results=[
            BatchItem(request_id=i, fraud_probability=p, is_fraud=d, explanation=e)
            for i, p, d, e in zip(item_ids, probabilities, decisions, explained, strict=True)
        ],
    )
