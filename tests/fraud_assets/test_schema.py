"""The transaction schema: column order, and the problems it reports for bad frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraud_core import synthetic
from fraud_core.schema import (
    COLUMNS,
    FEATURE_COLUMNS,
    SCHEMA,
    all_problems,
    conform,
    label_problems,
    null_problems,
    range_problems,
    structure_problems,
)


def valid_frame(n_rows: int = 20) -> pd.DataFrame:
    return synthetic.generate(n_rows=n_rows, fraud_rate=0.1, seed=3)


def test_columns_are_the_kaggle_layout_in_order() -> None:
    assert len(COLUMNS) == 31
    assert len(FEATURE_COLUMNS) == 30
    assert ("Time", *(f"V{i}" for i in range(1, 29)), "Amount") == FEATURE_COLUMNS
    assert (*FEATURE_COLUMNS, "Class") == COLUMNS
    assert list(SCHEMA) == list(COLUMNS)
    assert SCHEMA["Amount"].minimum == 0.0
    assert SCHEMA["Class"].dtype == "int8"


def test_a_valid_frame_has_no_problems() -> None:
    assert all_problems(valid_frame()) == []


def test_a_missing_column_is_named() -> None:
    frame = valid_frame().drop(columns=["V7"])
    problems = structure_problems(frame)
    assert [(p.kind, p.column) for p in problems] == [("missing_column", "V7")]
    assert "V7" in problems[0].message


def test_text_in_amount_names_the_column_the_value_and_the_file_line() -> None:
    frame = valid_frame()
    frame["Amount"] = frame["Amount"].astype(object)
    frame.loc[13, "Amount"] = "12,50"
    frame.attrs["sources"] = [("data/raw/a.csv", 0, 10), ("data/raw/b.csv", 10, 10)]

    problems = structure_problems(frame)

    assert len(problems) == 1
    problem = problems[0]
    assert (problem.kind, problem.column, problem.count) == ("not_numeric", "Amount", 1)
    assert "Amount" in problem.message
    assert "'12,50'" in problem.message
    # Row 13 is the 4th row of b.csv: line 5 counting the header and from 1.
    assert "data/raw/b.csv:5" in problem.message
    assert problem.examples == ["data/raw/b.csv:5"]


def test_text_without_sources_is_located_by_row() -> None:
    frame = valid_frame()
    frame["V3"] = frame["V3"].astype(object)
    frame.loc[4, "V3"] = "n/a"
    problem = structure_problems(frame)[0]
    assert problem.column == "V3"
    assert "row 4" in problem.message
    assert "'n/a'" in problem.message


def test_an_empty_frame_is_a_problem() -> None:
    problems = structure_problems(valid_frame().iloc[:0])
    assert [p.kind for p in problems] == ["empty"]
    assert "no rows" in problems[0].message


def test_nan_and_infinity_are_reported_per_column() -> None:
    frame = valid_frame()
    frame.loc[[2, 5], "V3"] = np.nan
    frame.loc[4, "Amount"] = np.inf
    frame.loc[6, "Time"] = -np.inf

    problems = {p.column: p for p in null_problems(frame)}

    assert set(problems) == {"V3", "Amount", "Time"}
    assert problems["V3"].count == 2
    assert problems["V3"].examples == ["row 2", "row 5"]
    assert problems["Amount"].count == 1
    assert "Amount" in problems["Amount"].message


def test_a_clean_frame_has_no_nulls() -> None:
    assert null_problems(valid_frame()) == []


def test_labels_other_than_zero_and_one_are_reported() -> None:
    frame = valid_frame()
    frame.loc[1, "Class"] = 2
    frame.loc[7, "Class"] = -1

    problems = label_problems(frame)

    assert len(problems) == 1
    assert (problems[0].column, problems[0].count) == ("Class", 2)
    assert "2" in problems[0].message and "-1" in problems[0].message
    assert problems[0].examples == ["row 1", "row 7"]


def test_valid_labels_are_not_reported() -> None:
    assert label_problems(valid_frame()) == []


def test_a_negative_amount_is_out_of_range() -> None:
    frame = valid_frame()
    frame.loc[9, "Amount"] = -5.0

    problems = range_problems(frame)

    assert [(p.kind, p.column, p.count) for p in problems] == [("range", "Amount", 1)]
    assert "Amount" in problems[0].message
    assert ">= 0" in problems[0].message
    assert "-5" in problems[0].message


def test_a_negative_time_is_out_of_range() -> None:
    frame = valid_frame()
    frame.loc[0, "Time"] = -1.0
    assert [p.column for p in range_problems(frame)] == ["Time"]


def test_conform_raises_with_every_problem_in_the_message() -> None:
    frame = valid_frame()
    frame.loc[3, "Amount"] = -1.0
    frame.loc[4, "Class"] = 2
    with pytest.raises(ValueError, match="Amount") as excinfo:
        conform(frame)
    assert "Class" in str(excinfo.value)


def test_conform_raises_on_a_missing_column() -> None:
    with pytest.raises(ValueError, match="V28"):
        conform(valid_frame().drop(columns=["V28"]))


def test_conform_gives_float_features_and_int8_labels_in_schema_order() -> None:
    frame = valid_frame()
    frame["Time"] = frame["Time"].astype(np.int64)
    frame["Class"] = frame["Class"].astype(np.int64)
    frame["extra"] = "ignored"
    frame = frame[["extra", *reversed(COLUMNS)]]
    frame.attrs["sources"] = [("x.csv", 0, len(frame))]

    out = conform(frame)

    assert tuple(out.columns) == COLUMNS
    assert all(out[c].dtype == np.float64 for c in FEATURE_COLUMNS)
    assert out["Class"].dtype == np.int8
    np.testing.assert_array_equal(out["Time"].to_numpy(), frame["Time"].to_numpy())
    np.testing.assert_array_equal(out["Class"].to_numpy(), frame["Class"].to_numpy())
    assert out.attrs["sources"] == [("x.csv", 0, len(frame))]
