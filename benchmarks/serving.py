"""How fast the API serves the model, against `mlflow models serve` on the same model.

    python benchmarks/serving.py [--rows 284807] [--duration 10] [--rounds 2] [--keep]
    python benchmarks/serving.py --models-dir DIR --tracking-uri URI   # reuse a trained model
    python benchmarks/serving.py --prediction-log [URL]   # the API with its prediction log on / off

Needs `wrk` (https://github.com/wg/wrk) on the PATH: `apt-get install wrk` on Debian and Ubuntu,
`brew install wrk` on macOS.

Trains one model (untimed) by materializing the Dagster graph on synthetic data into a temporary
folder, or reuses one given with `--models-dir` and `--tracking-uri`. Then, in one run:

- the in-process floor: `FraudModel.predict_proba` on one row and on a batch of 1,000 rows;
- starts the API (`uvicorn api.main:app`, one worker) and `mlflow models serve` on the registered
  model (`models:/fraud-detector@champion`), checks that both return the same probabilities;
- drives each with wrk, one transaction per request, at concurrency 1 and 32, the servers
  alternating so that slow spells of a shared machine hit both alike;
- times a batch of 1,000 transactions through `/predict/batch` (and MLflow's `/invocations`);
- starts the API with `--workers 2` and measures it at concurrency 1 (the Nagle check).

Prints a table (requests/s, p50 and p99 latency, and the server's CPU time per request, which a
busy machine disturbs much less) and checks the targets: the API at least 10x MLflow's throughput
at concurrency 32, its p99 at concurrency 1 under 3 ms, and a batch of 1,000 under 50 ms (p50).
The API logs its predictions to a SQLite file in the temporary folder, as it does by default.

With `--prediction-log` the run compares the API with itself instead: one server logging every
prediction (to a SQLite file in the temporary folder, or to URL, e.g. a PostgreSQL database) and
one with `FRAUD_PREDICTION_LOG_URL=off`, driven alike and in turns; it prints both and the ratio,
checks that every logged request reached the database, and the target: log on within 10 % of
log off in requests/s at concurrency 32.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from materialize_vs_script import default_fraud_rate  # noqa: E402

from fraud_core import synthetic  # noqa: E402
from fraud_core.bundle import BundleError, FraudModel, load_bundle  # noqa: E402
from fraud_core.schema import FEATURE_COLUMNS  # noqa: E402

MIN_RATIO = 10.0
#: The prediction log may cost at most this share of the API's throughput (--prediction-log).
MAX_LOG_COST = 0.10
MAX_P99_C1_MS = 3.0
MAX_BATCH_MS = 50.0
BATCH_ROWS = 1_000
MODEL_NAME = "fraud-detector"
MODEL_URI = f"models:/{MODEL_NAME}@champion"
#: wrk's threads and connections for each measured concurrency.
LOADS = {1: (1, 1), 32: (2, 32)}
WARMUP_S = 2
INSTALL_WRK = "install it with `apt-get install wrk` (Debian, Ubuntu) or `brew install wrk` (macOS)"

MATERIALIZE = """
import dagster as dg
from fraud_assets.definitions import ASSETS, CHECKS
from fraud_assets.defs.resources import default_resources
result = dg.materialize([*ASSETS, *CHECKS], resources=default_resources(), raise_on_error=False)
raise SystemExit(0 if result.success else 1)
"""

#: wrk script: POST the bodies in turn; `done` prints the numbers as one JSON line.
WRK_LUA = """
local bodies = {
%(bodies)s
}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d, '
    .. '"errors": %%d, "non_2xx": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass
