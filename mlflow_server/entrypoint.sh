#!/bin/sh
# Wait for the tracking database, then run the MLflow tracking server in the foreground.
#
#   MLFLOW_BACKEND_STORE_URI      postgresql://user:password@host:5432/mlflow (required)
#   MLFLOW_ARTIFACTS_DESTINATION  where the server keeps artifacts (default /mlartifacts, a volume)
#   MLFLOW_DB_WAIT_S              how long to wait for the database (default 60)
#   MLFLOW_WORKERS                server workers (default 1, as `make stack`)
# Extra arguments are passed on to `mlflow server`.
set -eu

: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI to the tracking database, e.g. postgresql://postgres:PASSWORD@postgres:5432/mlflow}"

python - "${MLFLOW_DB_WAIT_S:-60}" <<'EOF'
import os
import sys
import time
from urllib.parse import urlsplit

import psycopg2

url = os.environ["MLFLOW_BACKEND_STORE_URI"]
parts = urlsplit(url)
if not parts.scheme.startswith("postgresql"):
    sys.exit(0)  # a file or SQLite store: nothing to wait for
# Named without the password: this line ends up in logs.
where = f"{parts.hostname}:{parts.port or 5432}{parts.path}"
dsn = parts._replace(scheme="postgresql").geturl()
wait_s = float(sys.argv[1])
deadline = time.monotonic() + wait_s
while True:
    try:
        psycopg2.connect(dsn, connect_timeout=5).close()
        break
    except psycopg2.OperationalError as exc:
        if time.monotonic() >= deadline:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            sys.exit(
                f"mlflow: the tracking database {where} did not answer within {wait_s:.0f} s "
                f"({reason}). Is it running, and are MLFLOW_BACKEND_STORE_URI's user and "
                "password right?"
            )
        time.sleep(1)
print(f"mlflow: tracking database {where} is up", file=sys.stderr)
EOF

exec mlflow server \
    --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
    --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-/mlartifacts}" \
    --host 0.0.0.0 \
    --port 5000 \
    --workers "${MLFLOW_WORKERS:-1}" \
    "$@"
