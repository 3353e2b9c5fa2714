#!/usr/bin/env bash
# Serve what `make demo` built: the API on :8000, the Dagster UI on :3000, the MLflow UI on :5000.
# Ctrl-C stops all three. Logs: .logs/. Ports: FRAUD_API_PORT, DAGSTER_PORT, MLFLOW_PORT.
set -uo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-uv run --locked}
API_PORT=${FRAUD_API_PORT:-8000}
DAGSTER_PORT=${DAGSTER_PORT:-3000}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
export DAGSTER_HOME=${DAGSTER_HOME:-$PWD/.dagster_home}
mkdir -p .logs
[ -f "$DAGSTER_HOME/dagster.yaml" ] || $RUN python -m fraud_assets.instance

pids=()
alive() { for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && return 0; done; return 1; }
cleanup() {
  # SIGINT first: `dagster dev` shuts its webserver and daemon down on it, not on SIGTERM.
  for pid in "${pids[@]}"; do kill -INT -- "-$pid" 2>/dev/null; done
  for _ in $(seq 20); do alive || break; sleep 0.5; done
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
  for _ in $(seq 10); do alive || break; sleep 0.5; done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

busy() { (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {  # name port command...
  local name=$1 port=$2
  shift 2
  if busy "$port"; then
    echo "port $port is in use: $name not started (set its port variable to move it)"
    return 1
  fi
  setsid "$@" >".logs/$name.log" 2>&1 &
  pids+=($!)
}

wait_for() {  # url seconds
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}

start mlflow "$MLFLOW_PORT" $RUN mlflow ui \
  --backend-store-uri "${MLFLOW_TRACKING_URI:-sqlite:///$PWD/mlflow.db}" \
  --host 127.0.0.1 --port "$MLFLOW_PORT"
start dagster "$DAGSTER_PORT" $RUN dagster dev -m fraud_assets.definitions \
  -h 127.0.0.1 -p "$DAGSTER_PORT"
start api "$API_PORT" $RUN uvicorn api.main:app --host 127.0.0.1 --port "$API_PORT" \
  --no-access-log || exit 1

if ! wait_for "http://127.0.0.1:$API_PORT/ready" 90; then
  echo "the API is not ready after 90 s; its log (.logs/api.log) ends with:"
  tail -20 .logs/api.log
  curl -sS "http://127.0.0.1:$API_PORT/ready" && echo
  exit 1
fi
body=$($RUN python -c 'import json; from api.schemas import EXAMPLE; print(json.dumps(EXAMPLE))')
curl_cmd="curl -s -X POST http://127.0.0.1:$API_PORT/predict -H 'content-type: application/json' -d '$body'"
echo
echo "== Serving =="
echo "API:        http://127.0.0.1:$API_PORT/docs   (model: http://127.0.0.1:$API_PORT/model)"
echo "Dagster UI: http://127.0.0.1:$DAGSTER_PORT   (starting; log: .logs/dagster.log)"
echo "MLflow UI:  http://127.0.0.1:$MLFLOW_PORT   (starting; log: .logs/mlflow.log)"
echo
echo "Score a transaction:"
echo "  $curl_cmd"
echo "  -> $(eval "$curl_cmd")"
echo
for ui in "Dagster UI:$DAGSTER_PORT:dagster" "MLflow UI:$MLFLOW_PORT:mlflow"; do
  IFS=: read -r name port log <<<"$ui"
  if wait_for "http://127.0.0.1:$port/" 120; then
    echo "$name is up on http://127.0.0.1:$port"
  else
    echo "$name did not come up; .logs/$log.log ends with:"
    tail -5 ".logs/$log.log"
  fi
done
echo "Ctrl-C stops all three."
wait "${pids[@]}"
