"""Bad card transactions: each invalid field a 422 naming it; times parsed as the loader does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from api.card_fields import tx_us_of
from fraud_core.cards.schema import parse_datetimes
from tests.api.conftest import card_transaction
from tests.api.test_transactions import score

GOOD = card_transaction("g-1")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"transaction_id": ""}, "transaction_id"),
        ({"transaction_id": "a\nb"}, "transaction_id"),
        ({"transaction_id": "x" * 101}, "transaction_id"),
        ({"transaction_id": True}, "transaction_id"),
        ({"transaction_id": 1.5}, "transaction_id"),
        ({"transaction_id": None}, "transaction_id"),
        ({"customer_id": "\x00"}, "customer_id"),
        ({"customer_id": []}, "customer_id"),
        ({"terminal_id": ""}, "terminal_id"),
        ({"terminal_id": {"id": 1}}, "terminal_id"),
        ({"tx_datetime": "yesterday"}, "tx_datetime"),
        ({"tx_datetime": "2018-02-30T10:00:00"}, "tx_datetime"),
        ({"tx_datetime": 1526083200}, "tx_datetime"),
        ({"tx_datetime": "2018-05-12T10:00:00" + "0" * 60}, "tx_datetime"),
        ({"tx_datetime": "2300-01-01T00:00:00Z"}, "tx_datetime"),
        ({"amount": -0.01}, "amount"),
        ({"amount": "12.5"}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": None}, "amount"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_a_bad_field_is_a_422_naming_it(
    card_client: TestClient, change: dict[str, Any], field: str
) -> None:
    response = card_client.post("/transactions/score", json={**GOOD, **change})
    assert response.status_code == 422, response.text
    assert field in [error["field"] for error in response.json()["detail"]]


@pytest.mark.parametrize("field", ["transaction_id", "tx_datetime", "customer_id", "terminal_id"])
def test_a_missing_field_is_a_422_naming_it(card_client: TestClient, field: str) -> None:
    body = {k: v for k, v in GOOD.items() if k != field}
    response = card_client.post("/transactions/score", json=body)
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["detail"]] == [field]


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_an_amount_that_is_not_finite_is_a_422(card_client: TestClient, raw: str) -> None:
    text = json.dumps({**GOOD, "amount": 0}).replace('"amount": 0', f'"amount": {raw}')
    response = card_client.post(
        "/transactions/score", content=text, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"] == "amount"


def test_a_zone_is_converted_and_no_zone_means_utc(card_client: TestClient) -> None:
    # 08:30 at +02:00 is 06:30 UTC: night by the definition (hour <= 6), whatever the local hour.
    zoned = score(card_client, card_transaction("z", "2018-05-14T08:30:00+02:00"))
    assert zoned["features"]["TX_DURING_NIGHT"] == 1.0
    # The same instant without a zone is read as UTC: "a" comes before "z" at that time, so "z"
    # is not in its window; a microsecond later, it is.
    same = score(card_client, card_transaction("a", "2018-05-14 06:30:00"))
    assert same["features"]["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1.0
    later = score(card_client, card_transaction("b", "2018-05-14T06:30:00.000001"))
    assert later["features"]["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 3.0


@settings(max_examples=200, deadline=None)
@given(
    year=st.integers(1970, 2199),
    month=st.integers(1, 12),
    day=st.integers(1, 31),
    hour=st.integers(0, 24),
    minute=st.integers(0, 59),
    second=st.integers(0, 59),
    fraction=st.one_of(st.none(), st.text("0123456789", min_size=1, max_size=6)),
    separator=st.sampled_from(["T", " "]),
    zone=st.one_of(
        st.sampled_from(["", "Z", "+00:00"]),
        st.tuples(st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59)).map(
            lambda z: f"{z[0]}{z[1]:02d}:{z[2]:02d}"
        ),
    ),
    parts=st.sampled_from(["date", "minutes", "seconds"]),
)
def test_the_request_parser_reads_a_time_as_the_offline_loader_does(
    year: int,
    month: int,
    day: int,
    hour: int,
    minute: int,
    second: int,
    fraction: str | None,
    separator: str,
    zone: str,
    parts: str,
) -> None:
    text = f"{year:04d}-{month:02d}-{day:02d}"
    if parts != "date":
        text += f"{separator}{hour:02d}:{minute:02d}"
        if parts == "seconds":
            text += f":{second:02d}" + (f".{fraction}" if fraction else "")
        text += zone
    try:
        expected: int | None = int(parse_datetimes([text])[0])
    except ValueError:
        expected = None
    try:
        got: int | None = tx_us_of(text)
    except ValueError:
        got = None
    assert got == expected, text
