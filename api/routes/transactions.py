"""Scoring routes of the card contract: raw transactions in, behavioural features from the state.

The online feature state (`api.feature_state`) computes a transaction's features from the
customer's and the terminal's earlier transactions and adds it, atomically; the served card model
scores those features. A re-sent `transaction_id` gets its first features again (the same
probability from the same model) and is neither counted nor logged a second time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import Field, TypeAdapter
from redis.exceptions import RedisError

from api.auth import AUTH_RESPONSES
from api.card_schemas import CARD_EXAMPLE, CardBatchScore, CardScore, CardTransactionIn
from api.deps import (
    AppMetrics,
    AppSettings,
    FeatureStateDep,
    Holder,
    PredictionLogDep,
    ScoreCaller,
)
from api.feature_state import ServingState
from api.metrics import Metrics
from api.prediction_log import PredictionLog
from api.scoring import (
    ExplainFlag,
    batch_body,
    explanations,
    read_batch,
    require_contract,
    served_model,
)
from api.serving import Served
from fraud_core.cards.state import CardTransaction, FeatureState, Scored, TooLate, too_late
from fraud_core.contracts import CARDS
from fraud_core.prediction_log import CardPredictionRow

router = APIRouter(tags=["card transactions"])

FeaturesFlag = Annotated[
    bool, Query(description="Add the behavioural features the model scored, by name")
]
_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    409: {"description": "The served model is of the Kaggle contract: use /predict"},
    422: {"description": "A field is invalid, or the transaction is too late to score"},
    503: {"description": "No model loaded yet, or the feature state is unreachable"},
}


def _state(feature_state: ServingState, served: Served) -> FeatureState:
    state = feature_state.state_for(served.model)
    if state is None:  # a swap to a model of other windows is under way: its state is not yet
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"the feature state is not ready for model {served.version}; try again",
        )
    return state


def _card(transaction: CardTransactionIn) -> CardTransaction:
    return CardTransaction(
        transaction.transaction_id,
        transaction.tx_datetime,  # validated into µs since the epoch
        transaction.customer_id,
        transaction.terminal_id,
        transaction.amount,
    )


def _too_late(exc: TooLate, where: tuple[str | int, ...]) -> RequestValidationError:
    """A 422 that names the field, as a validation error does (`api.main` formats it)."""
    return RequestValidationError(
        [{"loc": ("body", *where, "tx_datetime"), "msg": str(exc), "type": "too_late"}]
    )


def _unreachable(feature_state: ServingState, exc: RedisError) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        f"the feature state ({feature_state.where}) is unreachable: {exc}",
    )


def _answers(
    served: Served,
    transactions: Sequence[CardTransactionIn],
    scored: Sequence[Scored],
    *,
    with_features: bool,
    explain_top: int | None,
    metrics: Metrics,
    prediction_log: PredictionLog | None,
) -> list[CardScore]:
    """Score the features, count and log the new transactions, and build the answers."""
    model = served.model
    matrix = np.array([s.features for s in scored], dtype=np.float64)
    probabilities = model.predict_proba(matrix).tolist()
    threshold = model.threshold
    decisions = [p >= threshold for p in probabilities]
    new = [i for i, s in enumerate(scored) if s.new]
    resent = len(scored) - len(new)
    metrics.observe_scores([probabilities[i] for i in new], [decisions[i] for i in new])
    if new:
        metrics.card_transactions.labels(outcome="new").inc(len(new))
    if resent:
        metrics.card_transactions.labels(outcome="resent").inc(resent)
    names = model.input_fields
    if prediction_log is not None and new:
        now = datetime.now(UTC)
        prediction_log.record(
            [
                CardPredictionRow(
                    transactions[i].transaction_id,
                    now,
                    served.version,
                    threshold,
                    transactions[i].tx_datetime,
                    transactions[i].customer_id,
                    transactions[i].terminal_id,
                    transactions[i].amount,
                    names,
                    scored[i].features,
                    probabilities[i],
                    decisions[i],
                )
                for i in new
            ]
        )
    explained = explanations(served, matrix, explain_top) if explain_top else [None] * len(scored)
    return [
        CardScore(
            transaction_id=t.transaction_id,
            fraud_probability=p,
            is_fraud=d,
            threshold=threshold,
            model_version=served.version,
            features=dict(zip(names, s.features, strict=True)) if with_features else None,
            explanation=e,
        )
        for t, s, p, d, e in zip(
            transactions, scored, probabilities, decisions, explained, strict=True
        )
    ]


@router.post(
    "/transactions/score",
    response_model=CardScore,
    response_model_exclude_none=True,
    responses=_RESPONSES,
)
async def score_transaction(
    caller: ScoreCaller,
    transaction: Annotated[CardTransactionIn, Body(examples=[CARD_EXAMPLE])],
    holder: Holder,
    settings: AppSettings,
    metrics: AppMetrics,
    prediction_log: PredictionLogDep,
    feature_state: FeatureStateDep,
    features: FeaturesFlag = False,
    explain: ExplainFlag = False,
) -> CardScore:
    """Score one raw card transaction: `fraud_probability` and the decision at the threshold.

    Its behavioural features come from the customer's and the terminal's earlier transactions;
    then it is added to them. Re-sending a `transaction_id` returns the first answer. The score is
    logged under `transaction_id`, which `POST /feedback` takes with the true label.
    """
    served = served_model(holder)
    require_contract(served, CARDS)
    state = _state(feature_state, served)
    try:
        scored = state.score(_card(transaction))
    except TooLate as exc:
        metrics.card_transactions.labels(outcome="too_late").inc()
        raise _too_late(exc, ()) from exc
    except RedisError as exc:
        raise _unreachable(feature_state, exc) from exc
    [answer] = _answers(
        served,
        [transaction],
        [scored],
        with_features=features,
        explain_top=settings.explain_top if explain else None,
        metrics=metrics,
        prediction_log=prediction_log,
    )
    return answer


#: A non-empty list, parsed and validated by `read_batch`.
_BATCH = TypeAdapter(Annotated[list[CardTransactionIn], Field(min_length=1)])
_BATCH_BODY = batch_body(
    "CardTransactionIn",
    {"two transactions": [CARD_EXAMPLE, {**CARD_EXAMPLE, "transaction_id": "tx-000124"}]},
)


def _too_late_in(state: FeatureState, txs: Sequence[CardTransaction]) -> tuple[int, TooLate] | None:
    """The first transaction of a batch too late to score, once those before it are added.

    Checked before scoring so that a refused batch adds nothing (`score_many` stops at the late
    one, having added those before it); the rule and the message are the state's own. (A re-sent
    old transaction counts as late here, where alone it would get its first answer back.)
    """
    newest = state.newest_us()
    for i, tx in enumerate(txs):
        if newest is not None and too_late(tx.tx_us, newest, state.definition):
            return i, TooLate(tx, newest, state.definition)
        newest = tx.tx_us if newest is None else max(newest, tx.tx_us)
    return None


@router.post(
    "/transactions/score/batch",
    response_model=CardBatchScore,
    response_model_exclude_none=True,
    openapi_extra={"requestBody": _BATCH_BODY},
    responses={
        **_RESPONSES,
        413: {"description": "More transactions than the batch limit (1,000 by default)"},
    },
)
async def score_transactions(
    caller: ScoreCaller,
    request: Request,
    holder: Holder,
    settings: AppSettings,
    metrics: AppMetrics,
    prediction_log: PredictionLogDep,
    feature_state: FeatureStateDep,
    features: FeaturesFlag = False,
    explain: ExplainFlag = False,
) -> CardBatchScore:
    """Score up to `FRAUD_API_MAX_BATCH` (default 1,000) card transactions, in order.

    Each sees the ones before it in the batch, as if sent one by one. A transaction too late to
    score refuses the whole batch (422 naming it), and nothing of the batch is added.
    """
    transactions = await read_batch(request, _BATCH, settings.max_batch)
    served = served_model(holder)
    require_contract(served, CARDS)
    state = _state(feature_state, served)
    txs = [_card(t) for t in transactions]
    try:
        late = _too_late_in(state, txs)
        if late is not None:
            metrics.card_transactions.labels(outcome="too_late").inc()
            raise _too_late(late[1], (late[0],))
        scored = state.score_many(txs)
    except TooLate as exc:
        # Between the check and the batch another worker moved the newest time on: those before
        # the late one were added, so they are counted and logged as a single request would be.
        position = len(exc.scored)
        if position:
            _answers(
                served,
                transactions[:position],
                exc.scored,
                with_features=False,
                explain_top=None,
                metrics=metrics,
                prediction_log=prediction_log,
            )
        metrics.card_transactions.labels(outcome="too_late").inc()
        raise _too_late(exc, (position,)) from exc
    except RedisError as exc:
        raise _unreachable(feature_state, exc) from exc
    results = _answers(
        served,
        transactions,
        scored,
        with_features=features,
        explain_top=settings.explain_top if explain else None,
        metrics=metrics,
        prediction_log=prediction_log,
    )
    return CardBatchScore(
        model_version=served.version,
        threshold=served.model.threshold,
        count=len(results),
        results=results,
    )
