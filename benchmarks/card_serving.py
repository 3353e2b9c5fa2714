"""How fast `/transactions/score` serves with its feature state in Redis, beside `/predict`.

    python benchmarks/card_serving.py [--days 60] [--duration 10] [--rounds 2] [--redis URL]

Needs `wrk` (`apt-get install wrk`) and a Redis server (default redis://127.0.0.1:6379/0; the
run's keys live under a prefix of its own and are deleted after).

Trains two models of the same shape (untimed; an IsolationForest of 100 trees and XGBoost of 200
trees, depth 6): a card model on the Handbook-sized synthetic card set (5,000 customers, 10,000
terminals, `--days` days) and a Kaggle model on synthetic Kaggle rows. Then, in one run, two
uvicorn servers with the same settings (one worker, the prediction log on SQLite):

- the card API with `FRAUD_FEATURE_STATE=redis://…`, its state loaded with the bundle's history
  (the data's last 67 days);
- the Kaggle API, as `benchmarks/serving.py` drives it.

wrk drives each at concurrency 1 and 32, the servers alternating. Every card request is a new
transaction (a unique id, a time moving forward, a customer and a terminal drawn from the data's),
so each one runs the whole path: validation, one Lua call in Redis, the model, the log. Prints
the table and the targets: `/transactions/score` p99 <= 3 ms at c=1, and at c=32 at least 70 %
of `/predict`'s requests/s. Also the in-process floor: the Redis state's score call, alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import redis  # noqa: E402
import xgboost as xgb  # noqa: E402
from serving_load import (  # noqa: E402
    LOADS,
    WARMUP_S,
    WRK_DONE,
    api_body,
    median_load,
    percentiles,
    wrk,
    wrk_summary,
)
from serving_model import transactions  # noqa: E402
from serving_report import print_loads  # noqa: E402
from serving_servers import group_cpu_seconds, server, server_stack  # noqa: E402

from fraud_core import synthetic  # noqa: E402
from fraud_core.bundle import FraudModel  # noqa: E402
from fraud_core.cards import synthetic as cards_synthetic  # noqa: E402
from fraud_core.cards.definition import DEFAULT  # noqa: E402
from fraud_core.cards.features import feature_matrix  # noqa: E402
from fraud_core.cards.redis_state import RedisState  # noqa: E402
from fraud_core.cards.state import HISTORY_COLUMNS, CardTransaction  # noqa: E402
from fraud_core.contracts import CARDS  # noqa: E402
from fraud_core.data import as_arrays  # noqa: E402
from fraud_core.features import AnomalyScorer, base_features, model_features  # noqa: E402
from fraud_core.store import ModelStore  # noqa: E402
from servicectl.process import free_port  # noqa: E402

MAX_P99_C1_MS = 3.0
MIN_SHARE = 0.70
CARDS_NAME, KAGGLE_NAME = "API /transactions/score", "API /predict"

#: wrk script: each request a new card transaction; `done` prints the numbers as one JSON line.
CARD_LUA = """
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
function init(args)
  math.randomseed(%(seed)d + tid)
