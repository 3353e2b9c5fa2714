"""The API with its prediction log on and off, driven alike in turns (`--prediction-log`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from serving_load import (
    BATCH_ROWS,
    LOADS,
    api_batch_body,
    api_body,
    batch_timing,
    median_load,
    wrk,
)
from serving_report import print_loads
from serving_servers import api_server

from servicectl.process import free_port

#: The prediction log may cost at most this share of the API's throughput.
MAX_LOG_COST = 0.10
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
    print(f"\nprediction log: {log_url}   duration {args.duration}s, rounds {args.rounds}")
    print_loads(loads)
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
