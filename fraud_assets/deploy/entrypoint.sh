#!/bin/sh
# Write $DAGSTER_HOME/dagster.yaml as `make stack` does (PostgreSQL storage when
# DAGSTER_POSTGRES_URL is set, local SQLite otherwise), then run the container's command.
set -eu
python -m fraud_assets.instance
exec "$@"