end
function request()
  n = n + 1
  local body = string.format(
    '{"transaction_id":"%(tag)s-%%d-%%d","tx_datetime":"%%s","customer_id":"%%d",'
    .. '"terminal_id":"%%d","amount":%%.2f}',
    tid, n, os.date("!%%Y-%%m-%%dT%%H:%%M:%%SZ", %(base)d + n),
    math.random(0, %(customers)d - 1), math.random(0, %(terminals)d - 1),
    math.random() * 120)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end"""
CARD_LUA += WRK_DONE


def fit(x: np.ndarray, base: np.ndarray, y: np.ndarray) -> tuple[AnomalyScorer, xgb.Booster]:
    """The same shape of model for both contracts: 100-tree forest, 200 trees of depth 6."""
    anomaly = AnomalyScorer.fit(base, n_estimators=100, seed=0)
    classifier = xgb.XGBClassifier(n_estimators=200, max_depth=6, learning_rate=0.1, n_jobs=2)
    classifier.fit(model_features(base, anomaly.score(base)), y)
    return anomaly, classifier.get_booster()


def publish(model: FraudModel, root: Path, version: str) -> Path:
    store = ModelStore(root)
    store.publish(store.stage(model, {"model_version": version}))
    return root


def train(state: Path, days: int) -> tuple[Path, Path, dict[str, Any]]:
    """A card and a Kaggle model store under `state`, and what the card data looked like."""
    frame = cards_synthetic.generate(n_customers=5000, n_terminals=10000, n_days=days, seed=0)
    x = feature_matrix(frame, DEFAULT)
    anomaly, booster = fit(x, x, frame["is_fraud"].to_numpy())
    end = int(frame["tx_us"].max())
    history = frame[frame["tx_us"] > end - DEFAULT.retention_us][list(HISTORY_COLUMNS)]
    cards = FraudModel(
        anomaly,
        booster,
        0.5,
        contract=CARDS,
        feature_definition=DEFAULT,
        history_frame=history.reset_index(drop=True),
    )
    raw, y = as_arrays(synthetic.generate(n_rows=len(frame) // 2, fraud_rate=0.01, seed=0))
    base = base_features(raw)
    kaggle = FraudModel(*fit(raw, base, y), 0.5)
    info = {"card_rows": len(frame), "history_rows": len(history), "end_us": end}
    return (
        publish(cards, state / "cards", "bench-cards"),
        publish(kaggle, state / "kaggle", "bench-kaggle"),
        info,
    )


def api(models_dir: Path, port: int, state: Path, name: str, extra: dict[str, str]) -> Any:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")},
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "FRAUD_MODELS_DIR": str(models_dir),
        "FRAUD_API_RELOAD_INTERVAL_S": "0",
        "FRAUD_PREDICTION_LOG_URL": f"sqlite:///{state / f'{name}.db'}",
        # One wrk address would pass the per-client limit: a benchmark measures serving, not limits.
        "FRAUD_API_RATE_LIMIT_SCORE": "off",
        **extra,
    }
    argv = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--workers", "1", "--no-access-log", "--log-level", "warning"]
    # Loading the history into Redis takes a while at this size.
    return server(name, argv, env, f"http://127.0.0.1:{port}/ready", state / f"{name}.log", 600)


def wrk_cards(
    url: str, concurrency: int, duration: int, state: Path, pgid: int, base_s: int
) -> dict[str, Any]:
    """`serving_load.wrk`, with a new transaction per request (the warm-up's its own too)."""
    import subprocess

    threads, connections = LOADS[concurrency]

    def script(tag: str, base: int) -> Path:
        path = state / f"cards-{tag}.lua"
        values = {"tag": tag, "base": base, "seed": base, "customers": 5000, "terminals": 10000}
        path.write_text(CARD_LUA % values)
        return path

    def run(seconds: int, tag: str, base: int) -> subprocess.CompletedProcess[str]:
        argv = ["wrk", f"-t{threads}", f"-c{connections}", "-s", str(script(tag, base))]
        argv += ["--latency", "--timeout", "10s", f"-d{seconds}s", url]
        return subprocess.run(argv, capture_output=True, text=True, check=True)

    run(WARMUP_S, uuid.uuid4().hex[:8], base_s)
    cpu = group_cpu_seconds(pgid)
    proc = run(duration, uuid.uuid4().hex[:8], base_s + 3_600)
    return wrk_summary(proc, url, group_cpu_seconds(pgid) - cpu)


def state_floor(redis_url: str, prefix: str, end_us: int, n: int = 3_000) -> tuple[float, float]:
    """p50 and p99 (ms) of the Redis state's `score` alone, on the server's own state."""
    state = RedisState.from_url(redis_url, DEFAULT, prefix=prefix)
    rng = np.random.default_rng(1)
    seconds = []
    try:
        for i in range(n):
            tx = CardTransaction(
                f"floor-{i}",
                end_us + 40 * 86_400_000_000 + i * 1_000_000,
                str(rng.integers(5000)),
                str(rng.integers(10000)),
                float(rng.uniform(0, 120)),
            )
            start = time.perf_counter()
            state.score(tx)
            seconds.append(time.perf_counter() - start)
    finally:
        state.close()
    return percentiles(seconds[100:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=60, help="days of card data (default 60)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="wrk runs per server and load")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="the Redis to use")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on the PATH: apt-get install wrk (or brew install wrk)")
    redis.Redis.from_url(args.redis, socket_connect_timeout=3).ping()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    state = Path(tempfile.mkdtemp(prefix="fraud-card-bench-"))
    prefix = f"bench-{uuid.uuid4().hex[:12]}"
    try:
        start = time.perf_counter()
        cards_dir, kaggle_dir, data = train(state, args.days)
        print(
            f"trained on {data['card_rows']:,} card transactions in "
            f"{time.perf_counter() - start:.0f}s; the state starts from {data['history_rows']:,}"
        )
        ports = {CARDS_NAME: free_port(), KAGGLE_NAME: free_port()}
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        kaggle_bodies = [api_body(r) for r in transactions(2_000)[:100]]
        base_s = data["end_us"] // 1_000_000 + 3_600
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        extra = {"FRAUD_FEATURE_STATE": args.redis, "FRAUD_FEATURE_STATE_PREFIX": prefix}
        started = time.perf_counter()
        with (
            api(cards_dir, ports[CARDS_NAME], state, "cards", extra) as cards_group,
            api(kaggle_dir, ports[KAGGLE_NAME], state, "kaggle", {}) as kaggle_group,
        ):
            print(f"servers ready in {time.perf_counter() - started:.0f}s")
            groups = {CARDS_NAME: cards_group, KAGGLE_NAME: kaggle_group}
            for i in range(args.rounds):
                for concurrency in LOADS:
                    order = [CARDS_NAME, KAGGLE_NAME][:: 1 if i % 2 == 0 else -1]
                    for name in order:
                        if name == CARDS_NAME:
                            base_s += 86_400  # each run's transactions a day after the last's
                            url = f"{urls[name]}/transactions/score"
                            run = wrk_cards(
                                url, concurrency, args.duration, state, groups[name], base_s
                            )
                        else:
                            url = f"{urls[name]}/predict"
                            run = wrk(
                                url, kaggle_bodies, concurrency, args.duration, state, groups[name]
                            )
                            run.pop("output", None)
                        runs.setdefault((name, concurrency), []).append(run)
                        print(
                            f"[{i + 1}/{args.rounds}] {name} c={concurrency}: {run['rps']:.0f} "
                            f"req/s, p50 {run['p50_us'] / 1e3:.2f} ms, "
                            f"p99 {run['p99_us'] / 1e3:.2f} ms"
                        )
            floor = state_floor(args.redis, prefix, data["end_us"])
        return report(runs, floor, data, args)
    finally:
        client = redis.Redis.from_url(args.redis)
        keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
        for i in range(0, len(keys), 1000):
            client.unlink(*keys[i : i + 1000])
        shutil.rmtree(state, ignore_errors=True)


def report(
    runs: dict[tuple[str, int], list[dict[str, Any]]],
    floor: tuple[float, float],
    data: dict[str, Any],
    args: argparse.Namespace,
) -> int:
    loads = sorted(
        (median_load(name, c, r) for (name, c), r in runs.items()),
        key=lambda x: (x.concurrency, x.server),
    )
    print(
        f"\nservers: {server_stack()}, one worker each, prediction log on SQLite\n"
        f"card state: Redis {args.redis}, {data['history_rows']:,} transactions loaded\n"
        f"duration: {args.duration}s per wrk run (+{WARMUP_S}s warm-up), rounds: {args.rounds}"
    )
    print_loads(loads)
    print(f"\nRedis state's score call alone: p50 {floor[0]:.3f} ms, p99 {floor[1]:.3f} ms")
    cell = {(x.server, x.concurrency): x for x in loads}
    share = cell[(CARDS_NAME, 32)].rps / cell[(KAGGLE_NAME, 32)].rps
    p99 = cell[(CARDS_NAME, 1)].p99_ms
    print(f"/transactions/score / /predict requests/s at c=32: {share:.2f}")
    checks = [
        (
            f"/transactions/score p99 at c=1 <= {MAX_P99_C1_MS:.0f} ms",
            p99 <= MAX_P99_C1_MS,
            f"{p99:.2f} ms",
        ),
        (
            f"/transactions/score >= {MIN_SHARE:.0%} of /predict's req/s at c=32",
            share >= MIN_SHARE,
            f"{share:.0%}",
        ),
    ]
    for name, ok, value in checks:
        print(f"target {name}: {'PASS' if ok else 'FAIL'} ({value})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "data": data,
                    "floor_ms": floor,
                    "wrk": {f"{n} c={c}": r for (n, c), r in runs.items()},
                },
                indent=2,
            )
        )
    ok = all(passed for _, passed, _ in checks)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
