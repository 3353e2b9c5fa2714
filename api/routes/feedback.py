"""Label feedback: the true outcome of a scored transaction, stored beside its prediction.

By `request_id` for the Kaggle contract's predictions, by `transaction_id` for card transactions;
a card label also goes to the online feature state, where it counts in the terminal's risk for
transactions scored more than the label delay after it. Every label needs an API key with the
`feedback` scope and is stored with its key id; replacing a stored label needs `label:correct`,
and the label history (`label_events`) keeps both.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.exceptions import RequestValidationError
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from api.auth import AUTH_RESPONSES
from api.card_schemas import CardFeedbackStored
from api.deps import AppMetrics, FeatureStateDep, FeedbackKey, PredictionLogDep
from api.feature_state import ServingState
from api.prediction_log import PredictionLog
from api.schemas import FeedbackIn, FeedbackStored
from fraud_core.api_keys import LABEL_CORRECT, ApiKey
from fraud_core.prediction_log import (
    CardFeedback,
    ConflictingCardLabel,
    ConflictingLabel,
    Feedback,
    UnknownRequestId,
    UnknownTransactionId,
    add_card_feedback,
    add_feedback,
)

log = logging.getLogger("fraud_api.feedback")

router = APIRouter(tags=["feedback"])

#: How long a label for a prediction still in the log's queue waits for it to be written.
FLUSH_TIMEOUT_S = 5.0
#: Beyond another worker's flush interval: the time its batch takes to reach the table.
WRITE_MARGIN_S = 0.05


def _store(prediction_log: PredictionLog, body: FeedbackIn, key: ApiKey) -> Feedback | CardFeedback:
    def store() -> Feedback | CardFeedback:
        add = add_card_feedback if body.transaction_id is not None else add_feedback
        prediction_id = body.transaction_id or body.request_id
        assert prediction_id is not None  # FeedbackIn holds exactly one of the two
        return add(
            prediction_log.engine,
            prediction_id,
            body.label,
            source=body.source,
            comment=body.comment,
            key_id=key.key_id,
            correct=key.allows(LABEL_CORRECT),
        )

    try:
        return store()
    except (UnknownRequestId, UnknownTransactionId):
        # A prediction made a moment ago may still be on its way to the table: the flush is only
        # paid for ids not found, not on every label.
        prediction_log.flush(FLUSH_TIMEOUT_S)
    try:
        return store()
    except (UnknownRequestId, UnknownTransactionId):
        # Scored by another worker or replica, whose writer runs on its own clock: each writes
        # what it holds within one flush interval (the same setting everywhere), plus the write.
        time.sleep(prediction_log.max_latency_s + WRITE_MARGIN_S)
        return store()


@router.post(
    "/feedback",
    status_code=status.HTTP_201_CREATED,
    response_model=FeedbackStored | CardFeedbackStored,
    response_model_exclude_none=True,
    responses={
        **AUTH_RESPONSES,
        200: {
            "description": "The same label was already stored: nothing changed; or (a key with "
            "label:correct) the other label was replaced: `corrected` and `previous_label`"
        },
        404: {"description": "No prediction was logged under this request or transaction id"},
        409: {
            "description": "The prediction already has the other label (and the key may not "
            "correct labels)"
        },
        422: {"description": "A field is invalid, e.g. a label other than fraud or legit"},
        503: {
            "description": "The prediction log is turned off or its database is unreachable, "
            "or (a card label, stored) the feature state is: send it again"
        },
    },
)
async def feedback(
    key: FeedbackKey,
    response: Response,
    body: FeedbackIn,
    prediction_log: PredictionLogDep,
    metrics: AppMetrics,
    feature_state: FeatureStateDep,
) -> FeedbackStored | CardFeedbackStored:
    """Record the true label (`fraud` or `legit`) of a prediction, by its `request_id` (from
    /predict) or its `transaction_id` (a card transaction from /transactions/score).

    Needs an API key with the `feedback` scope; the label is stored with its key id. The same
    label again answers 200; the other one 409, unless the key has `label:correct`: then it
    replaces the stored label (200, `corrected: true`, `previous_label`) and the label history
    keeps both. Nothing is written when the answer is an error. A card label also counts in the
    online feature state: in its terminal's risk, for transactions more than the label delay later.
    """
    _one_key(body)
    if prediction_log is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the prediction log is off (FRAUD_PREDICTION_LOG_URL=off): there is nothing to label",
        )
    try:
        # Database work: on a worker thread, not on the event loop that serves /predict.
        stored = await run_in_threadpool(_store, prediction_log, body, key)
    except (UnknownRequestId, UnknownTransactionId) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except (ConflictingLabel, ConflictingCardLabel) as exc:
        detail = f"{exc}: correcting a label needs a key with the {LABEL_CORRECT} scope"
        raise HTTPException(status.HTTP_409_CONFLICT, detail) from exc
    except SQLAlchemyError as exc:
        log.error("cannot store feedback in %s: %s", prediction_log.where, exc)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the prediction log's database is unreachable"
        ) from exc
    if isinstance(stored, CardFeedback):
        _count_in_state(feature_state, stored)
    if stored.corrected:
        metrics.label_corrections.inc()
        log.info(
            "label of %r corrected from %s to %s by key %s",
            body.transaction_id or body.request_id,
            stored.previous_label,
            stored.label,
            key.key_id,
        )
    elif stored.created:
        metrics.feedback.labels(label=stored.label).inc()
    if not stored.created or stored.corrected:
        response.status_code = status.HTTP_200_OK
    common: dict[str, Any] = {
        "label": stored.label,
        "labelled_at": stored.labelled_at,
        "source": stored.source,
        "comment": stored.comment,
        "created": stored.created,
        "key_id": stored.key_id,
        "corrected": stored.corrected,
        "previous_label": stored.previous_label,
    }
    if isinstance(stored, CardFeedback):
        return CardFeedbackStored(transaction_id=stored.transaction_id, **common)
    return FeedbackStored(request_id=stored.request_id, **common)


def _one_key(body: FeedbackIn) -> None:
    """A 422 naming the field unless exactly one of request_id and transaction_id is given."""
    if (body.request_id is None) == (body.transaction_id is None):
        field, what = (
            ("request_id", "missing") if body.request_id is None else ("transaction_id", "extra")
        )
        raise RequestValidationError(
            [
                {
                    "loc": ("body", field),
                    "msg": "name the prediction by exactly one of request_id (POST /predict) or "
                    "transaction_id (POST /transactions/score)",
                    "type": what,
                }
            ]
        )


def _count_in_state(feature_state: ServingState, stored: CardFeedback) -> None:
    """Give the stored label to the online state (again for a repeat: it may have missed it)."""
    state = feature_state.state
    if state is None:  # no card model served: the state starts from the log when one is
        return
    try:
        # A transaction gone from the state (older than its retention) no longer counts anywhere.
        state.label(stored.transaction_id, stored.label == "fraud")
    except RedisError as exc:
        log.error("label of %r stored, not in the feature state: %s", stored.transaction_id, exc)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"the label is stored but the feature state ({feature_state.where}) is unreachable: "
            "send it again to count it in the terminal's risk",
        ) from exc
