"""The online feature state at the Handbook's size: latency, parity replay, history load, memory.

    python benchmarks/card_state.py [--customers 5000] [--terminals 10000] [--days 183]
                                    [--seed 0] [--redis-url redis://127.0.0.1:6379/0]
                                    [--redis-rows 100000] [--no-redis] [--latency-rows 100000]
                                    [--replicas 3] [--json PATH]

On the synthetic card set (`fraud_core.cards.synthetic.generate`, about 1.75 M transactions at
the default size) it measures:

- the parity replay in process: every transaction in (time, id) order through `score`, its label
  sent by `label()` right after (a label known at once), timed; the features compared with the
  offline `compute_features` of the whole set (counts exactly, means and risks to 1e-9), and the
  p50 / p99 of one `score` (update + read) over the replay, after its first retention period;
- the same p50 / p99 on 100 k transactions after a loaded history, on three identical states in
  turn, with each transaction's fastest of the three: on a shared machine one run's tail is
  mostly other processes' pauses;
- the history load (`load_history`) of the first retention window (`retention_us`: what a
  model's bundle hands the API at start-up), in process and into Redis, and the memory of that
  state (`stats()["memory_bytes"]`; in process a `sys.getsizeof` estimate, cross-checked here by
  tracemalloc around the load) at the Handbook's size;
- Redis: a replay of `--redis-rows` transactions after that window, score + label, with the p50 /
  p99 of `score` and its rate, the features compared with the offline ones.

The Redis state lives under a prefix of its own, deleted at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fraud_core.cards import synthetic
from fraud_core.cards.definition import DEFAULT
from fraud_core.cards.features import compute_features
from fraud_core.cards.memory_state import InProcessState
from fraud_core.cards.redis_state import RedisState
from fraud_core.cards.state import CardTransaction, FeatureState

MB = 1024 * 1024


def transactions(frame: pd.DataFrame) -> list[CardTransaction]:
    return [
        CardTransaction(tid, t, c, m, a)
        for tid, t, c, m, a in zip(
            frame["transaction_id"].tolist(),
            frame["tx_us"].tolist(),
            frame["customer_id"].tolist(),
            frame["terminal_id"].tolist(),
            frame["amount"].tolist(),
            strict=True,
        )
    ]


def replay(
    state: FeatureState, txs: list[CardTransaction], labels: list[int]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Score each, its label right after; (features, seconds of each score, total seconds)."""
    out = np.empty((len(txs), len(state.definition.feature_names)))
    took = np.empty(len(txs))
    clock = time.perf_counter
    start = clock()
    for i, (tx, label) in enumerate(zip(txs, labels, strict=True)):
        t0 = clock()
        out[i] = state.score(tx).features
        took[i] = clock() - t0
        state.label(tx.transaction_id, bool(label))
    return out, took, clock() - start


def compare(got: np.ndarray, expected: pd.DataFrame) -> dict[str, Any]:
    """Counts and flags exactly; means and risks within 1e-9."""
    names = list(expected.columns)
    want = expected.to_numpy()
    approx = [i for i, n in enumerate(names) if "_AVG_AMOUNT_" in n or "_RISK_" in n]
    exact = [i for i in range(len(names)) if i not in approx]
    diff = np.abs(got - want)
    return {
        "rows": len(got),
        "exact_columns_equal": bool(np.array_equal(got[:, exact], want[:, exact])),
        "max_abs_diff_means_risks": float(diff[:, approx].max()) if len(got) else 0.0,
        "equal": bool(
            np.array_equal(got[:, exact], want[:, exact]) and (diff[:, approx] <= 1e-9).all()
        ),
    }


def latency(took: np.ndarray) -> dict[str, float]:
    p50, p99, p999 = np.percentile(took * 1e6, [50, 99, 99.9])
    return {"p50_us": float(p50), "p99_us": float(p99), "p99.9_us": float(p999)}


def load_in_process(history: pd.DataFrame) -> dict[str, Any]:
    """Timed once as it runs in the API, then again under tracemalloc for its memory."""
    state = InProcessState(DEFAULT)
    start = time.perf_counter()
    added = state.load_history(history)
    took = time.perf_counter() - start
    del state
    gc.collect()
    tracemalloc.start()
    state = InProcessState(DEFAULT)
    state.load_history(history)
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    start = time.perf_counter()
    stats = state.stats()
    stats_s = time.perf_counter() - start
    return {
        "rows": added,
        "load_s": round(took, 2),
        "stats": stats,
        "stats_ms": round(stats_s * 1e3, 2),
        "memory_mb": round(stats["memory_bytes"] / MB, 1),
        "tracemalloc_mb": round(traced / MB, 1),
    }


