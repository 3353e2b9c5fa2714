"""Drift statistics: unchanged traffic passes, a moved input or score fails and is named."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from fraud_core import plots, synthetic
from fraud_core.bundle import FraudModel
from fraud_core.data import split_by_time
from fraud_core.drift import (
    HOUR,
    INPUT_COLUMNS,
    SCORE,
    DriftThresholds,
    InsufficientData,
    bin_shares,
    comparable,
    compare,
    psi,
    quantile_edges,
    reference_sample,
    window_columns,
)
from fraud_core.schema import FEATURE_COLUMNS, LABEL, TIME

REFERENCE_ROWS = 30_000
CURRENT_ROWS = 5_000


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return synthetic.generate(n_rows=REFERENCE_ROWS, fraud_rate=0.01, seed=1)


@pytest.fixture(scope="module")
def current() -> pd.DataFrame:
    """Later traffic from the same generator: a different seed, nothing changed."""
    return synthetic.generate(n_rows=CURRENT_ROWS, fraud_rate=0.01, seed=2)


def with_scores(frame: pd.DataFrame, model: FraudModel) -> pd.DataFrame:
    scored = frame.copy()
    scored[SCORE] = model.predict_proba(frame[list(FEATURE_COLUMNS)].to_numpy())
    return scored


@pytest.mark.parametrize("how", ["another seed", "a random split"])
def test_unchanged_traffic_is_ok(reference: pd.DataFrame, current: pd.DataFrame, how: str) -> None:
    if how == "a random split":
        shuffled = reference.sample(frac=1.0, random_state=0)
        reference, current = shuffled.iloc[CURRENT_ROWS:], shuffled.iloc[:CURRENT_ROWS]
    report = compare(reference, current)
    assert report.status == "ok", report.table.head()
    assert report.worst_features == ()
    assert report.reference_rows == len(reference) and report.current_rows == CURRENT_ROWS
    assert set(report.table["feature"]) == set(INPUT_COLUMNS)
    assert report.table["psi"].max() < 0.05
    assert report.score is None  # no scores in the frames


def test_table_is_sorted_worst_first_and_leaves_raw_time_out(
    reference: pd.DataFrame, current: pd.DataFrame
) -> None:
    moved = current.copy()
    moved["V7"] += 0.4 * moved["V7"].std()  # a warning, not a failure
    moved["V2"] += 2.0 * moved["V2"].std()
    report = compare(reference, moved)
    assert list(report.table["feature"][:2]) == ["V2", "V7"]
    assert list(report.table["status"][:2]) == ["fail", "warn"]
    assert report.worst_features == ("V2", "V7")
    assert report.status == "fail"
    assert list(report.worst(2)) == ["V2", "V7"]
    assert TIME not in set(report.table["feature"]) and HOUR in set(report.table["feature"])


def test_amounts_three_times_larger_fail_and_name_amount(
    reference: pd.DataFrame, current: pd.DataFrame
) -> None:
    moved = current.copy()
    moved["Amount"] *= 3
    report = compare(reference, moved)
    assert report.status == "fail"
    assert report.worst_features == ("Amount",)
    row = report.table.iloc[0]
    assert row["feature"] == "Amount" and row["psi"] >= 0.25
    assert row["current_mean"] == pytest.approx(3 * row["reference_mean"], rel=0.15)


def test_one_shifted_component_fails_and_is_named(
    reference: pd.DataFrame, current: pd.DataFrame
) -> None:
    moved = current.copy()
    moved["V4"] += 2
    report = compare(reference, moved)
    assert report.status == "fail"
    assert report.worst_features == ("V4",)
    assert report.table.iloc[0]["ks_statistic"] > 0.3


def test_later_days_do_not_drift(reference: pd.DataFrame) -> None:
    """Raw `Time` only grows; the same rows a week later compare as identical."""
    later = reference.copy()
    later[TIME] += 7 * 86_400
    report = compare(reference, later)
    assert report.status == "ok"
    assert report.table["psi"].abs().max() == pytest.approx(0.0, abs=1e-12)


def test_a_score_shift_is_detected(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    make_fraud_model: Callable[..., FraudModel],
) -> None:
    model = make_fraud_model(seed=0)
    ref, cur = with_scores(reference, model), with_scores(current, model)
    steady = compare(ref, cur, threshold=model.threshold)
    assert steady.status == "ok"
    assert steady.score is not None and steady.score.psi < 0.1

    # Same inputs, a model gone miscalibrated: only the score moved.
    inflated = cur.assign(**{SCORE: np.sqrt(cur[SCORE])})
    report = compare(ref, inflated, threshold=model.threshold)
    assert report.status == "fail"
    assert report.worst_features == (SCORE,)
    score = report.score
    assert score is not None
    assert score.psi >= 0.25 and score.mean_change > 0.01
    assert score.reference_fraud_rate is not None and score.current_fraud_rate is not None
    assert score.current_fraud_rate > score.reference_fraud_rate


def test_too_few_recent_rows_raise_with_the_counts(
    reference: pd.DataFrame, current: pd.DataFrame
) -> None:
    with pytest.raises(InsufficientData, match=r"at least 500 current rows, got 120") as info:
        compare(reference, current.head(120))
    assert (info.value.rows, info.value.needed) == (120, 500)
    # The minimum is configurable; then the same rows are compared.
    report = compare(reference, current.head(120), DriftThresholds(min_rows=100))
    assert report.current_rows == 120


def test_a_missing_column_is_named(reference: pd.DataFrame, current: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="'V9'"):
        compare(reference, current.drop(columns=["V9"]))


def test_psi_of_identical_samples_is_zero_and_psi_is_symmetric_ish() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, 50_000)
    assert psi(a, a) == pytest.approx(0.0, abs=1e-12)
    assert psi(a, rng.normal(0.0, 1.0, 50_000)) < 0.01
    b = rng.normal(0.5, 1.0, 50_000)
    forward, backward = psi(a, b), psi(b, a)
    # Half a standard deviation: PSI tends to 0.25 (the shift squared) as bins get finer.
    assert 0.15 < forward < 0.3
    assert backward == pytest.approx(forward, rel=0.15)
    assert psi(a, rng.normal(1.0, 1.0, 50_000)) > forward  # a larger shift scores higher


def test_values_outside_the_reference_fall_in_the_end_bins() -> None:
    reference = np.arange(1_000, dtype=np.float64)
    edges = quantile_edges(reference, 10)
    assert len(edges) == 9
    shares = bin_shares(np.array([-1e9, -5.0, 5_000.0, 1e9]), edges)
    np.testing.assert_allclose(shares, [0.5, *[0.0] * 8, 0.5])
    # An empty bin counts as epsilon, so PSI stays finite even when nothing overlaps.
    far = psi(reference, reference + 10_000)
    assert np.isfinite(far) and far > 1.0


def test_thresholds_judge_by_psi_and_let_ks_only_warn() -> None:
    limits = DriftThresholds()
    assert limits.status(psi=0.05, ks_statistic=0.05) == "ok"
    assert limits.status(psi=0.12, ks_statistic=0.05) == "warn"
    assert limits.status(psi=0.05, ks_statistic=0.6) == "warn"
    assert limits.status(psi=0.3, ks_statistic=0.05) == "fail"
    with pytest.raises(ValueError):
        DriftThresholds(psi_warn=0.3, psi_fail=0.2)


def test_a_tiny_shift_on_huge_samples_is_significant_but_ok() -> None:
    big_ref = synthetic.generate(n_rows=150_000, fraud_rate=0.01, seed=3)
    big_cur = synthetic.generate(n_rows=150_000, fraud_rate=0.01, seed=4)
    big_cur["V1"] += 0.05 * big_cur["V1"].std()
    report = compare(big_ref, big_cur)
    v1 = report.table.set_index("feature").loc["V1"]
    assert v1["ks_pvalue"] < 1e-6  # "significant"...
    assert v1["status"] == "ok"  # ...and not worth acting on
    assert report.status == "ok"


def test_drift_plot_is_a_png(
    reference: pd.DataFrame, current: pd.DataFrame, tmp_path: Path
) -> None:
    moved = current.copy()
    moved["Amount"] *= 3
    report = compare(reference, moved)
    ref, cur = comparable(reference), comparable(moved)
    assert LABEL in ref  # extra columns are carried, not compared
    path = plots.drift_histograms(ref, cur, report.worst(4), tmp_path / "drift.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 300
    with pytest.raises(ValueError):
        plots.drift_histograms(ref, cur, {}, tmp_path / "empty.png")


def test_the_hour_is_compared_only_over_a_whole_day(current: pd.DataFrame) -> None:
    day = current.assign(**{TIME: np.linspace(0.0, 86_400.0, len(current))})
    assert window_columns(day, with_score=True) is None
    hours = current.assign(**{TIME: np.linspace(0.0, 6 * 3_600.0, len(current))})
    short = window_columns(hours, with_score=False)
    assert short is not None and HOUR not in short
    assert set(short) == set(INPUT_COLUMNS) - {HOUR}
    scored = window_columns(hours, with_score=True)
    assert scored is not None and scored[-1] == SCORE and HOUR not in scored
    assert window_columns(current.head(0), with_score=False) == short
    # A short window with the rule compares as ok, where comparing the hour would flag it.
    reference = synthetic.generate(n_rows=REFERENCE_ROWS, fraud_rate=0.01, seed=1)
    night = current.assign(**{TIME: np.linspace(0.0, 4 * 3_600.0, len(current))})
    assert compare(reference, night).table.set_index("feature").loc[HOUR, "status"] != "ok"
    assert compare(reference, night, columns=window_columns(night, False)).status == "ok"


def test_the_reference_is_sampled_from_every_split(
    reference: pd.DataFrame, make_fraud_model: Callable[..., FraudModel]
) -> None:
    splits = split_by_time(reference)
    sample = reference_sample(splits, rows=6_000, seed=0)
    assert len(sample) == 6_000 and list(sample.columns) == list(FEATURE_COLUMNS)
    # Rows from all three time-ordered splits, so it spans both days.
    assert sample[TIME].min() < splits.validation[TIME].min()
    assert sample[TIME].max() > splits.test[TIME].min()
    assert reference_sample(splits, rows=6_000, seed=0).equals(sample)
    whole = reference_sample(splits, rows=10 * REFERENCE_ROWS)
    assert len(whole) == REFERENCE_ROWS
    model = make_fraud_model(seed=0)
    scored = reference_sample(splits, rows=1_000, seed=0, model=model)
    expected = model.predict_proba(scored[list(FEATURE_COLUMNS)].to_numpy())
    np.testing.assert_allclose(scored[SCORE].to_numpy(), expected)
