"""The Dagster code location of the fraud platform: assets, checks, jobs, schedules, sensors.

`fraud_assets.definitions` is the single entry point (`workspace.yaml`, `dagster asset
materialize -m fraud_assets.definitions`). The ML work it orchestrates lives in `fraud_core`.
"""

import fraud_core  # noqa: F401  (sets the OpenMP wait policy before XGBoost loads)
