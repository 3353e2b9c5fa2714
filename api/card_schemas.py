"""Request and response models of the card-transactions contract (`/transactions/score`).

The raw fields are the contract's (`fraud_core.cards.definition.REQUEST_FIELDS`), validated by
the types of `api.card_fields`: ids are strings or integers kept as strings, `tx_datetime` is
ISO 8601 text (no zone: UTC; a zone is converted), `amount` a finite number >= 0.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.card_fields import CardId, TxDatetime
from api.schemas import Explanation, LabelStored
from fraud_core.cards.definition import AMOUNT, CUSTOMER_ID, TERMINAL_ID, TRANSACTION_ID

CARD_EXAMPLE: dict[str, Any] = {
    TRANSACTION_ID: "tx-000123",
    "tx_datetime": "2018-04-01T07:19:05Z",
    CUSTOMER_ID: "c-596",
    TERMINAL_ID: 3156,
    AMOUNT: 57.16,
}


class CardTransactionIn(BaseModel):
    """One raw card transaction, as a payment system sends it to be scored."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={"examples": [CARD_EXAMPLE]},
    )

    transaction_id: CardId = Field(
        description="Your unique id of this transaction (a string or an integer); re-sending it "
        "returns the first answer and counts once",
    )
    #: Validated into integer µs since the epoch, UTC (the contract's `tx_us`).
    tx_datetime: TxDatetime = Field(
        description="When it happened, ISO 8601 (`2018-04-01T07:19:05Z`, `2018-04-01 07:19:05`); "
        "no zone means UTC, a zone is converted to UTC",
    )
    customer_id: CardId = Field(description="The card or customer (a string or an integer)")
    terminal_id: CardId = Field(description="The terminal or merchant (a string or an integer)")
    amount: float = Field(ge=0, strict=True, description="The amount, a finite number >= 0")


class CardScore(BaseModel):
    """The score of one card transaction."""

    transaction_id: str
    fraud_probability: float = Field(description="Probability that the transaction is fraud")
    is_fraud: bool = Field(description="fraud_probability >= threshold")
    threshold: float
    model_version: str
    features: dict[str, float] | None = Field(
        None, description="With `?features=true`: the behavioural features the model scored"
    )
    explanation: Explanation | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    TRANSACTION_ID: "tx-000123",
                    "fraud_probability": 0.0123,
                    "is_fraud": False,
                    "threshold": 0.42,
                    "model_version": "20261125T184204Z-23f4b1cb",
                }
            ]
        }
    )


class CardBatchScore(BaseModel):
    model_version: str
    threshold: float
    count: int
    results: list[CardScore] = Field(description="One per transaction, in the order sent")


class _TransactionId(BaseModel):
    transaction_id: str


# The id first in the answer, as in `FeedbackStored`.
class CardFeedbackStored(LabelStored, _TransactionId):
    pass
