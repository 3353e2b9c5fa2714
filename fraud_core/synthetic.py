"""A synthetic stand-in for `creditcard.csv`: same schema, size, rhythm and imbalance.

Used when no real file is in the data directory. The frauds are hard but learnable: most of them
shift a handful of components the way the real frauds do (V14, V12, V10, V17, V4, V11), with a
spread that overlaps the legitimate cloud, a minority barely differs from normal traffic, and a
few legitimate transactions look like fraud. Deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fraud_core.schema import AMOUNT, LABEL, PCA_COLUMNS, TIME

N_ROWS = 284_807
FRAUD_RATE = 492 / 284_807
SECONDS = 2 * 24 * 3600

# Standard deviations of V1..V28 in the real data: decreasing, like a PCA.
_STD = np.array(
    [1.96, 1.65, 1.52, 1.42, 1.38, 1.33, 1.24, 1.19, 1.10, 1.09, 1.02, 1.00, 0.99, 0.96,
     0.92, 0.88, 0.85, 0.84, 0.81, 0.77, 0.73, 0.73, 0.62, 0.61, 0.52, 0.48, 0.40, 0.33]
)  # fmt: skip

# Direction of the typical fraud in units of each component's standard deviation.
_FRAUD_SHIFT = np.zeros(28)
for _name, _shift in {
    "V14": -2.2, "V12": -1.9, "V10": -1.7, "V17": -1.8, "V4": 1.6, "V11": 1.4,
    "V3": -1.2, "V16": -1.2, "V7": -1.0, "V2": 0.8, "V9": -0.8, "V18": -0.7,
}.items():  # fmt: skip
    _FRAUD_SHIFT[int(_name[1:]) - 1] = _shift


def _times(rng: np.random.Generator, n: int) -> np.ndarray:
    """Seconds over two days, with fewer transactions at night (trough around 04:00)."""
    grid = np.arange(SECONDS, dtype=np.float64)
    hour = (grid % 86_400) / 3_600
    intensity = 1.0 + 0.85 * np.cos((hour - 16.0) / 24.0 * 2 * np.pi)
    cdf = np.cumsum(intensity)
    cdf /= cdf[-1]
    return np.sort(np.interp(rng.random(n), cdf, grid))


def generate(n_rows: int = N_ROWS, fraud_rate: float = FRAUD_RATE, seed: int = 42) -> pd.DataFrame:
    """Generate labelled transactions with the real data set's 31 columns."""
    if n_rows < 1:
        raise ValueError(f"n_rows must be positive, got {n_rows}")
    if not 0.0 < fraud_rate < 0.5:
        raise ValueError(f"fraud_rate must be in (0, 0.5), got {fraud_rate}")
    rng = np.random.default_rng(seed)
    time = _times(rng, n_rows)
    hour = (time % 86_400) / 3_600
    night = (hour < 6).astype(np.float64)

    # Frauds are relatively more frequent at night, as in the real data.
    weight = 1.0 + 2.0 * night
    p = fraud_rate * weight / weight.mean()
    n_fraud = max(1, round(fraud_rate * n_rows))
    fraud_idx = rng.choice(n_rows, size=n_fraud, replace=False, p=p / p.sum())
    label = np.zeros(n_rows, dtype=np.int8)
    label[fraud_idx] = 1

    # Legitimate traffic: correlated-free components with PCA-like variances and fat tails.
    z = rng.standard_t(df=5, size=(n_rows, 28)) * np.sqrt(3 / 5)
    v = z * _STD

    # Frauds: a per-fraud strength along the fraud direction plus extra noise; 15 % are subtle.
    strength = rng.gamma(shape=2.5, scale=0.75, size=n_fraud)
    strength[rng.random(n_fraud) < 0.15] *= 0.3
    jitter = rng.normal(0.0, 0.7, size=(n_fraud, 28))
    v[fraud_idx] += (strength[:, None] * _FRAUD_SHIFT + jitter * np.abs(_FRAUD_SHIFT)) * _STD
    # Two fraud rings: one interacts V4 with V14 in a way a linear model cannot separate.
    ring = fraud_idx[rng.random(n_fraud) < 0.3]
    v[ring, 3] = -np.abs(v[ring, 3]) - 1.0 * _STD[3]

    # Legitimate look-alikes cap the achievable precision.
    n_hard = int(n_fraud * 0.6)
    hard = rng.choice(np.flatnonzero(label == 0), size=n_hard, replace=False)
    v[hard] += rng.gamma(2.0, 0.6, size=n_hard)[:, None] * _FRAUD_SHIFT * _STD * 0.9

    # Amounts: log-normal with a heavy tail; frauds are bimodal (card tests and cash-outs).
    amount = np.exp(rng.normal(3.1, 1.35, size=n_rows)) + rng.exponential(1.0, n_rows)
    small = rng.random(n_fraud) < 0.5
    amount[fraud_idx] = np.where(
        small, rng.uniform(0.0, 3.0, n_fraud), np.exp(rng.normal(5.0, 1.2, n_fraud))
    )
    amount = np.round(np.minimum(amount, 25_691.16), 2).astype(np.float64)

    frame = pd.DataFrame(v, columns=list(PCA_COLUMNS))
    frame.insert(0, TIME, np.floor(time))
    frame[AMOUNT] = amount
    frame[LABEL] = label
    return frame
