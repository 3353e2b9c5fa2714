"""Loading data files, splitting in time, fingerprinting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud_core import synthetic
from fraud_core.data import DataError, fingerprint, load_transactions, split_by_time
from fraud_core.schema import COLUMNS, FEATURE_COLUMNS, conform, structure_problems


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic.generate(n_rows=10_000, fraud_rate=0.01, seed=11)


def write_kaggle_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write rows the way the real `creditcard.csv` is: quoted header names and `Class` values."""
    lines = [",".join(f'"{c}"' for c in frame.columns)]
    for row in frame.itertuples(index=False):
        *values, label = row
        lines.append(",".join([*(repr(float(v)) for v in values), f'"{int(label)}"']))
    path.write_text("\n".join(lines) + "\n")


def test_an_empty_data_dir_gives_a_synthetic_set(tmp_path: Path) -> None:
    data_dir = tmp_path / "raw"
    data_dir.mkdir()
    loaded = load_transactions(data_dir, synthetic_rows=500, seed=1, fraud_rate=0.02)
    assert loaded.source == "synthetic"
    assert loaded.files == []
    assert tuple(loaded.frame.columns) == COLUMNS
    assert len(loaded.frame) == 500
    assert loaded.frame.attrs["data_source"] == "synthetic"
    assert loaded.frame.attrs["sources"] == [("synthetic", 0, 500)]


def test_a_missing_data_dir_gives_a_synthetic_set(tmp_path: Path) -> None:
    loaded = load_transactions(tmp_path / "nowhere", synthetic_rows=100)
    assert loaded.source == "synthetic"
    assert len(loaded.frame) == 100


def test_a_kaggle_format_csv_loads_as_numbers(tmp_path: Path, frame: pd.DataFrame) -> None:
    data_dir = tmp_path / "raw"
    data_dir.mkdir()
    path = data_dir / "creditcard.csv"
    write_kaggle_csv(frame.head(200), path)
    assert path.read_text().startswith('"Time","V1","V2"')

    loaded = load_transactions(data_dir)

    assert loaded.source == "real"
    assert loaded.files == [str(path)]
    assert tuple(loaded.frame.columns) == COLUMNS
    assert all(pd.api.types.is_numeric_dtype(loaded.frame[c]) for c in COLUMNS)
    assert pd.api.types.is_integer_dtype(loaded.frame["Class"])
    assert loaded.frame.attrs["data_source"] == "real"
    expected = frame.head(200)
    np.testing.assert_array_equal(loaded.frame["Class"].to_numpy(), expected["Class"].to_numpy())
    np.testing.assert_array_equal(
        loaded.frame[list(FEATURE_COLUMNS)].to_numpy(), expected[list(FEATURE_COLUMNS)].to_numpy()
    )


def test_parquet_loads(tmp_path: Path, frame: pd.DataFrame) -> None:
    data_dir = tmp_path / "raw"
    data_dir.mkdir()
    frame.head(300).to_parquet(data_dir / "part.parquet")
    loaded = load_transactions(data_dir)
    assert loaded.source == "real"
    pd.testing.assert_frame_equal(loaded.frame, frame.head(300), check_dtype=False)


