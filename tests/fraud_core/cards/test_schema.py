"""The card-transactions contract: recognising it, every problem at once, the canonical frame."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraud_core import schema as kaggle
from fraud_core.cards import synthetic
from fraud_core.cards.definition import COLUMNS, US_PER_DAY
from fraud_core.cards.schema import (
    CANONICAL_COLUMNS,
    HANDBOOK_COLUMNS,
    conform,
    contract_of,
    id_strings,
    ignored_columns,
    parse_datetimes,
    problems,
    sort_order,
)
from fraud_core.schema import Problem

FILE = "data/raw/cards.csv"


@pytest.fixture(scope="module")
def canonical() -> pd.DataFrame:
    return synthetic.generate(n_customers=40, n_terminals=80, n_days=12, seed=3)


def raw_rows(n: int = 8) -> pd.DataFrame:
    """Rows as a CSV reader hands them over: text ids and times, numbers, one file's sources."""
    frame = pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "tx_datetime": [f"2018-04-01 10:00:{i:02d}" for i in range(n)],
            "customer_id": ["c1", "c2"] * (n // 2),
            "terminal_id": ["m1"] * n,
            "amount": [10.5 + i for i in range(n)],
            "is_fraud": [0] * (n - 1) + [1],
        }
    )
    frame.attrs["sources"] = [(FILE, 0, n)]
    return frame


def only(found: list[Problem], kind: str) -> Problem:
    matching = [p for p in found if p.kind == kind]
    assert len(matching) == 1, [str(p) for p in found]
    return matching[0]


# -- recognising the contract --------------------------------------------------------------


def test_each_contract_is_recognised_by_its_columns() -> None:
    assert contract_of(kaggle.COLUMNS) == "kaggle"
    assert contract_of(COLUMNS) == "cards"
    assert contract_of(HANDBOOK_COLUMNS) == "cards"
    assert contract_of([*HANDBOOK_COLUMNS, "TX_FRAUD_SCENARIO", "TX_TIME_DAYS"]) == "cards"
    # The real Kaggle file quotes its header names.
    assert contract_of([f'"{c}"' for c in kaggle.COLUMNS]) == "kaggle"


def test_a_file_missing_a_column_is_still_recognised_so_the_checks_can_name_it() -> None:
    assert contract_of([c for c in kaggle.COLUMNS if c != "V5"]) == "kaggle"
    assert contract_of([c for c in COLUMNS if c != "terminal_id"]) == "cards"


def test_columns_of_neither_contract_are_none() -> None:
    assert contract_of(["date", "card", "merchant", "value"]) is None
    assert contract_of([]) is None


def test_columns_nobody_reads_are_listed_as_ignored() -> None:
    columns = [*HANDBOOK_COLUMNS, "TX_TIME_SECONDS", "TX_TIME_DAYS", "TX_FRAUD_SCENARIO"]
    assert ignored_columns(columns) == ["TX_TIME_SECONDS", "TX_TIME_DAYS", "TX_FRAUD_SCENARIO"]
    assert ignored_columns(COLUMNS) == []
    # Both names of one field: the contract's own wins, the Handbook's is not read.
    assert ignored_columns([*COLUMNS, "TX_AMOUNT"]) == ["TX_AMOUNT"]


# -- the canonical frame -------------------------------------------------------------------