def in_process_latency(history: pd.DataFrame, after: pd.DataFrame, replicas: int) -> dict[str, Any]:
    """`score` + `label` after the history on `replicas` identical states, each transaction on
    each in turn: the p50 / p99 of one run as measured, and of each transaction's fastest run
    (what the code costs, without the pauses a busy shared machine adds)."""
    states = [InProcessState(DEFAULT) for _ in range(replicas)]
    for state in states:
        state.load_history(history)
    txs, labels = transactions(after), after["is_fraud"].tolist()
    took = np.empty((len(txs), replicas))
    clock = time.perf_counter
    for i, (tx, label) in enumerate(zip(txs, labels, strict=True)):
        for k, state in enumerate(states):
            t0 = clock()
            state.score(tx)
            took[i, k] = clock() - t0
            state.label(tx.transaction_id, bool(label))
    return {
        "rows": len(txs),
        "replicas": replicas,
        "one_run": latency(took[:, 0]),
        "fastest_of_replicas": latency(took.min(axis=1)),
    }


def redis_run(
    url: str, history: pd.DataFrame, after: pd.DataFrame, expected: pd.DataFrame
) -> dict[str, Any]:
    state = RedisState.from_url(url, DEFAULT, prefix=f"bench-{uuid.uuid4().hex}")
    try:
        start = time.perf_counter()
        added = state.load_history(history)
        load_s = time.perf_counter() - start
        loaded = state.stats()
        txs, labels = transactions(after), after["is_fraud"].tolist()
        got, took, total = replay(state, txs, labels)
        return {
            "history_rows": added,
            "load_s": round(load_s, 2),
            "memory_mb_after_load": round(loaded["memory_bytes"] / MB, 1),
            "stats_after_load": loaded,
            "replay_rows": len(txs),
            "replay_s": round(total, 2),
            "score_label_per_s": round(len(txs) / total),
            "score": latency(took),
            "parity": compare(got, expected),
            "stats_after_replay": state.stats(),
        }
    finally:
        state.clear()
        state.close()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--redis-rows", type=int, default=100_000)
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--latency-rows", type=int, default=100_000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    frame = synthetic.generate(args.customers, args.terminals, args.days, seed=args.seed)
    start = time.perf_counter()
    offline = compute_features(frame, DEFAULT)
    offline_s = time.perf_counter() - start
    window_end = int(frame["tx_us"].iloc[0]) + DEFAULT.retention_us
    in_window = (frame["tx_us"] <= window_end).to_numpy()
    history = frame[in_window]
    result: dict[str, Any] = {
        "transactions": len(frame),
        "fraud_rate": round(float(frame["is_fraud"].mean()), 5),
        "offline_features_s": round(offline_s, 2),
        "retention_days": DEFAULT.retention_us / 86_400e6,
        "history_rows": len(history),
    }
    print(f"{len(frame):,} transactions; offline features {offline_s:.2f} s", flush=True)

    result["in_process_history"] = load_in_process(history)
    print("in process, history:", result["in_process_history"], flush=True)

    after = frame[~in_window].iloc[: args.latency_rows]
    result["in_process_latency"] = in_process_latency(history, after, args.replicas)
    print("in process, latency:", result["in_process_latency"], flush=True)

    state = InProcessState(DEFAULT)
    txs, labels = transactions(frame), frame["is_fraud"].tolist()
    got, took, total = replay(state, txs, labels)
    steady = took[in_window.sum() :]  # after the first retention period: a full state
    result["in_process_replay"] = {
        "rows": len(txs),
        "replay_s": round(total, 1),
        "score_label_per_s": round(len(txs) / total),
        "score": latency(steady),
        "parity": compare(got, offline),
        "stats_at_end": state.stats(),
    }
    del state, got
    print("in process, replay:", result["in_process_replay"], flush=True)

    if not args.no_redis:
        after = frame[~in_window].iloc[: args.redis_rows]
        result["redis"] = redis_run(args.redis_url, history, after, offline.loc[after.index])
        print("redis:", result["redis"], flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