class Load:
    server: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float  # the server's CPU time per request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + sys) of the live processes in a process group, from /proc (Linux)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended while we looked
            continue
        # After the command name: state, ppid, pgrp, ... utime and stime are the 12th and 13th.
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def server_stack() -> str:
    """The versions, event loop and HTTP parser that both servers run on (the same uvicorn)."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    versions = {name: importlib.metadata.version(name) for name in ("uvicorn", "fastapi", "mlflow")}
    return (
        f"uvicorn {versions['uvicorn']} ({loop}, {http}), FastAPI {versions['fastapi']}, "
        f"MLflow {versions['mlflow']}"
    )


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    p50, p99 = np.percentile(np.asarray(seconds) * 1e3, [50, 99])
    return float(p50), float(p99)


# -- the model ----------------------------------------------------------------------------------
def train_model(state: Path, rows: int, fraud_rate: float) -> None:
    """Materialize the whole graph on synthetic data, every piece of state under `state`."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "FRAUD_DATA_DIR": str(state / "raw"),  # empty: the graph generates synthetic data
        "FRAUD_MODELS_DIR": str(state / "models"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{state / 'mlflow.db'}",
        "FRAUD_MLFLOW_ARTIFACT_ROOT": str(state / "mlartifacts"),
        "FRAUD_REGISTERED_MODEL": MODEL_NAME,
        "FRAUD_SYNTHETIC_ROWS": str(rows),
        "FRAUD_SYNTHETIC_FRAUD_RATE": str(fraud_rate),
    }
    log = state / "materialize.log"
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-c", MATERIALIZE], cwd=state, env=env, stdout=out, stderr=out
        )
    if proc.returncode != 0:
        sys.stderr.write(log.read_text()[-5000:])
        raise SystemExit(f"training the model failed (exit code {proc.returncode}); log: {log}")


def transactions(n: int, seed: int = 7) -> np.ndarray:
    """An (n, 30) matrix of synthetic transactions, about 5 % of them frauds."""
    frame = synthetic.generate(n_rows=n, fraud_rate=0.05, seed=seed)
    return frame[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float64)


def in_process_floor(model: FraudModel, rows: np.ndarray, batch: np.ndarray) -> dict[str, float]:
    """`predict_proba` with nothing around it: one row many times, and a batch of 1,000."""
    one = rows[:1]
    for _ in range(200):
        model.predict_proba(one)
    singles = []
    for i in range(5_000):
        row = rows[i % len(rows) : i % len(rows) + 1]
        start = time.perf_counter()
        model.predict_proba(row)
        singles.append(time.perf_counter() - start)
    model.predict_proba(batch)
    batches = []
    for _ in range(50):
        start = time.perf_counter()
        model.predict_proba(batch)
        batches.append(time.perf_counter() - start)
    p50, p99 = percentiles(singles)
    b50, b99 = percentiles(batches)
    return {"one_p50_ms": p50, "one_p99_ms": p99, "batch_p50_ms": b50, "batch_p99_ms": b99}


