"""The assets' storage: Parquet and JSON under a folder or an S3 bucket, never a pickle."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from fraud_assets.defs.assets.model import EvaluationReport
from fraud_assets.defs.io_managers import ParquetIOManager
from fraud_core import stored
from fraud_core.cards.definition import DEFAULT
from fraud_core.data import Splits
from tests.conftest import make_resources
from tests.fraud_assets.trained import LOW_FLOOR, WEAK, Trained, materialize
from tests.s3_server import s3_server

#: What a file written by pickle starts with (protocol 2 and later).
PICKLE_MAGIC = b"\x80"


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with s3_server(monkeypatch) as url:
        yield url


def _frame() -> pd.DataFrame:
    frame = pd.DataFrame({"a": [1.5, 2.5, 3.5], "b": ["x", "y", "z"]}, index=[10, 11, 12])
    frame.attrs = {"contract": "cards", "column_names": {"TX_AMOUNT": "amount"}}
    return frame


def _splits() -> Splits:
    frame = _frame()
    return Splits(
        train=frame,
        validation=frame.iloc[:1],
        test=frame.iloc[1:],
        fingerprint="abc",
        source="synthetic",
        contract="cards",
        feature_definition=DEFAULT,
        history=frame.iloc[:2],
        gaps=None,
    )


def _roots(tmp_path: Path, bucket: str) -> list[str]:
    return [str(tmp_path / "storage"), f"{bucket}/storage"]


def test_values_round_trip_on_a_folder_and_a_bucket(tmp_path: Path, bucket: str) -> None:
    report = EvaluationReport({"average_precision": 0.5}, np.array([0.1, 0.9]), "run-1")
    value = {"splits": _splits(), "report": report, "scores": {"train": np.arange(3.0)}}
    types = stored.type_names(Splits, EvaluationReport)
    for root in _roots(tmp_path, bucket):
        fs, base = stored.open_root(root)
        stored.write_value(fs, f"{base}/v", value)
        back = stored.read_value(fs, f"{base}/v", types)
        pd.testing.assert_frame_equal(back["splits"].train, _frame())
        assert back["splits"].train.attrs == _frame().attrs
        assert back["splits"].feature_definition == DEFAULT  # tuples, not JSON lists
        assert back["splits"].gaps is None and back["splits"].fingerprint == "abc"
        assert isinstance(back["report"], EvaluationReport)
        np.testing.assert_array_equal(back["report"].test_scores, [0.1, 0.9])
        np.testing.assert_array_equal(back["scores"]["train"], [0.0, 1.0, 2.0])
        names = {p.rsplit("/", 1)[-1] for p in fs.find(f"{base}/v")}
        assert stored.DESCRIPTION in names
        assert all(n.endswith((".parquet", ".json")) for n in names), names


def test_only_allowlisted_types_are_built(tmp_path: Path) -> None:
    fs, base = stored.open_root(str(tmp_path))
    stored.write_value(fs, f"{base}/v", _splits())
    with pytest.raises(stored.StoredValueError, match=r"fraud_core.data:Splits.*not a stored type"):
        stored.read_value(fs, f"{base}/v", {})


def test_an_unfinished_value_is_not_read(tmp_path: Path) -> None:
    fs, base = stored.open_root(str(tmp_path))
    stored.write_value(fs, f"{base}/v", _frame())
    (tmp_path / "v" / stored.DESCRIPTION).unlink()  # as if the writer died before its last file
    assert not stored.exists(fs, f"{base}/v")
    with pytest.raises(stored.StoredValueError, match="unfinished"):
        stored.read_value(fs, f"{base}/v", {})


def test_a_value_that_cannot_be_stored_is_refused_and_the_old_one_kept(tmp_path: Path) -> None:
    fs, base = stored.open_root(str(tmp_path / "root"))
    stored.write_value(fs, f"{base}/v", _frame())
    with pytest.raises(TypeError, match=r"value\.model: a object cannot be stored"):
        stored.write_value(fs, f"{base}/v", {"model": object()})
    pd.testing.assert_frame_equal(stored.read_value(fs, f"{base}/v", {}), _frame())
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["v"]  # no staging folder left behind


def _assert_no_pickles(fs: Any, root: str) -> list[str]:
    files = fs.find(root)
    assert files
    for name in files:
        assert name.endswith((".parquet", ".json", ".npz", ".ubj")), name
        with fs.open(name, "rb") as fh:
            assert fh.read(1) != PICKLE_MAGIC, name
    return files


def test_the_trained_graph_stored_every_asset_without_pickles(trained: Trained) -> None:
    root = trained.root / "storage"
    fs, base = stored.open_root(str(root))
    _assert_no_pickles(fs, base)
    names = {p.name for p in root.iterdir()}
    assert {"raw_transactions", "transaction_splits", "anomaly_scores", "fraud_model"} <= names
    assert {"evaluation_report", "promoted_model", "labelled_transactions"} <= names
    description = json.loads((root / "fraud_model" / stored.DESCRIPTION).read_text())
    assert description["value"]["dataclass"].endswith(":TrainedModel")
    model = description["value"]["fields"]["model"]
    assert (root / "fraud_model" / model["bundle"] / "manifest.json").is_file()


def test_the_graph_runs_on_an_s3_bucket(tmp_path: Path, bucket: str) -> None:
    resources = make_resources(tmp_path, rows=20_000, promotion_rules=LOW_FLOOR)
    resources["io_manager"] = ParquetIOManager(root=f"{bucket}/assets")
    result = materialize(resources, fraud_model=WEAK)
    assert result.success
    fs, base = stored.open_root(f"{bucket}/assets")
    files = _assert_no_pickles(fs, base)
    assert not (tmp_path / "storage").exists()  # nothing went to the local default
    assert any(f.endswith("transaction_splits/value.json") for f in files)
    splits = result.output_for_node("transaction_splits")  # read back from the bucket
    assert isinstance(splits, Splits) and len(splits.train) > 0
    promoted = result.output_for_node("promoted_model")
    assert promoted["promote"] is True and promoted["production_version"]
    materialization = next(
        e.step_materialization_data.materialization
        for e in result.get_asset_materialization_events()
        if e.step_materialization_data.materialization.asset_key == dg.AssetKey("fraud_model")
    )
    assert str(materialization.metadata["storage"].value).startswith(f"{bucket}/assets/fraud_model")


WEEKS = dg.WeeklyPartitionsDefinition(start_date="2018-01-07", timezone="UTC")


@dg.asset(partitions_def=WEEKS)
def weekly_numbers(context) -> pd.DataFrame:  # unannotated: this module defers annotations
    return pd.DataFrame({"week": [context.partition_key]})


@dg.asset(ins={"weekly_numbers": dg.AssetIn(metadata={"newest_partition": True})})
def newest_numbers(weekly_numbers: pd.DataFrame) -> pd.DataFrame:
    return weekly_numbers


def test_an_unpartitioned_reader_gets_the_newest_partition_written(tmp_path: Path) -> None:
    """As `prediction_drift` reads the card contract's weekly splits: one week, not all."""
    resources = {"io_manager": ParquetIOManager(root=str(tmp_path / "storage"))}
    nothing = dg.materialize(
        [weekly_numbers.to_source_asset(), newest_numbers],
        resources=resources,
        raise_on_error=False,
    )
    assert not nothing.success  # no week stored yet: a failure naming the asset
    for week in ("2018-05-20", "2018-06-03", "2018-05-27"):
        assert dg.materialize([weekly_numbers], resources=resources, partition_key=week).success
    result = dg.materialize([weekly_numbers.to_source_asset(), newest_numbers], resources=resources)
    assert result.output_for_node("newest_numbers")["week"].tolist() == ["2018-06-03"]
