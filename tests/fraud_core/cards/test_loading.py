"""Loading card-transaction files: the contract by the columns, Handbook files as they are, bad
folders refused, every bad value named at its file, column and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pydantic
import pytest

from fraud_core import synthetic as kaggle_synthetic
from fraud_core.cards import synthetic
from fraud_core.cards.definition import COLUMNS
from fraud_core.cards.schema import HANDBOOK_COLUMNS, conform, problems
from fraud_core.data import DataError, load_transactions
from fraud_core.settings import PlatformSettings

EXTRA = ["TX_TIME_SECONDS", "TX_TIME_DAYS", "TX_FRAUD_SCENARIO"]


@pytest.fixture(scope="module")
def cards() -> pd.DataFrame:
    return synthetic.generate(n_customers=30, n_terminals=60, n_days=8, seed=5, with_scenario=True)


def handbook(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows in the Handbook's layout: its names, integer ids, its extra columns."""
    start = frame["tx_datetime"].min().normalize()
    seconds = (frame["tx_datetime"] - start).dt.total_seconds().astype(int)
    return pd.DataFrame(
        {
            "TRANSACTION_ID": frame["transaction_id"].astype(int),
            "TX_DATETIME": frame["tx_datetime"],
            "CUSTOMER_ID": frame["customer_id"].astype(int),
            "TERMINAL_ID": frame["terminal_id"].astype(int),
            "TX_AMOUNT": frame["amount"],
            "TX_TIME_SECONDS": seconds,
            "TX_TIME_DAYS": seconds // 86_400,
            "TX_FRAUD": frame["is_fraud"],
            "TX_FRAUD_SCENARIO": frame[synthetic.SCENARIO],
        }
    )


def canonical_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[synthetic.SCENARIO]).reset_index(drop=True)


def raw_dir(tmp_path: Path) -> Path:
    path = tmp_path / "raw"
    path.mkdir(exist_ok=True)
    return path


def plain(frame: pd.DataFrame) -> pd.DataFrame:
    """The contract's own names, as a user would write a file."""
    return canonical_rows(frame)[list(COLUMNS)]


# -- files that load ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_handbook_files_load_as_they_are(tmp_path: Path, cards: pd.DataFrame, suffix: str) -> None:
    path = raw_dir(tmp_path) / f"2018-04-01.{suffix}"
    book = handbook(cards)
    book.to_csv(path, index=False) if suffix == "csv" else book.to_parquet(path)

    loaded = load_transactions(path.parent)

    assert (loaded.contract, loaded.source, loaded.files) == ("cards", "real", [str(path)])
    assert loaded.ignored == EXTRA
    assert list(loaded.frame.columns) == list(HANDBOOK_COLUMNS.values())
    assert loaded.frame.attrs["contract"] == "cards"
    assert loaded.frame.attrs["sources"] == [(str(path), 0, len(cards))]
    pd.testing.assert_frame_equal(conform(loaded.frame), canonical_rows(cards))


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_files_with_the_contracts_names_load(
    tmp_path: Path, cards: pd.DataFrame, suffix: str
) -> None:
    path = raw_dir(tmp_path) / f"transactions.{suffix}"
    frame = plain(cards)
    frame.to_csv(path, index=False) if suffix == "csv" else frame.to_parquet(path)
    loaded = load_transactions(path.parent)
    assert loaded.contract == "cards" and loaded.ignored == []
    pd.testing.assert_frame_equal(conform(loaded.frame), canonical_rows(cards))


def test_string_ids_are_kept_as_written(tmp_path: Path, cards: pd.DataFrame) -> None:
    frame = plain(cards).head(50)
    frame["customer_id"] = "cust-" + frame["customer_id"].str.zfill(4)
    frame["terminal_id"] = frame["terminal_id"].str.zfill(5)  # "00042": leading zeros matter
    frame.loc[frame.index[:3], "terminal_id"] = "NA"  # a name, not a missing value
    frame.to_csv(raw_dir(tmp_path) / "a.csv", index=False)
    out = conform(load_transactions(tmp_path / "raw").frame)
    assert set(out["terminal_id"]) == set(frame["terminal_id"])
    assert set(out["customer_id"]) == set(frame["customer_id"])


