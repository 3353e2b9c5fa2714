"""The card contract's request field types: ids kept as strings, ISO 8601 times as µs (UTC).

A transaction's `tx_datetime` becomes integer microseconds since the epoch, exactly as the offline
loader (`fraud_core.cards.schema.parse_datetimes`) reads the same text from a file; an id is
text (an integer as its decimals) without control characters, as `fraud_core.cards.schema`
reads a file's ids.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import PlainValidator, WithJsonSchema

from fraud_core.cards.schema import parse_datetimes
from fraud_core.prediction_log import CARD_ID_LENGTH

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
#: The plain layouts parsed here by `datetime.fromisoformat` (years 1970-2199, where it and pandas
#: agree to the microsecond: tests/api/test_transactions.py checks it). Anything else goes to
#: `parse_datetimes`, the offline loader's own parser, which is the rule: ~300 µs a call, too
#: slow to pay on every request.
_PLAIN_ISO = re.compile(
    r"(?:19[7-9]\d|2[01]\d\d)-\d\d-\d\d"
    r"(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d{1,6})?)?(?:Z|[+-]\d\d:\d\d)?)?"
)


def tx_us_of(text: str) -> int:
    """`text` (ISO 8601) as integer µs since the epoch, UTC; `ValueError` when unparseable."""
    if _PLAIN_ISO.fullmatch(text):
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            pass  # a day or an hour out of range: the offline parser says what it makes of it
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return (moment - _EPOCH) // _MICROSECOND
    try:
        return int(parse_datetimes([text])[0])
    except ValueError:
        raise ValueError(
            f"not an ISO 8601 date and time: {text[:60]!r} (e.g. 2018-04-01T07:19:05Z; "
            "no zone means UTC)"
        ) from None


#: Times are exact integers up to here in every backend (Redis keeps doubles): the year 2255.
_MAX_ABS_US = 2**53


def _tx_us(value: object) -> int:
    if not isinstance(value, str):
        raise ValueError("a date and time must be ISO 8601 text, e.g. 2018-04-01T07:19:05Z")
    if len(value) > 64:
        raise ValueError("a date and time is at most 64 characters")
    tx_us = tx_us_of(value)
    if abs(tx_us) >= _MAX_ABS_US:
        raise ValueError(f"{value!r} is outside the supported years (before 2255)")
    return tx_us


#: ISO 8601 text in JSON; in Python, its integer µs since the epoch (UTC).
TxDatetime = Annotated[
    int,
    PlainValidator(_tx_us),
    WithJsonSchema({"type": "string", "format": "date-time", "maxLength": 64}),
]


def _card_id(value: object) -> str:
    """An id as text (an integer as its decimals), as `fraud_core.cards.schema` reads a file's."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError("an id is a string or an integer")
    if not value:
        raise ValueError("an id cannot be empty")
    if len(value) > CARD_ID_LENGTH:
        raise ValueError(f"an id is at most {CARD_ID_LENGTH} characters")
    if any(ord(ch) < 0x20 for ch in value):
        raise ValueError("an id cannot hold control characters")
    return value


#: A customer, terminal or transaction id: a string or an integer, kept as a string.
CardId = Annotated[
    str,
    PlainValidator(_card_id),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1, "maxLength": CARD_ID_LENGTH},
                {"type": "integer"},
            ]
        }
    ),
]
