"""Label feedback: the true outcome of a scored transaction, stored beside its prediction."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Response, status
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from api.deps import AppMetrics, PredictionLogDep
from api.prediction_log import PredictionLog
from api.schemas import FeedbackIn, FeedbackStored
from fraud_core.prediction_log import (
    ConflictingLabel,
    Feedback,
    UnknownRequestId,
    add_feedback,
)

log = logging.getLogger("fraud_api.feedback")

router = APIRouter(tags=["feedback"])

#: How long a label for a prediction still in the log's queue waits for it to be written.
FLUSH_TIMEOUT_S = 5.0


def _store(prediction_log: PredictionLog, body: FeedbackIn) -> Feedback:
    def store() -> Feedback:
        return add_feedback(
            prediction_log.engine,
            body.request_id,
            body.label,
            source=body.source,
            comment=body.comment,
        )

    try:
        return store()
    except UnknownRequestId:
        # A prediction made a moment ago may still be on its way to the table: the flush is only
        # paid for ids not found, not on every label.
        prediction_log.flush(FLUSH_TIMEOUT_S)
        return store()


@router.post(
    "/feedback",
    status_code=status.HTTP_201_CREATED,
    response_model=FeedbackStored,
    response_model_exclude_none=True,
    responses={
        200: {"description": "The same label was already stored: nothing changed"},
        404: {"description": "No prediction was logged under this request id"},
        409: {"description": "The prediction already has the other label"},
        422: {"description": "A field is invalid, e.g. a label other than fraud or legit"},
        503: {"description": "The prediction log is turned off or its database is unreachable"},
    },
)
async def feedback(
    response: Response,
    body: FeedbackIn,
    prediction_log: PredictionLogDep,
    metrics: AppMetrics,
) -> FeedbackStored:
    """Record the true label (`fraud` or `legit`) of a prediction, by its `request_id`.

    Labels are final: the same label again answers 200, the other one 409. Nothing is written
    when the answer is an error.
    """
    if prediction_log is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the prediction log is off (FRAUD_PREDICTION_LOG_URL=off): there is nothing to label",
        )
    try:
        # Database work: on a worker thread, not on the event loop that serves /predict.
        stored = await run_in_threadpool(_store, prediction_log, body)
    except UnknownRequestId as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except ConflictingLabel as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except SQLAlchemyError as exc:
        log.error("cannot store feedback in %s: %s", prediction_log.where, exc)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the prediction log's database is unreachable"
        ) from exc
    if stored.created:
        metrics.feedback.labels(label=stored.label).inc()
    else:
        response.status_code = status.HTTP_200_OK
    return FeedbackStored(
        request_id=stored.request_id,
        label=stored.label,
        labelled_at=stored.labelled_at,
        source=stored.source,
        comment=stored.comment,
        created=stored.created,
    )
