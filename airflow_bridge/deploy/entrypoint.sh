#!/bin/sh
# Run `airflow "$@"`, after writing SimpleAuthManager's password file from AIRFLOW_PASSWORD the way
# servicectl.stack does (`{"airflow": "<password>"}`, mode 600), so the login of the UI and REST API
# comes from the environment and never from the image. Without AIRFLOW_PASSWORD nothing is written,
# and Airflow generates a password and prints it in the api-server's log.
set -eu

if [ -n "${AIRFLOW_PASSWORD:-}" ] && [ -n "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-}" ]; then
    python - <<'EOF'
import json
import os

path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
# Every user of AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS ("name:role,...") gets the password.
users = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "airflow:admin")
names = [u.split(":")[0].strip() for u in users.split(",") if u.strip()]
os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as out:
    out.write(json.dumps({name: os.environ["AIRFLOW_PASSWORD"] for name in names}) + "\n")
EOF
fi

exec airflow "$@"