# -- the servers --------------------------------------------------------------------------------
@contextmanager
def server(
    name: str, argv: list[str], env: dict[str, str], url: str, log: Path, timeout: float = 180.0
) -> Iterator[int]:
    """Run a server in its own process group until `url` answers 200; stop the whole group after."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            argv, cwd=log.parent, env=env, stdout=out, stderr=out, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                sys.stderr.write(log.read_text()[-5000:])
                raise SystemExit(f"{name} exited with code {proc.returncode} before it was ready")
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} not ready at {url} after {timeout:.0f}s; log: {log}")
            time.sleep(0.25)
        yield proc.pid  # the process group: `mlflow models serve` and its uvicorn child
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server's process group, then kill whatever is left of it."""
    # `mlflow models serve` runs uvicorn as a child: signal the group, not only the leader.
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def api_server(
    models_dir: Path,
    port: int,
    state: Path,
    workers: int = 1,
    loop: str = "auto",
    prediction_log: str | None = None,
) -> AbstractContextManager[int]:
    """The API on `port`; it logs predictions to `prediction_log` (default: SQLite in `state`)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "FRAUD_MODELS_DIR": str(models_dir),
        "FRAUD_MODEL_URI": "",  # serve the bundle of the model store, not MLflow
        "FRAUD_API_RELOAD_INTERVAL_S": "0",
        # Never the project's own predictions.db: the benchmark's requests are not predictions.
        "FRAUD_PREDICTION_LOG_URL": prediction_log or f"sqlite:///{state / 'predictions.db'}",
    }
    argv = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--workers", str(workers), "--no-access-log"]
    argv += ["--loop", loop, "--log-level", "warning"]
    tag = "" if prediction_log is None else ("-log-off" if prediction_log == "off" else "-log-on")
    log = state / f"api-{workers}w-{loop}{tag}.log"
    return server("the API", argv, env, f"http://127.0.0.1:{port}/ready", log)


def mlflow_server(tracking_uri: str, port: int, state: Path) -> AbstractContextManager[int]:
    mlflow = Path(sys.executable).parent / "mlflow"
    env = {
        **os.environ,
        # `mlflow models serve` execs `uvicorn` by name: the virtualenv must come first.
        "PATH": os.pathsep.join([str(mlflow.parent), os.environ.get("PATH", "")]),
        "MLFLOW_TRACKING_URI": tracking_uri,
        # The same logging as the API's (uvicorn reads UVICORN_* for its command-line options).
        "UVICORN_ACCESS_LOG": "false",
        "UVICORN_LOG_LEVEL": "warning",
    }
    argv = [str(mlflow), "models", "serve", "-m", MODEL_URI, "--env-manager", "local"]
    argv += ["-h", "127.0.0.1", "-p", str(port), "--workers", "1", "--timeout", "60"]
    return server(
        "mlflow models serve", argv, env, f"http://127.0.0.1:{port}/ping", log=state / "mlflow.log"
    )


# -- requests -----------------------------------------------------------------------------------
def api_body(row: np.ndarray) -> str:
    return json.dumps(dict(zip(FEATURE_COLUMNS, row.tolist(), strict=True)))


def api_batch_body(rows: np.ndarray) -> str:
    return json.dumps([dict(zip(FEATURE_COLUMNS, r, strict=True)) for r in rows.tolist()])


def mlflow_body(rows: np.ndarray) -> str:
    return json.dumps(
        {"dataframe_split": {"columns": list(FEATURE_COLUMNS), "data": rows.tolist()}}
    )


def same_model(api: str, mlflow: str, rows: np.ndarray, model: FraudModel) -> float:
    """Largest difference between the two servers (and the bundle) over `rows`; exit if > 1e-6."""
    headers = {"Content-Type": "application/json"}
    with httpx.Client(timeout=30.0) as client:
        single_api = [
            client.post(f"{api}/predict", content=api_body(r), headers=headers).json()
            for r in rows[:5]
        ]
        single_mlflow = [
            client.post(
                f"{mlflow}/invocations", content=mlflow_body(r[None]), headers=headers
            ).json()["predictions"][0]
            for r in rows[:5]
        ]
        batch_api = client.post(
            f"{api}/predict/batch", content=api_batch_body(rows), headers=headers
        )
        batch_mlflow = client.post(
            f"{mlflow}/invocations", content=mlflow_body(rows), headers=headers
        )
    for response in (batch_api, batch_mlflow):
        if response.status_code != 200:
            raise SystemExit(
                f"{response.url} answered {response.status_code}: {response.text[:500]}"
            )
    api_p = np.array([r["fraud_probability"] for r in batch_api.json()["results"]])
    mlflow_p = np.asarray(batch_mlflow.json()["predictions"], dtype=np.float64)
    local = model.predict_proba(rows)
    single_diff = np.abs(
        np.array([r["fraud_probability"] for r in single_api]) - np.array(single_mlflow)
    )
    diff = float(
        max(np.abs(api_p - mlflow_p).max(), np.abs(api_p - local).max(), single_diff.max())
    )
    print(
        f"same model: {len(rows)} transactions (probabilities {api_p.min():.2g} to "
        f"{api_p.max():.2g}), largest difference API / MLflow / bundle {diff:.1e}"
    )
    if diff > 1e-6:
        raise SystemExit("the API and MLflow do not serve the same model (difference > 1e-6)")
    return diff


def wrk(
    url: str, bodies: list[str], concurrency: int, duration: int, state: Path, pgid: int
) -> dict[str, Any]:
    """One wrk run at `concurrency` (after a short warm-up); its numbers and the server's CPU."""
    threads, connections = LOADS[concurrency]
    lua = "\n".join(f"  [==[{body}]==]," for body in bodies)
    script = state / f"post-{abs(hash(url))}.lua"
    script.write_text(WRK_LUA % {"bodies": lua})
    # wrk counts an answer slower than 2 s as an error; on a busy shared machine c=32 gets there.
    base = ["wrk", f"-t{threads}", f"-c{connections}", "-s", str(script), "--latency"]
    base += ["--timeout", "10s", url]
    subprocess.run([*base, f"-d{WARMUP_S}s"], capture_output=True, text=True, check=True)
    cpu = group_cpu_seconds(pgid)
    proc = subprocess.run([*base, f"-d{duration}s"], capture_output=True, text=True, check=True)
    cpu = group_cpu_seconds(pgid) - cpu
    line = next((x for x in proc.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no summary:\n{proc.stdout}{proc.stderr}")
    out: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    if out["errors"] or out["non_2xx"]:
        raise SystemExit(f"wrk against {url}: {out['errors']} errors, {out['non_2xx']} non-2xx")
    out["rps"] = out["requests"] / (out["duration_us"] / 1e6)
    out["cpu_s"] = cpu
    out["cpu_ms_per_request"] = cpu * 1e3 / out["requests"]
    out["output"] = proc.stdout
    return out


def batch_timing(url: str, body: str, n: int = 50) -> tuple[float, float]:
    """p50 and p99 (ms) of `n` sequential requests with one pre-encoded body, on one connection."""
    headers = {"Content-Type": "application/json"}
    seconds = []
    with httpx.Client(timeout=30.0) as client:
        for i in range(n + 3):  # the first three warm up the connection and the server
            start = time.perf_counter()
            response = client.post(url, content=body, headers=headers)
            response.read()
            elapsed = time.perf_counter() - start
            if response.status_code != 200:
                raise SystemExit(f"{url} answered {response.status_code}: {response.text[:500]}")
            if i >= 3:
                seconds.append(elapsed)
    return percentiles(seconds)


# -- report -------------------------------------------------------------------------------------
def print_report(
    floor: dict[str, float],
    loads: list[Load],
    batch: dict[str, tuple[float, float]],
    info: dict[str, Any],
) -> bool:
    print(
        f"\nmodel: {info['model']}\nservers: {info['stack']}\n"
        f"duration: {info['duration']}s per wrk run "
        f"(+{WARMUP_S}s warm-up), rounds: {info['rounds']} (median shown)   "
        f"python: {sys.version.split()[0]}"
    )
    width = max(len(x.server) for x in loads) + 2
    print(f"\n{'server':<{width}}| concurrency |    req/s | p50 ms | p99 ms | CPU ms/req")
    print(f"{'-' * width}|{'-' * 13}|{'-' * 10}|{'-' * 8}|{'-' * 8}|{'-' * 11}")
    for x in loads:
        print(
            f"{x.server:<{width}}| {x.concurrency:>11} | {x.rps:>8.0f} | "
            f"{x.p50_ms:>6.2f} | {x.p99_ms:>6.2f} | {x.cpu_ms:>10.2f}"
        )
    print(
        f"\nin-process floor (FraudModel.predict_proba): one row p50 {floor['one_p50_ms']:.3f} ms, "
        f"p99 {floor['one_p99_ms']:.3f} ms; {BATCH_ROWS:,} rows p50 {floor['batch_p50_ms']:.1f} "
        f"ms, p99 {floor['batch_p99_ms']:.1f} ms"
    )
    for name, (p50, p99) in batch.items():
        print(f"batch of {BATCH_ROWS:,} through {name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    cell = {(x.server, x.concurrency): x for x in loads}
    api32, mlflow32 = cell[("API /predict", 32)], cell[("MLflow /invocations", 32)]
    ratio = api32.rps / mlflow32.rps
    p99_c1 = cell[("API /predict", 1)].p99_ms
    batch_p50 = batch["API /predict/batch"][0]
    print(
        f"\nthroughput API / MLflow at concurrency 32: {ratio:.1f}x "
        f"(server CPU per request: {mlflow32.cpu_ms / api32.cpu_ms:.1f}x less for the API)"
    )
    checks = [
        (f"API >= {MIN_RATIO:.0f}x MLflow's req/s at c=32", ratio >= MIN_RATIO, f"{ratio:.1f}x"),
        (f"API p99 at c=1 < {MAX_P99_C1_MS:.0f} ms", p99_c1 < MAX_P99_C1_MS, f"{p99_c1:.2f} ms"),
        (
            f"batch of {BATCH_ROWS:,} p50 < {MAX_BATCH_MS:.0f} ms",
            batch_p50 < MAX_BATCH_MS,
            f"{batch_p50:.1f} ms",
        ),
    ]
    width = max(len(name) for name, _, _ in checks)
    for name, ok, value in checks:
        print(f"target {name:<{width}}: {'PASS' if ok else 'FAIL'} ({value})")
    return all(ok for _, ok, _ in checks)


# -- the prediction log on and off -------------------------------------------------------------
LOG_ON, LOG_OFF = "API /predict, log on", "API /predict, log off"


def log_counters(url: str) -> dict[str, float]:
    """Predictions scored, and the prediction log's written / dropped / queued, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    names = {
        "fraud_api_predictions_total": "scored",
        "fraud_api_prediction_log_written_total": "written",
        "fraud_api_prediction_log_dropped_total": "dropped",
        "fraud_api_prediction_log_queue_depth": "queued",
    }
    out = dict.fromkeys(names.values(), 0.0)
    text = httpx.get(f"{url}/metrics", timeout=10.0).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                out[names[sample.name]] += sample.value
    return out


def logged_rows(log_url: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(log_url)
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM predictions").scalar_one())
    finally:
        engine.dispose()


def compare_prediction_log(
    models_dir: Path, state: Path, log_url: str, singles: np.ndarray, batch: np.ndarray, args: Any
) -> bool:
    """The API with the prediction log on and off, measured alike in turns; True if on target."""
    on_port, off_port = free_port(), free_port()
    urls = {LOG_ON: f"http://127.0.0.1:{on_port}", LOG_OFF: f"http://127.0.0.1:{off_port}"}
    bodies = [api_body(r) for r in singles]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with (
        api_server(models_dir, on_port, state, prediction_log=log_url) as on_group,
        api_server(models_dir, off_port, state, prediction_log="off") as off_group,
    ):
        groups = {LOG_ON: on_group, LOG_OFF: off_group}
        for i in range(args.rounds):
            for concurrency in LOADS:
                order = [LOG_ON, LOG_OFF] if i % 2 == 0 else [LOG_OFF, LOG_ON]
                for name in order:
                    url = f"{urls[name]}/predict"
                    run = wrk(url, bodies, concurrency, args.duration, state, groups[name])
                    runs.setdefault((name, concurrency), []).append(run)
                    print(
                        f"[{i + 1}/{args.rounds}] {name} c={concurrency}: {run['rps']:.0f} req/s, "
                        f"p50 {run['p50_us'] / 1e3:.2f} ms, p99 {run['p99_us'] / 1e3:.2f} ms"
                    )
        batches = {
            name.replace("/predict", "/predict/batch"): batch_timing(
                f"{url}/predict/batch", api_batch_body(batch)
            )
            for name, url in urls.items()
        }
        # Everything the log-on server scored must reach the database, once its queue drains.
        deadline = time.monotonic() + 60
        while True:
            counts = log_counters(urls[LOG_ON])
            if counts["written"] + counts["dropped"] >= counts["scored"]:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    rows = logged_rows(log_url)

    loads = [median_load(name, c, r) for (name, c), r in runs.items()]
    loads.sort(key=lambda x: (x.concurrency, x.server))
    width = max(len(x.server) for x in loads) + 2
    print(f"\nprediction log: {log_url}   duration {args.duration}s, rounds {args.rounds}")
    print(f"\n{'server':<{width}}| concurrency |    req/s | p50 ms | p99 ms | CPU ms/req")
    print(f"{'-' * width}|{'-' * 13}|{'-' * 10}|{'-' * 8}|{'-' * 8}|{'-' * 11}")
    for x in loads:
        print(
            f"{x.server:<{width}}| {x.concurrency:>11} | {x.rps:>8.0f} | "
            f"{x.p50_ms:>6.2f} | {x.p99_ms:>6.2f} | {x.cpu_ms:>10.3f}"
        )
    for name, (p50, p99) in batches.items():
        print(f"batch of {BATCH_ROWS:,} through {name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    cell = {(x.server, x.concurrency): x for x in loads}
    for concurrency in LOADS:
        on, off = cell[(LOG_ON, concurrency)], cell[(LOG_OFF, concurrency)]
        print(
            f"log on / log off at concurrency {concurrency}: {on.rps / off.rps:.3f} of the "
            f"requests/s, {on.cpu_ms / off.cpu_ms:.3f}x the server CPU per request"
        )
    print(
        f"log-on server: {counts['scored']:.0f} predictions, {counts['written']:.0f} written, "
        f"{counts['dropped']:.0f} dropped, {counts['queued']:.0f} still queued; "
        f"{rows} rows in the table"
    )
    ratio = cell[(LOG_ON, 32)].rps / cell[(LOG_OFF, 32)].rps
    checks = [
        (
            f"log on >= {1 - MAX_LOG_COST:.0%} of log off's req/s at c=32",
            ratio >= 1 - MAX_LOG_COST,
            f"{ratio:.1%}",
        ),
        (
            "every prediction logged (none dropped)",
            counts["dropped"] == 0 and rows == counts["scored"],
            f"{rows} of {counts['scored']:.0f}",
        ),
    ]
    for name, ok, value in checks:
        print(f"target {name}: {'PASS' if ok else 'FAIL'} ({value})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "log_url": log_url,
            "batch": batches,
            "counters": counts,
            "rows": rows,
            "wrk": {f"{name} c={c}": r for (name, c), r in runs.items()},
        }
        args.json.write_text(json.dumps(report, indent=2))
    return all(ok for _, ok, _ in checks)


def median_load(server_name: str, concurrency: int, runs: list[dict[str, Any]]) -> Load:
    return Load(
        server_name,
        concurrency,
        statistics.median(r["rps"] for r in runs),
        statistics.median(r["p50_us"] for r in runs) / 1e3,
        statistics.median(r["p99_us"] for r in runs) / 1e3,
        statistics.median(r["cpu_ms_per_request"] for r in runs),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=284_807, help="synthetic rows to train on (default 284,807)"
    )
    parser.add_argument(
        "--fraud-rate",
        type=float,
        help="synthetic fraud rate (default: the real 0.172 %%, raised for small --rows)",
    )
    parser.add_argument(
        "--models-dir", type=Path, help="reuse this model store (serves its production bundle)"
    )
    parser.add_argument(
        "--tracking-uri", help=f"with --models-dir: the MLflow store that has {MODEL_URI}"
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="wrk runs per server and concurrency (median shown)"
    )
    parser.add_argument(
        "--no-workers-check", action="store_true", help="skip the API with --workers 2 at c=1"
    )
    parser.add_argument(
        "--workers-loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="uvicorn's --loop for the --workers 2 check (asyncio shows the Nagle delay)",
    )
    parser.add_argument(
        "--prediction-log",
        nargs="?",
        const="sqlite",
        metavar="URL",
        help="compare the API with its prediction log on (SQLite in the temporary folder, or "
        "URL) and off, instead of with MLflow",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 when a target is missed"
    )
    args = parser.parse_args(argv)
    if args.tracking_uri is not None and args.models_dir is None:
        parser.error("--tracking-uri goes with --models-dir")
    if args.models_dir is not None and args.tracking_uri is None and args.prediction_log is None:
        parser.error("--models-dir needs --tracking-uri (MLflow serves the same model)")
    if args.rows < 1000:
        parser.error("--rows must be at least 1,000 (each split needs frauds to train on)")
    if args.rounds < 1 or args.duration < 1:
        parser.error("--rounds and --duration must be at least 1")
    if shutil.which("wrk") is None:
        raise SystemExit(f"wrk is not on the PATH: {INSTALL_WRK}")
    # A plain `kill` of the benchmark still runs the `finally` blocks that stop the servers.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    state = Path(tempfile.mkdtemp(prefix="fraud-serving-bench-"))
    try:
        if args.models_dir is not None:
            models_dir, tracking_uri = args.models_dir.resolve(), args.tracking_uri
        else:
            fraud_rate = args.fraud_rate or default_fraud_rate(args.rows)
            start = time.perf_counter()
            train_model(state, args.rows, fraud_rate)
            models_dir, tracking_uri = state / "models", f"sqlite:///{state / 'mlflow.db'}"
            print(
                f"trained on {args.rows:,} synthetic rows ({fraud_rate:.3%} fraud) "
                f"in {time.perf_counter() - start:.0f}s"
            )
        try:
            model = load_bundle(models_dir / "production", verify=True)
        except BundleError as exc:
            raise SystemExit(f"no model to serve: {exc}") from exc
        model.booster.set_param({"nthread": 1})  # as the API does (api/serving.py)
        trees, forest = model.booster.num_boosted_rounds(), model.anomaly.forest
        info: dict[str, Any] = {
            "model": f"{model.version}: XGBoost {trees} trees + IsolationForest "
            f"{forest.n_trees} trees (depth {forest.depth})"
            + ("" if args.models_dir else f", trained on {args.rows:,} synthetic rows"),
            "stack": server_stack(),
            "duration": args.duration,
            "rounds": args.rounds,
        }
        print(info["model"])

        data = transactions(2_000)
        singles = data[:100]
        batch = data[:BATCH_ROWS]
        floor = in_process_floor(model, singles, batch)
        print(
            f"in-process floor: one row p50 {floor['one_p50_ms']:.3f} ms, "
            f"batch p50 {floor['batch_p50_ms']:.1f} ms"
        )

        if args.prediction_log is not None:
            log_url = args.prediction_log
            if log_url == "sqlite":
                log_url = f"sqlite:///{state / 'predictions.db'}"
            ok = compare_prediction_log(models_dir, state, log_url, singles, batch, args)
            return 1 if args.check and not ok else 0

        api_port, mlflow_port = free_port(), free_port()
        api, mlflow = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{mlflow_port}"
        targets = {
            "API /predict": (f"{api}/predict", [api_body(r) for r in singles]),
            "MLflow /invocations": (
                f"{mlflow}/invocations",
                [mlflow_body(r[None]) for r in singles],
            ),
        }
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        with (
            api_server(models_dir, api_port, state) as api_group,
            mlflow_server(tracking_uri, mlflow_port, state) as mlflow_group,
        ):
            groups = {"API /predict": api_group, "MLflow /invocations": mlflow_group}
            same_model(api, mlflow, singles, model)
            for i in range(args.rounds):
                for concurrency in LOADS:
                    # Alternate who goes first, so that neither always follows the other.
                    order = list(targets) if i % 2 == 0 else list(targets)[::-1]
                    for name in order:
                        url, bodies = targets[name]
                        run = wrk(url, bodies, concurrency, args.duration, state, groups[name])
                        runs.setdefault((name, concurrency), []).append(run)
                        print(
                            f"[{i + 1}/{args.rounds}] {name} c={concurrency}: {run['rps']:.0f} "
                            f"req/s, p50 {run['p50_us'] / 1e3:.2f} ms, "
                            f"p99 {run['p99_us'] / 1e3:.2f} ms"
                        )
            batches = {
                "API /predict/batch": batch_timing(f"{api}/predict/batch", api_batch_body(batch)),
                "MLflow /invocations": batch_timing(f"{mlflow}/invocations", mlflow_body(batch)),
            }
        if not args.no_workers_check:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            with api_server(models_dir, port, state, workers=2, loop=args.workers_loop) as group:
                bodies = targets["API /predict"][1]
                run = wrk(f"{url}/predict", bodies, 1, args.duration, state, group)
            loop = "" if args.workers_loop == "auto" else f" --loop {args.workers_loop}"
            runs[(f"API /predict, --workers 2{loop}", 1)] = [run]
            print(f"API --workers 2 c=1: {run['rps']:.0f} req/s, p50 {run['p50_us'] / 1e3:.2f} ms")

        loads = [median_load(name, c, r) for (name, c), r in runs.items()]
        loads.sort(key=lambda x: (x.concurrency, x.server))
        ok = print_report(floor, loads, batches, info)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            report = {
                "info": info,
                "floor": floor,
                "batch": batches,
                "wrk": {f"{name} c={c}": r for (name, c), r in runs.items()},
            }
            args.json.write_text(json.dumps(report, indent=2))
    finally:
        if args.keep:
            print(f"\nkept {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