def test_files_of_both_namings_and_id_types_concatenate(
    tmp_path: Path, cards: pd.DataFrame
) -> None:
    raw = raw_dir(tmp_path)
    handbook(cards).iloc[:100].to_parquet(raw / "a.parquet")  # integer ids
    plain(cards).iloc[100:].to_csv(raw / "b.csv", index=False)  # ids as text
    loaded = load_transactions(raw)
    assert loaded.frame.attrs["sources"] == [
        (str(raw / "a.parquet"), 0, 100),
        (str(raw / "b.csv"), 100, len(cards) - 100),
    ]
    pd.testing.assert_frame_equal(conform(loaded.frame), canonical_rows(cards))


def test_the_scenario_beside_the_label_is_never_read(tmp_path: Path, cards: pd.DataFrame) -> None:
    handbook(cards).to_csv(raw_dir(tmp_path) / "a.csv", index=False)
    frame = load_transactions(tmp_path / "raw").frame
    assert not set(EXTRA) & set(frame.columns)
    assert frame.attrs["ignored"] == EXTRA


def test_no_file_gives_the_synthetic_set_of_the_contract(tmp_path: Path) -> None:
    loaded = load_transactions(
        tmp_path / "raw", contract="cards", seed=3, cards_customers=20, cards_terminals=40,
        cards_days=5,
    )  # fmt: skip
    assert (loaded.contract, loaded.source, loaded.files) == ("cards", "synthetic", [])
    pd.testing.assert_frame_equal(
        loaded.frame, synthetic.generate(n_customers=20, n_terminals=40, n_days=5, seed=3)
    )
    assert loaded.frame.attrs["sources"] == [("synthetic", 0, len(loaded.frame))]
    assert load_transactions(tmp_path / "raw", synthetic_rows=50).contract == "kaggle"


def test_a_forced_contract_refuses_files_of_the_other(tmp_path: Path, cards: pd.DataFrame) -> None:
    path = raw_dir(tmp_path) / "a.csv"
    plain(cards).to_csv(path, index=False)
    assert load_transactions(path.parent, contract="cards").contract == "cards"
    with pytest.raises(DataError, match="set to 'kaggle'") as excinfo:
        load_transactions(path.parent, contract="kaggle")
    assert str(path) in str(excinfo.value)
    with pytest.raises(DataError, match="unknown data contract"):
        load_transactions(path.parent, contract="excel")


# -- folders and files that are refused -----------------------------------------------------


def test_a_folder_mixing_contracts_names_each_file_and_its_contract(
    tmp_path: Path, cards: pd.DataFrame
) -> None:
    raw = raw_dir(tmp_path)
    plain(cards).to_csv(raw / "cards.csv", index=False)
    kaggle_synthetic.generate(n_rows=50, seed=1).to_parquet(raw / "creditcard.parquet")
    with pytest.raises(DataError, match="mix contracts") as excinfo:
        load_transactions(raw)
    assert f"{raw / 'cards.csv'}: cards" in str(excinfo.value)
    assert f"{raw / 'creditcard.parquet'}: kaggle" in str(excinfo.value)


@pytest.mark.parametrize("name", ["2018-04-01.pkl", "model.joblib", "day.pickle", "x.pkl.gz"])
def test_a_pickle_is_never_loaded(tmp_path: Path, cards: pd.DataFrame, name: str) -> None:
    raw = raw_dir(tmp_path)
    plain(cards).to_csv(raw / "a.csv", index=False)
    (raw / name).write_bytes(b"not opened")
    with pytest.raises(DataError, match="never loaded") as excinfo:
        load_transactions(raw)
    assert str(raw / name) in str(excinfo.value)


def test_a_file_of_neither_contract_names_its_columns(tmp_path: Path) -> None:
    path = raw_dir(tmp_path) / "export.csv"
    path.write_text("date,card,merchant,value\n2018-04-01,1,2,3.5\n")
    with pytest.raises(DataError, match="neither") as excinfo:
        load_transactions(path.parent)
    assert str(path) in str(excinfo.value) and "date, card, merchant, value" in str(excinfo.value)


@pytest.mark.parametrize("name", ["cards.csv", "cards.parquet"])
def test_an_empty_file_is_named(tmp_path: Path, name: str) -> None:
    path = raw_dir(tmp_path) / name
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty") as excinfo:
        load_transactions(path.parent, contract="cards")
    assert str(path) in str(excinfo.value)