def test_conform_of_a_canonical_frame_is_the_frame(canonical: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(conform(canonical), canonical)
    assert tuple(canonical.columns) == CANONICAL_COLUMNS


def test_conform_sorts_any_order_and_renames_handbook_names(canonical: pd.DataFrame) -> None:
    handbook = canonical.drop(columns="tx_us").rename(
        columns={v: k for k, v in HANDBOOK_COLUMNS.items()}
    )
    handbook["TRANSACTION_ID"] = handbook["TRANSACTION_ID"].astype(int)  # as the book has them
    handbook["CUSTOMER_ID"] = handbook["CUSTOMER_ID"].astype(int)
    handbook["TERMINAL_ID"] = handbook["TERMINAL_ID"].astype(float)  # integral floats
    handbook["TX_FRAUD_SCENARIO"] = 0
    shuffled = handbook.sample(frac=1.0, random_state=4)
    pd.testing.assert_frame_equal(conform(shuffled), canonical)


def test_canonical_dtypes_and_order() -> None:
    frame = raw_rows()
    frame["transaction_id"] = [17, 9, 10, 3, 4, 5, 6, 7]
    frame["tx_datetime"] = "2018-04-01T12:00:00+02:00"  # every row at one time: ties by id
    out = conform(frame)
    # As strings "10" < "17" < "3": the contract's tie order, the same in Redis and Python.
    assert list(out["transaction_id"]) == sorted(str(i) for i in frame["transaction_id"])
    assert out["tx_datetime"].dtype == np.dtype("datetime64[us]")
    assert out["tx_datetime"].iloc[0] == pd.Timestamp("2018-04-01 10:00:00")  # UTC, naive
    assert out["tx_us"].dtype == np.int64
    assert out["tx_us"].iloc[0] == pd.Timestamp("2018-04-01 10:00", tz="UTC").value // 1000
    assert out["amount"].dtype == np.float64 and out["is_fraud"].dtype == np.int8
    assert all(type(v) is str for col in ("customer_id", "terminal_id") for v in out[col])
    assert isinstance(out.index, pd.RangeIndex)


def test_unlabelled_frames_conform_without_a_label() -> None:
    frame = raw_rows().drop(columns="is_fraud")
    assert problems(frame, labelled=False) == []
    assert "is_fraud" not in conform(frame, labelled=False).columns
    assert only(problems(frame), "missing_column").column == "is_fraud"


def test_conform_raises_naming_every_problem() -> None:
    frame = raw_rows()
    frame.loc[2, "amount"] = -1.0
    frame.loc[5, "is_fraud"] = 3
    with pytest.raises(ValueError, match="amount") as excinfo:
        conform(frame)
    assert "is_fraud" in str(excinfo.value) and f"{FILE}:4" in str(excinfo.value)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.text(st.characters(min_codepoint=32), max_size=4)),
        unique_by=lambda r: r[1],
        max_size=30,
    )
)
def test_sort_order_is_time_then_id_as_python_strings(rows: list[tuple[int, str]]) -> None:
    tx_us = np.array([t for t, _ in rows], dtype=np.int64)
    ids = np.array([i for _, i in rows], dtype=object)
    order = sort_order(tx_us, ids)
    assert [rows[i] for i in order] == sorted(rows)


# -- every problem, with its column and rows ------------------------------------------------


def test_a_clean_frame_has_no_problem() -> None:
    assert problems(raw_rows()) == []


def test_duplicate_ids_name_the_count_and_the_rows_of_each_pair() -> None:
    frame = raw_rows()
    frame.loc[6, "transaction_id"] = "t1"
    frame.loc[7, "transaction_id"] = "t1"
    frame.loc[5, "transaction_id"] = "t3"
    problem = only(problems(frame), "duplicate_id")
    assert problem.column == "transaction_id" and problem.count == 3
    assert f"'t1' at {FILE}:3 and {FILE}:8" in problem.message
    assert f"'t3' at {FILE}:5 and {FILE}:7" in problem.message


def test_ids_equal_as_text_are_duplicates() -> None:
    frame = raw_rows()
    frame["transaction_id"] = pd.Series([1, 2, 3, 4, 5, 6, 7, "7"], dtype=object)
    assert only(problems(frame), "duplicate_id").count == 1


def test_unparseable_datetimes_are_named_with_their_rows() -> None:
    frame = raw_rows()
    frame.loc[2, "tx_datetime"] = "yesterday"
    frame.loc[4, "tx_datetime"] = "2018-13-01 00:00:00"
    problem = only(problems(frame), "datetime")
    assert problem.count == 2 and problem.column == "tx_datetime"
    assert "'yesterday'" in problem.message and f"{FILE}:4, {FILE}:6" in problem.message


def test_numbers_are_not_datetimes() -> None:
    frame = raw_rows()
    frame["tx_datetime"] = np.arange(len(frame)) * 1_000  # seconds? ms? nobody knows
    assert only(problems(frame), "datetime").count == len(frame)


