"""Train, evaluate and promote once, printing each stage: the original system's manual run.

    uv run python scripts/run_pipeline.py          (from the repository root; `make materialize`)

It runs the Dagster job `weekly_retrain_job` in this process: the assets (raw data and its checks,
time-ordered splits, the IsolationForest anomaly feature, SMOTE and XGBoost, the evaluation, the
promotion) are the one implementation, the same that the Dagster UI, the schedule and Airflow run.
The run is recorded on the instance under DAGSTER_HOME (default .dagster_home). Settings come from
the environment (.env.example): FRAUD_DATA_DIR, FRAUD_MODELS_DIR, MLFLOW_TRACKING_URI, ...

Exit status 0 when the run succeeded (the challenger promoted, or production kept), 1 when a
blocking check or a step failed: the message says which, and production is left as it was.

fraud_assets is imported from the environment, where `uv sync` (or `pip install -r
requirements.txt`) installs the project in editable mode: no sys.path change here.
"""

from fraud_assets.run import main

if __name__ == "__main__":
    raise SystemExit(main())
