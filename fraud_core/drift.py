"""Drift statistics: how far recent inputs and scores have moved from the reference (training) data.

Compared, per column: `V1`…`V28`, `Amount`, the hour of day, and the model's `fraud_probability`
when both frames carry it. Raw `Time` is left out: it counts seconds since the first transaction,
so recent rows are later than the reference by construction and it would always "drift". Its hour
of day is kept instead: the model sees it (as sine and cosine), and a changed daily rhythm is real
drift. It assumes windows of whole days: a current window of a few hours differs in hour by
construction, so `window_columns` leaves the hour out of windows shorter than a day, and
`reference_sample` draws the reference from every split (whole days, unlike the time-ordered
training split, which ends part-way through one).

Two statistics per column:

- PSI (population stability index) over 10 bins cut at the reference's deciles; a value outside
  the reference's range falls in an end bin, and an empty bin counts as `epsilon` of the rows, so
  the logarithm stays finite. Quantile bins make PSI (like KS) blind to monotone transforms, so
  `Amount` needs no log.
- The two-sample Kolmogorov-Smirnov test (`scipy.stats.ks_2samp`): statistic and p-value.

The rule, per column: **fail** when PSI ≥ `psi_fail` (0.25), **warn** when PSI ≥ `psi_warn` (0.1)
or the KS statistic ≥ `ks_warn` (0.1), else **ok**; the report's status is its worst column's.
PSI leads because its usual thresholds do not depend on the sample size. The KS statistic only
warns: it is a distance, not a test, so it too stays put as samples grow. The KS p-value is shown
and never judged: on hundreds of thousands of rows it is tiny for shifts nobody would act on.

**Card transactions.** The columns compared are the behavioural features the model scored
(`fraud_core.cards.definition`), logged with each prediction (`card_predictions.features`),
against the same features of the data set the model was built from (the split frames carry them,
computed offline on the whole history): `reference_sample` picks them by the splits' contract.
The calendar flags follow the hour's rule: `TX_DURING_NIGHT` only over windows of a whole day,
`TX_DURING_WEEKEND` only over a whole week (`card_window_columns`). A served model of one
contract is never compared with data of the other: `contract_mismatch` says why not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from fraud_core.cards.definition import TX_US, US_PER_DAY, FeatureDefinition
from fraud_core.contracts import CARDS, KAGGLE
from fraud_core.data import Splits
from fraud_core.features import SECONDS_PER_DAY
from fraud_core.schema import AMOUNT, FEATURE_COLUMNS, PCA_COLUMNS, TIME

if TYPE_CHECKING:
    from fraud_core.bundle import FraudModel

SCORE = "fraud_probability"
HOUR = "hour"
#: The input columns compared by default (the score is added when both frames have it).
INPUT_COLUMNS: tuple[str, ...] = (*PCA_COLUMNS, AMOUNT, HOUR)
STATUSES: tuple[str, ...] = ("ok", "warn", "fail")
#: The card features that only compare over windows of at least this many days (see above).
CALENDAR_SPANS_DAYS = {"TX_DURING_NIGHT": 1, "TX_DURING_WEEKEND": 7}


class InsufficientData(ValueError):
    """Too few rows to compare: a number from them would be noise, so none is given."""

    def __init__(self, sample: str, rows: int, needed: int) -> None:
        self.sample, self.rows, self.needed = sample, rows, needed
        super().__init__(
            f"drift statistics need at least {needed} {sample} rows, got {rows}; wait for more "
            "traffic or lower min_rows"
        )


@dataclass(frozen=True)
class DriftThresholds:
    """When a column warns or fails, and how much data a comparison needs."""

    psi_warn: float = 0.1
    psi_fail: float = 0.25
    ks_warn: float = 0.1
    min_rows: int = 500
    bins: int = 10
    epsilon: float = 1e-4

    def __post_init__(self) -> None:
        if not 0 < self.psi_warn <= self.psi_fail:
            raise ValueError("thresholds need 0 < psi_warn <= psi_fail")
        if not 0 < self.ks_warn <= 1:
            raise ValueError("ks_warn is a KS statistic: it must be in (0, 1]")
        if self.bins < 2 or self.min_rows < 1 or not 0 < self.epsilon < 1 / self.bins:
            raise ValueError("need bins >= 2, min_rows >= 1 and 0 < epsilon < 1 / bins")

    def status(self, psi: float, ks_statistic: float) -> str:
        if psi >= self.psi_fail:
            return "fail"
        if psi >= self.psi_warn or ks_statistic >= self.ks_warn:
            return "warn"
        return "ok"


@dataclass(frozen=True)
class ScoreShift:
    """How the model's score moved: PSI, KS, the mean and (given a threshold) the alert rate."""

    psi: float
    ks_statistic: float
    ks_pvalue: float
    reference_mean: float
    current_mean: float
    threshold: float | None = None
    reference_fraud_rate: float | None = None
    current_fraud_rate: float | None = None

    @property
    def mean_change(self) -> float:
        return self.current_mean - self.reference_mean


