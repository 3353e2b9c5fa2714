"""Defaults of every Dagster config in one place (the pure modules' dataclasses agree)."""

from __future__ import annotations

from fraud_core.cards.definition import DEFAULT as CARD_FEATURES
from fraud_core.cards.evaluate import DEFAULT_K
from fraud_core.drift import DriftThresholds
from fraud_core.evaluate import ThresholdPolicy
from fraud_core.promote import PromotionPolicy
from fraud_core.train import TrainConfig
from fraud_core.tune import TuneConfig

OWNER = "team:fraud-ml"

VALIDATION_FRACTION = 0.2
TEST_FRACTION = 0.2
MIN_FRAUDS_PER_SPLIT = 20

#: The card contract's behavioural features (windows, label delay, night hours, lateness).
FEATURES = CARD_FEATURES
#: Card Precision@k: the cards a team of investigators checks a day (the Handbook's 100).
CARD_PRECISION_K = DEFAULT_K

#: The first day a daily partition of the card contract may hold (the Handbook's data starts
#: 2018-04-01); the partitions run up to yesterday (UTC).
PARTITIONS_START = "2018-01-01"
#: The Sunday that starts the week of PARTITIONS_START (the weekly model's first week).
WEEKS_START = "2017-12-31"
#: Days of features the weekly card model trains, validates and tests on: the newest ones.
TRAINING_WINDOW_DAYS = 28

ANOMALY_TREES = 100
SEED = 0

TRAIN = TrainConfig()
TUNE = TuneConfig()
#: The study's name; the asset appends the data fingerprint, so new data starts a new study.
TUNING_STUDY = "fraud-xgboost"
THRESHOLD = ThresholdPolicy()
PROMOTION = PromotionPolicy()

#: The project's own runtime requirements, written into the MLflow model for `mlflow models serve`.
MODEL_PIP_REQUIREMENTS = [
    "mlflow>=3.17,<3.18",
    "xgboost>=3.2,<3.3",
    "scikit-learn>=1.9,<1.10",
    "numpy>=2",
    "pandas>=2.3,<3",
]

WEEKLY_CRON = "0 2 * * 0"
SCHEDULE_TIMEZONE = "UTC"

#: Drift: PSI warn 0.1 / fail 0.25 (the usual industry thresholds), at least 500 predictions.
DRIFT = DriftThresholds()
#: Predictions of the last week against a sample of the training split.
DRIFT_WINDOW_HOURS = 24.0 * 7
DRIFT_MAX_ROWS = 50_000
DRIFT_REFERENCE_ROWS = 50_000
#: The drift check runs daily; stopped by default like every schedule here.
DRIFT_CRON = "0 6 * * *"