def test_csv_and_parquet_of_the_same_rows_have_the_same_fingerprint(
    tmp_path: Path, frame: pd.DataFrame
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_kaggle_csv(frame.head(300), tmp_path / "a" / "creditcard.csv")
    frame.head(300).to_parquet(tmp_path / "b" / "creditcard.parquet")
    from_csv = conform(load_transactions(tmp_path / "a").frame)
    from_parquet = conform(load_transactions(tmp_path / "b").frame)
    assert fingerprint(from_csv) == fingerprint(from_parquet)


def test_several_files_concatenate_in_name_order_with_their_row_ranges(
    tmp_path: Path, frame: pd.DataFrame
) -> None:
    data_dir = tmp_path / "raw"
    data_dir.mkdir()
    first, second = data_dir / "2013-09-a.csv", data_dir / "2013-09-b.parquet"
    write_kaggle_csv(frame.iloc[:30], first)
    frame.iloc[30:50].to_parquet(second)
    (data_dir / "README.txt").write_text("not data")

    loaded = load_transactions(data_dir)

    assert loaded.files == [str(first), str(second)]
    assert len(loaded.frame) == 50
    assert loaded.frame.attrs["sources"] == [(str(first), 0, 30), (str(second), 30, 20)]
    np.testing.assert_array_equal(loaded.frame["V5"].to_numpy(), frame["V5"].iloc[:50].to_numpy())


def test_a_bad_value_is_reported_at_its_file_and_line(tmp_path: Path, frame: pd.DataFrame) -> None:
    data_dir = tmp_path / "raw"
    data_dir.mkdir()
    write_kaggle_csv(frame.iloc[:10], data_dir / "a.csv")
    second = data_dir / "b.csv"
    write_kaggle_csv(frame.iloc[10:20], second)
    lines = second.read_text().splitlines()
    fields = lines[3].split(",")
    fields[COLUMNS.index("Amount")] = "abc"
    lines[3] = ",".join(fields)
    second.write_text("\n".join(lines) + "\n")

    problems = structure_problems(load_transactions(data_dir).frame)

    assert len(problems) == 1
    assert problems[0].column == "Amount"
    assert f"{second}:4" in problems[0].message
    assert "'abc'" in problems[0].message


@pytest.mark.parametrize("name", ["creditcard.csv", "creditcard.parquet"])
def test_an_empty_file_raises_a_data_error_naming_it(tmp_path: Path, name: str) -> None:
    data_dir = tmp_path / "raw"
    data_dir.mkdir()
    (data_dir / name).write_bytes(b"")
    with pytest.raises(DataError, match=name) as excinfo:
        load_transactions(data_dir)
    assert "empty" in str(excinfo.value)


def test_split_by_time_never_puts_the_past_after_the_future(frame: pd.DataFrame) -> None:
    splits = split_by_time(frame)
    assert splits.train["Time"].max() <= splits.validation["Time"].min()
    assert splits.validation["Time"].max() <= splits.test["Time"].min()
    for _, part in splits.items():
        assert part["Time"].is_monotonic_increasing


@pytest.mark.parametrize(("validation", "test"), [(0.2, 0.2), (0.1, 0.3)])
def test_split_by_time_respects_the_fractions(
    frame: pd.DataFrame, validation: float, test: float
) -> None:
    splits = split_by_time(frame, validation_fraction=validation, test_fraction=test)
    n = len(frame)
    assert len(splits.validation) == pytest.approx(n * validation, abs=1)
    assert len(splits.test) == pytest.approx(n * test, abs=1)
    assert len(splits.train) + len(splits.validation) + len(splits.test) == n


def test_shuffled_input_gives_the_same_splits(frame: pd.DataFrame) -> None:
    assert frame["Time"].duplicated().any(), "ties in Time are what makes this test meaningful"
    ordered = split_by_time(frame)
    shuffled = split_by_time(frame.sample(frac=1.0, random_state=5))
    for (name, a), (_, b) in zip(ordered.items(), shuffled.items(), strict=True):
        pd.testing.assert_frame_equal(a, b, obj=name)
    assert ordered.fingerprint == shuffled.fingerprint


def test_summary_counts_add_up(frame: pd.DataFrame) -> None:
    summary = split_by_time(frame).summary()
    assert set(summary) == {"train", "validation", "test"}
    assert sum(part["rows"] for part in summary.values()) == len(frame)
    assert sum(part["frauds"] for part in summary.values()) == int(frame["Class"].sum())
    for part in summary.values():
        assert part["fraud_rate"] == pytest.approx(part["frauds"] / part["rows"])
    assert summary["train"]["time_to"] <= summary["test"]["time_from"]


def test_splits_carry_the_data_source(tmp_path: Path) -> None:
    loaded = load_transactions(tmp_path / "raw", synthetic_rows=1_000, fraud_rate=0.05)
    assert split_by_time(loaded.frame).source == "synthetic"


def test_split_by_time_rejects_bad_fractions_and_bad_data(frame: pd.DataFrame) -> None:
    with pytest.raises(ValueError):
        split_by_time(frame, validation_fraction=0.0)
    with pytest.raises(ValueError):
        split_by_time(frame, validation_fraction=0.5, test_fraction=0.5)
    bad = frame.copy()
    bad.loc[0, "Amount"] = -1.0
    with pytest.raises(ValueError, match="Amount"):
        split_by_time(bad)


def test_fingerprint_is_stable_and_sees_a_changed_value(frame: pd.DataFrame) -> None:
    first = fingerprint(frame)
    assert first == fingerprint(frame.copy())
    assert len(first) == 64
    changed = frame.copy()
    changed.loc[1234, "V9"] += 1e-9
    assert fingerprint(changed) != first
    relabelled = frame.copy()
    relabelled.loc[0, "Class"] = 1 - relabelled.loc[0, "Class"]
    assert fingerprint(relabelled) != first
