"""The serving benchmark's report: the table, the in-process floor, and the targets."""

from __future__ import annotations

import sys
from typing import Any

from serving_load import BATCH_ROWS, WARMUP_S, Load

MIN_RATIO = 10.0
MAX_P99_C1_MS = 3.0
MAX_BATCH_MS = 50.0


def print_loads(loads: list[Load], cpu_decimals: int = 3) -> None:
    """The table of wrk runs: one row per server and concurrency."""
    width = max(len(x.server) for x in loads) + 2
    print(f"\n{'server':<{width}}| concurrency |    req/s | p50 ms | p99 ms | CPU ms/req")
    print(f"{'-' * width}|{'-' * 13}|{'-' * 10}|{'-' * 8}|{'-' * 8}|{'-' * 11}")
    for x in loads:
        print(
            f"{x.server:<{width}}| {x.concurrency:>11} | {x.rps:>8.0f} | "
            f"{x.p50_ms:>6.2f} | {x.p99_ms:>6.2f} | {x.cpu_ms:>10.{cpu_decimals}f}"
        )


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
    print_loads(loads, cpu_decimals=2)
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
