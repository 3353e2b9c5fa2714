"""Credit-card fraud detection platform: pure ML modules and the Dagster code location."""

import os

# XGBoost and scikit-learn use OpenMP. With the default (active) wait policy, idle OpenMP threads
# spin on the cores, and when another CPU-heavy process shares a small machine, training slowed
# from 4 s to 85 s in our measurements. PASSIVE yields identical results. It must be set before
# libgomp loads, which is why it lives at the package root.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# MLflow 3 reports usage to its makers' servers unless told not to (it fetches a config from
# config.mlflow-telemetry.io and posts events). Bank networks are offline and nothing here may
# call out: off in every process that imports the platform, and in the images (their ENV).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
