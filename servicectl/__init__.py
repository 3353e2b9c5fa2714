"""Process control written once: start a service, wait for its health, stop it and its children.

`servicectl.process` starts commands in sessions of their own and stops whole process groups,
`servicectl.health` waits for probes (HTTP, Dagster, Airflow), `servicectl.stack` is `make stack`
and `servicectl.serve` is `make serve`. The tests and the benchmarks start their servers with it.
Only the standard library and httpx (psycopg2 for the stack's databases) are imported.
"""

import os

# The services started here (the MLflow server and UI among them) inherit the environment:
# MLflow 3's usage reports to its makers' servers stay off (see fraud_core/__init__.py).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
