"""The same graph with FRAUD_DASK_ADDRESS set: a real cluster trains a model of the same quality.

A synthetic card set runs twice, on one machine and with the `compute` resource pointed at a
scheduler and two worker processes started here: the anomaly forest is fitted on a sample and
scored on the workers, the classifier trained with `xgboost.dask`. On the same data the test AP
is within 0.01 of the single-machine run's, and what is promoted is the same kind of bundle.

The set spans 90 days (600 customers, 600 terminals, ~100,000 transactions): on the suite's
60-day set the single-machine model's own AP moves by 0.05 between two seeds (early stopping on
a short, flat validation curve), so a 0.01 bound there would measure luck; on 90 days the seeds
agree within 0.009 and the engines within 0.006 (five seeds, `tests/fraud_core/scale/`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fraud_assets.defs.resources import ComputeEngine
from fraud_core.bundle import load_bundle
from tests.conftest import make_resources
from tests.dask_cluster import start_cluster
from tests.fraud_assets.test_pipeline import metadata
from tests.fraud_assets.trained import materialize

CARDS_90_DAYS = (600, 600, 90)


def test_a_dask_cluster_trains_a_model_as_good_on_the_same_data(tmp_path: Path) -> None:
    for name in ("local", "dask"):
        (tmp_path / name).mkdir()
    single_run = materialize(
        make_resources(tmp_path / "local", contract="cards", cards=CARDS_90_DAYS)
    )
    assert single_run.success
    resources = make_resources(tmp_path / "dask", contract="cards", cards=CARDS_90_DAYS)
    with start_cluster(workers=2) as address:
        resources["compute"] = ComputeEngine(dask_address=address)
        result = materialize(resources)
    assert result.success
    for asset in ("anomaly_scores", "fraud_model"):
        assert metadata(result, asset)["engine"] == f"dask {address}"
    single = metadata(single_run, "evaluation_report")
    assert metadata(single_run, "fraud_model")["engine"] == "local"
    cluster = metadata(result, "evaluation_report")
    # The same rows in every split: the comparison is of the engines, not of the data.
    ours, theirs = (
        metadata(result, "transaction_splits"),
        metadata(single_run, "transaction_splits"),
    )
    assert ours["data_fingerprint"] == theirs["data_fingerprint"]
    assert abs(cluster["average_precision"] - single["average_precision"]) <= 0.01
    assert abs(cluster["roc_auc"] - single["roc_auc"]) <= 0.01
    assert metadata(result, "promoted_model")["decision"] == "promoted"  # a first model
    bundle = load_bundle(tmp_path / "dask" / "models" / "production", verify=True)
    served = load_bundle(tmp_path / "local" / "models" / "production", verify=True)
    assert bundle.contract == served.contract == "cards"
    assert bundle.input_fields == served.input_fields
    assert sorted(p.name for p in bundle.bundle_dir.iterdir()) == sorted(
        p.name for p in served.bundle_dir.iterdir()
    )
    rows = np.array([bundle.manifest["smoke_test"]["input"]])
    assert 0.0 <= float(bundle.predict_proba(rows)[0]) <= 1.0
