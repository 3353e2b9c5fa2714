"""Load on the servers: request bodies, wrk runs, batch timings, and their medians."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from serving_servers import group_cpu_seconds

from fraud_core.bundle import FraudModel
from fraud_core.schema import FEATURE_COLUMNS

BATCH_ROWS = 1_000
#: wrk's threads and connections for each measured concurrency.
LOADS = {1: (1, 1), 32: (2, 32)}
WARMUP_S = 2

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
end"""
#: The end of a wrk script (formatted with `%` as it is): `done` prints the numbers as JSON.
WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d, '
    .. '"errors": %%d, "non_2xx": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect + e.read + e.write + e.timeout, e.status))
end
"""
WRK_LUA += WRK_DONE


@dataclass
class Load:
    server: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float  # the server's CPU time per request


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    p50, p99 = np.percentile(np.asarray(seconds) * 1e3, [50, 99])
    return float(p50), float(p99)


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
    out = wrk_summary(proc, url, cpu)
    out["cpu_s"] = cpu
    out["output"] = proc.stdout
    return out


def wrk_summary(proc: subprocess.CompletedProcess[str], url: str, cpu_s: float) -> dict[str, Any]:
    """The summary our wrk script prints, with req/s and the servers' CPU per request added;
    exits on errors or non-2xx answers."""
    line = next((x for x in proc.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no summary:\n{proc.stdout}{proc.stderr}")
    out: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    if out["errors"] or out["non_2xx"]:
        raise SystemExit(f"wrk against {url}: {out['errors']} errors, {out['non_2xx']} non-2xx")
    out["rps"] = out["requests"] / (out["duration_us"] / 1e6)
    out["cpu_ms_per_request"] = cpu_s * 1e3 / out["requests"]
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


def median_load(server_name: str, concurrency: int, runs: list[dict[str, Any]]) -> Load:
    return Load(
        server_name,
        concurrency,
        statistics.median(r["rps"] for r in runs),
        statistics.median(r["p50_us"] for r in runs) / 1e3,
        statistics.median(r["p99_us"] for r in runs) / 1e3,
        statistics.median(r["cpu_ms_per_request"] for r in runs),
    )