def test_a_header_only_file_loads_and_the_checks_say_no_rows(tmp_path: Path) -> None:
    path = raw_dir(tmp_path) / "cards.csv"
    path.write_text(",".join(HANDBOOK_COLUMNS) + "\n")
    frame = load_transactions(path.parent).frame
    assert len(frame) == 0
    assert [p.kind for p in problems(frame)] == ["empty"]
    assert str(path) in problems(frame)[0].message


# -- bad values: the checks name the file, the column and the line --------------------------


def write_bad(tmp_path: Path, cards: pd.DataFrame, row: int, column: str, value: Any) -> Path:
    """The Handbook file with one bad cell at frame row `row` (file line `row + 2`)."""
    frame = handbook(cards).astype({column: object})
    frame.loc[row, column] = value
    path = raw_dir(tmp_path) / "2018-04.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("column", "value", "kind", "canonical"),
    [
        ("TX_DATETIME", "2018-04-31 10:00:00", "datetime", "tx_datetime"),
        ("TX_AMOUNT", -12.5, "range", "amount"),
        ("TX_AMOUNT", "12,50 EUR", "not_numeric", "amount"),
        ("TX_FRAUD", 2, "label", "is_fraud"),
        ("CUSTOMER_ID", "c\x01", "id", "customer_id"),
        ("TERMINAL_ID", "", "nulls", "terminal_id"),
    ],
)
def test_a_bad_value_is_named_at_its_file_column_and_line(
    tmp_path: Path, cards: pd.DataFrame, column: str, value: Any, kind: str, canonical: str
) -> None:
    path = write_bad(tmp_path, cards, 17, column, value)
    found = problems(load_transactions(path.parent).frame)
    assert [p.kind for p in found] == [kind]
    assert found[0].column == canonical
    message = found[0].message
    assert f"{path}:19" in message and f"{canonical} ({column} in the file)" in message
    assert path.read_text().splitlines()[18].split(",")[0] == "17"  # line 19 is that row


def test_duplicate_ids_across_files_name_both_lines(tmp_path: Path, cards: pd.DataFrame) -> None:
    raw = raw_dir(tmp_path)
    book = handbook(cards)
    book.iloc[:40].to_csv(raw / "a.csv", index=False)
    book.iloc[35:].to_csv(raw / "b.csv", index=False)  # rows 35-39 a second time
    (found,) = problems(load_transactions(raw).frame)
    assert found.kind == "duplicate_id" and found.count == 5
    assert f"'35' at {raw / 'a.csv'}:37 and {raw / 'b.csv'}:2" in found.message


def test_a_missing_column_is_named(tmp_path: Path, cards: pd.DataFrame) -> None:
    path = raw_dir(tmp_path) / "a.csv"
    handbook(cards).drop(columns=["TERMINAL_ID"]).to_csv(path, index=False)
    (found,) = problems(load_transactions(path.parent).frame)
    assert found.kind == "missing_column" and found.column == "terminal_id"
    assert str(path) in found.message and "TERMINAL_ID" in found.message


# -- settings -------------------------------------------------------------------------------


def test_settings_choose_the_contract_and_size_the_simulator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("CUSTOMERS", "TERMINALS", "DAYS", "SEED"):  # the tests' conftest sets them
        monkeypatch.delenv(f"FRAUD_CARDS_{name}", raising=False)
    monkeypatch.delenv("FRAUD_DATA_CONTRACT", raising=False)
    defaults = PlatformSettings(_env_file=None)
    assert defaults.data_contract == "auto"
    assert (defaults.cards_customers, defaults.cards_terminals, defaults.cards_days) == (
        5000, 10000, 183,
    )  # fmt: skip
    assert defaults.cards_seed == 42
    monkeypatch.setenv("FRAUD_DATA_CONTRACT", "Cards")
    monkeypatch.setenv("FRAUD_CARDS_DAYS", "30")
    settings = PlatformSettings()
    assert (settings.data_contract, settings.cards_days) == ("cards", 30)
    monkeypatch.setenv("FRAUD_DATA_CONTRACT", "excel")
    with pytest.raises(pydantic.ValidationError, match="FRAUD_DATA_CONTRACT"):
        PlatformSettings()