@dataclass(frozen=True)
class DriftReport:
    """Per-column drift, worst first, and the overall verdict."""

    #: One row per column: feature, status, psi, ks_statistic, ks_pvalue, means; worst first.
    table: pd.DataFrame
    status: str
    #: The columns that warn or fail, worst first.
    worst_features: tuple[str, ...]
    reference_rows: int
    current_rows: int
    score: ScoreShift | None
    thresholds: DriftThresholds

    def worst(self, k: int = 6) -> dict[str, float]:
        """The `k` highest-ranked columns and their PSI (for plots), worst first."""
        head = self.table.head(k)
        return dict(zip(head["feature"], head["psi"].astype(float), strict=True))


def quantile_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """The inner bin edges at the reference's quantiles; ties merge bins rather than empty them."""
    return np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The share of `values` in each bin; beyond the outer edges is the end bins' share."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / max(1, len(values))


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10, epsilon: float = 1e-4) -> float:
    """Population stability index of `current` against `reference`, bins at its quantiles."""
    edges = quantile_edges(np.asarray(reference, dtype=np.float64), bins)
    expected = np.maximum(bin_shares(np.asarray(reference, dtype=np.float64), edges), epsilon)
    actual = np.maximum(bin_shares(np.asarray(current, dtype=np.float64), edges), epsilon)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns drift compares, from raw fields (adds `hour` from `Time`; drops `Time`)."""
    out = frame.drop(columns=[TIME], errors="ignore")
    if TIME in frame:
        out[HOUR] = (frame[TIME].to_numpy(np.float64) % SECONDS_PER_DAY) / 3_600.0
    return out


def window_columns(current: pd.DataFrame, with_score: bool) -> list[str] | None:
    """The columns to compare for this window: `None` (all) over a whole day, else all but hour.

    The hour of day only compares over whole days; a shorter window differs by construction.
    """
    span_s = float(current[TIME].max() - current[TIME].min()) if len(current) else 0.0
    if span_s >= SECONDS_PER_DAY:
        return None
    columns = [c for c in INPUT_COLUMNS if c != HOUR]
    if with_score:
        columns.append(SCORE)
    return columns


def card_window_columns(
    current: pd.DataFrame, definition: FeatureDefinition, with_score: bool
) -> list[str]:
    """The card features to compare for this window of predictions (`current` has `tx_us`).

    Every behavioural feature, less the calendar flags whose period the window does not cover
    (a window of a few hours differs in night share by construction, one of a few days in
    weekend share), and the score when `with_score`.
    """
    tx_us = current[TX_US].to_numpy(np.int64) if TX_US in current and len(current) else None
    span_days = 0.0 if tx_us is None else float(tx_us.max() - tx_us.min()) / US_PER_DAY
    columns = [
        name for name in definition.feature_names if span_days >= CALENDAR_SPANS_DAYS.get(name, 0)
    ]
    if with_score:
        columns.append(SCORE)
    return columns


def contract_mismatch(splits: Splits, model: FraudModel | None) -> str | None:
    """Why drift cannot compare this model's predictions with these splits, or None if it can.

    The reference must be the data of the served model's contract (and, for cards, carry the
    features of the model's definition): anything else would be a number about nothing.
    """
    if model is None:
        return None
    if model.contract != splits.contract:
        return (
            f"drift not computed for this contract: the served model {model.version} is of the "
            f"{model.contract} contract, the training data of the {splits.contract} contract"
        )
    if model.contract == CARDS and model.feature_definition != splits.feature_definition:
        return (
            f"drift not computed for this contract: the served model {model.version} uses other "
            "feature windows than the training data's features"
        )
    return None


def reference_sample(
    splits: Splits, rows: int, seed: int = 0, model: FraudModel | None = None
) -> pd.DataFrame:
    """At most `rows` rows of the data set the model was built from, scored by `model`.

    Kaggle: the 30 raw fields; cards: the behavioural features (`splits.input_fields`). All three
    splits, not the training split alone: it covers whole days, so the hour of day is compared
    like with like (the time-ordered training split ends part-way through a day). `model` scores
    them only when it is of the splits' contract (`contract_mismatch`).
    """
    frame = pd.concat([splits.train, splits.validation, splits.test], ignore_index=True)
    if len(frame) > rows:
        frame = frame.sample(n=rows, random_state=seed)
    columns = list(FEATURE_COLUMNS) if splits.contract == KAGGLE else list(splits.input_fields)
    out = frame[columns].reset_index(drop=True)
    if model is not None and contract_mismatch(splits, model) is None:
        out[SCORE] = model.predict_proba(out.to_numpy(np.float64))
    return out


def _finite(frame: pd.DataFrame, column: str, sample: str, needed: int) -> np.ndarray:
    if column not in frame:
        raise ValueError(f"the {sample} rows have no column {column!r}")
    values = frame[column].to_numpy(np.float64)
    # Missing values are left out of the comparison of their own column only.
    values = values[np.isfinite(values)]
    if len(values) < needed:
        raise InsufficientData(f"{sample} {column!r}", len(values), needed)
    return values


def compare(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    thresholds: DriftThresholds | None = None,
    threshold: float | None = None,
    columns: Sequence[str] | None = None,
) -> DriftReport:
    """Compare recent rows (`current`) with the reference, column by column.

    Both frames hold raw fields (`Time`, `V1`…`V28`, `Amount`) and, to judge the model's score
    too, `fraud_probability`. `threshold` (the model's decision threshold) adds the predicted
    fraud rate to the score's shift. Raises `InsufficientData` when either side has fewer than
    `thresholds.min_rows` rows.
    """
    limits = thresholds or DriftThresholds()
    for sample, frame in (("reference", reference), ("current", current)):
        if len(frame) < limits.min_rows:
            raise InsufficientData(sample, len(frame), limits.min_rows)
    ref, cur = comparable(reference), comparable(current)
    if columns is None:
        with_score = SCORE in ref and SCORE in cur
        columns = (*INPUT_COLUMNS, SCORE) if with_score else INPUT_COLUMNS
    rows: list[dict[str, Any]] = []
    for column in columns:
        r = _finite(ref, column, "reference", limits.min_rows)
        c = _finite(cur, column, "current", limits.min_rows)
        ks = ks_2samp(r, c)
        value = psi(r, c, limits.bins, limits.epsilon)
        rows.append(
            {
                "feature": column,
                "status": limits.status(value, float(ks.statistic)),
                "psi": value,
                "ks_statistic": float(ks.statistic),
                "ks_pvalue": float(ks.pvalue),
                "reference_mean": float(r.mean()),
                "current_mean": float(c.mean()),
            }
        )
    table = pd.DataFrame(rows)
    table["_rank"] = table["status"].map(STATUSES.index)
    table = (
        table.sort_values(["_rank", "psi", "ks_statistic"], ascending=False)
        .drop(columns="_rank")
        .reset_index(drop=True)
    )
    flagged = table[table["status"] != "ok"]
    status = STATUSES[max(STATUSES.index(s) for s in table["status"])]
    score = None
    by_column = {row["feature"]: row for row in rows}
    if SCORE in by_column:
        row = by_column[SCORE]
        score = ScoreShift(
            psi=row["psi"],
            ks_statistic=row["ks_statistic"],
            ks_pvalue=row["ks_pvalue"],
            reference_mean=row["reference_mean"],
            current_mean=row["current_mean"],
            threshold=threshold,
            reference_fraud_rate=_rate(ref, threshold),
            current_fraud_rate=_rate(cur, threshold),
        )
    return DriftReport(
        table=table,
        status=status,
        worst_features=tuple(flagged["feature"]),
        reference_rows=len(reference),
        current_rows=len(current),
        score=score,
        thresholds=limits,
    )


def _rate(frame: pd.DataFrame, threshold: float | None) -> float | None:
    """The share of rows the model flags as fraud (score >= threshold)."""
    if threshold is None:
        return None
    return float(np.mean(frame[SCORE].to_numpy(np.float64) >= threshold))
