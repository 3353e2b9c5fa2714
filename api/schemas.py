"""Request and response models. The transaction fields come from `fraud_core.schema`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from api.card_fields import CardId
from fraud_core.prediction_log import REQUEST_ID_LENGTH
from fraud_core.schema import FEATURE_COLUMNS, SCHEMA

EXAMPLE: dict[str, float] = {
    "Time": 406.0,
    **{f"V{i}": v for i, v in enumerate(
        [-2.31, 1.95, -1.61, 4.0, -0.52, -1.43, -2.54, 1.39, -2.77, -2.77, 3.2, -2.9, -0.6,
         -4.29, 0.39, -1.14, -2.83, -0.02, 0.42, 0.13, 0.52, -0.04, -0.47, 0.32, 0.04, 0.18,
         0.26, -0.14], start=1)},
    "Amount": 0.0,
}  # fmt: skip


def _field(name: str) -> Any:
    spec = SCHEMA[name]
    return (
        float,
        Field(..., ge=spec.minimum, le=spec.maximum, description=spec.description),
    )


#: One transaction: exactly the 30 raw fields, finite numbers, no other key.
Transaction = create_model(
    "Transaction",
    __config__=ConfigDict(
        extra="forbid",
        strict=True,  # "12.5" is not a number here: a payment system sends numbers
        allow_inf_nan=False,
        json_schema_extra={"examples": [dict(EXAMPLE)]},
    ),
    **{name: _field(name) for name in FEATURE_COLUMNS},
)


class Contribution(BaseModel):
    feature: str
    contribution: float = Field(description="Push on the log-odds of fraud (XGBoost SHAP value)")
    value: float = Field(description="The feature's value for this transaction")


class Explanation(BaseModel):
    base_value: float = Field(description="Log-odds before any feature")
    toward_fraud: list[Contribution]
    toward_legit: list[Contribution]


REQUEST_ID_DESCRIPTION = (
    "The id this prediction is logged under (also the X-Request-ID response header); "
    "send it to POST /feedback with the true label"
)


class Prediction(BaseModel):
    request_id: str = Field(description=REQUEST_ID_DESCRIPTION)
    fraud_probability: float = Field(description="Probability that the transaction is fraud")
    is_fraud: bool
    threshold: float
    model_version: str
    explanation: Explanation | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "3f9a0c2e6b8d4e51a7c0d9b2e4f61a38",
                    "fraud_probability": 0.0123,
                    "is_fraud": False,
                    "threshold": 0.697,
                    "model_version": "20261125T184204Z-23f4b1cb",
                }
            ]
        }
    )


class BatchItem(BaseModel):
    request_id: str = Field(description="`<the batch's request_id>-<position>`, for /feedback")
    fraud_probability: float
    is_fraud: bool
    explanation: Explanation | None = None


class BatchPrediction(BaseModel):
    request_id: str = Field(description="The batch's id (X-Request-ID); items add `-<position>`")
    model_version: str
    threshold: float
    count: int
    results: list[BatchItem]


class ModelInfo(BaseModel):
    model_version: str
    contract: str = Field("kaggle", description="kaggle (POST /predict) or cards")
    input_fields: list[str] = Field(default_factory=list, description="What a row of input holds")
    source: str
    loaded_at: str
    mlflow_run_id: str | None = None
    registered_model: dict[str, Any] | None = None
    data_fingerprint: str | None = None
    data_source: str | None = None
    threshold: float
    features: list[str]
    metrics: dict[str, float] = Field(default_factory=dict)
    created_at: str | None = None


class FeedbackIn(BaseModel):
    """The true label of a scored transaction, once it is known (a chargeback, a confirmation).

    The prediction is named by exactly one of `request_id` (what /predict answered) or
    `transaction_id` (a card transaction /transactions/score scored); the route checks it, so
    that its 422 names the field.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "request_id": "3f9a0c2e6b8d4e51a7c0d9b2e4f61a38",
                    "label": "fraud",
                    "source": "chargeback",
                },
                {"transaction_id": "tx-000123", "label": "legit", "source": "analyst:ana"},
            ]
        },
    )

    request_id: str | None = Field(
        None,
        min_length=1,
        max_length=REQUEST_ID_LENGTH,
        description="The `request_id` that /predict or /predict/batch answered with",
    )
    transaction_id: CardId | None = Field(
        None, description="The `transaction_id` of a card transaction /transactions/score scored"
    )
    label: Literal["fraud", "legit"]
    source: str | None = Field(
        None, max_length=200, description="Who or what says so: `chargeback`, `analyst:ana`"
    )
    comment: str | None = Field(None, max_length=2_000)


class LabelStored(BaseModel):
    """A stored label, as /feedback answers it for either contract (each adds its id)."""

    label: Literal["fraud", "legit"]
    labelled_at: datetime
    source: str | None = None
    comment: str | None = None
    created: bool = Field(description="False when the same label was already stored")
    key_id: str | None = Field(None, description="The id of the API key that sent the label")
    corrected: bool = Field(
        False, description="True when this label replaced another (a key with label:correct)"
    )
    previous_label: Literal["fraud", "legit"] | None = Field(
        None, description="The label a correction replaced"
    )


class _RequestId(BaseModel):
    request_id: str


# `LabelStored` first among the bases puts the id first: pydantic orders fields from the last base.
class FeedbackStored(LabelStored, _RequestId):
    pass


class Problem(BaseModel):
    detail: str