@pytest.mark.parametrize(
    ("value", "kind"), [(-5.0, "range"), (np.inf, "range"), ("12,50 EUR", "not_numeric")]
)
def test_bad_amounts_are_named(value: Any, kind: str) -> None:
    frame = raw_rows().astype({"amount": object})
    frame.loc[3, "amount"] = value
    problem = only(problems(frame), kind)
    assert problem.column == "amount" and problem.count == 1
    assert f"{FILE}:5" in problem.message and repr(value) in problem.message


def test_labels_other_than_0_1_are_named() -> None:
    frame = raw_rows().astype({"is_fraud": object})
    frame.loc[1, "is_fraud"] = 2
    frame.loc[6, "is_fraud"] = "yes"
    problem = only(problems(frame), "label")
    assert problem.count == 2 and f"{FILE}:3, {FILE}:8" in problem.message
    assert "other than 0/1" in problem.message


@pytest.mark.parametrize("bad", ["t\x01x", "line\nbreak", ""])
def test_ids_with_control_characters_or_empty_are_invalid(bad: str) -> None:
    frame = raw_rows()
    frame.loc[4, "customer_id"] = bad
    problem = only(problems(frame), "id")
    assert problem.column == "customer_id" and f"{FILE}:6" in problem.message


def test_non_integral_numbers_are_invalid_ids() -> None:
    frame = raw_rows()
    frame["terminal_id"] = [1.0, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0]
    problem = only(problems(frame), "id")
    assert problem.column == "terminal_id" and "2.5" in problem.message


def test_missing_columns_and_nulls_are_named() -> None:
    frame = raw_rows().drop(columns=["terminal_id"])
    frame.loc[3, "amount"] = np.nan
    frame.loc[5, "transaction_id"] = None
    found = problems(frame)
    missing = only(found, "missing_column")
    assert missing.column == "terminal_id" and "TERMINAL_ID" in missing.message
    nulls = {p.column: p for p in found if p.kind == "nulls"}
    assert f"{FILE}:5" in nulls["amount"].message
    assert f"{FILE}:7" in nulls["transaction_id"].message


def test_every_problem_is_reported_at_once_and_an_empty_frame_says_so() -> None:
    frame = raw_rows()
    frame.loc[0, "amount"] = -1.0
    frame.loc[1, "tx_datetime"] = "soon"
    frame.loc[2, "is_fraud"] = 7
    frame.loc[3, "transaction_id"] = "t4"
    assert {p.kind for p in problems(frame)} == {"range", "datetime", "label", "duplicate_id"}
    assert [p.kind for p in problems(raw_rows().iloc[:0])] == ["empty"]


def test_messages_give_the_files_own_column_name() -> None:
    frame = raw_rows().rename(columns={"amount": "TX_AMOUNT"})
    frame.loc[1, "TX_AMOUNT"] = -3.0
    assert "amount (TX_AMOUNT in the file)" in only(problems(frame), "range").message


# -- helpers the API and the features share ------------------------------------------------


def test_parse_datetimes_reads_iso_8601_as_utc_microseconds() -> None:
    us = parse_datetimes(
        ["2018-04-01 00:00:31", "2018-04-01T02:00:31+02:00", "2018-04-01T00:00:31.5Z"]
    )
    start = pd.Timestamp("2018-04-01", tz="UTC").value // 1000
    assert us.dtype == np.int64
    assert list(us - start) == [31_000_000, 31_000_000, 31_500_000]
    assert parse_datetimes(pd.Series(["1970-01-02"]))[0] == US_PER_DAY


def test_parse_datetimes_names_the_unparseable_rows() -> None:
    with pytest.raises(ValueError, match=r"2 time\(s\).*row 1: 'noon'.*row 2: None"):
        parse_datetimes(["2018-04-01", "noon", None])


def test_id_strings_keep_text_and_write_integers_plainly() -> None:
    assert list(id_strings([17, "007", 17.0, np.int64(3)])) == ["17", "007", "17", "3"]
    with pytest.raises(ValueError, match="row 1"):
        id_strings(["a", 1.5])
