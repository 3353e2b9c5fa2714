"""Test AP and ROC AUC with and without the refit on train + validation, side by side in one run.

    python benchmarks/refit_quality.py [--rows 284807] [--data synthetic,drifting] [--json PATH]

For each data set it splits by time (60 / 20 / 20), fits the anomaly feature on train, trains and
selects the variants once (`fraud_core.training.select`: early stopping, the choice and the
threshold on validation), then finishes that one selection in each protocol and scores the test
split through each model's bundle path:

- `no refit`: the selected model, trained on the training split (`refit=False`);
- `refit best`: refit on train + validation for the best iteration's rounds;
- `refit scaled`: the same, rounds scaled by the rows ratio (the default);
- `refit, train forest`: `refit scaled` on the training split's IsolationForest (not refit).

Data sets: `synthetic` (`fraud_core.synthetic`, stationary) and `drifting`, a variant of it
whose frauds move along a second direction as time goes on (a new pattern growing, as real fraud
does), so the most recent rows before the test carry most of what the test looks like. (It is
not harder by AP: the growing pattern also separates the later frauds better.)

The threshold stays the one chosen on validation scores of the model trained on train; for each
model the table shows precision, recall and F1 on test at that threshold, and the best F1 any
threshold reaches on test, so a threshold the refit made stale would show as a gap.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fraud_core import synthetic
from fraud_core.data import as_arrays, split_by_time
from fraud_core.evaluate import ThresholdPolicy, confusion
from fraud_core.features import model_features
from fraud_core.train import TrainConfig, refit_rounds, refit_variant
from fraud_core.training import (
    finish,
    fit_anomaly,
    model_inputs,
    select,
)

#: The second fraud direction of `drifting`, in standard deviations at the end of the period.
DRIFT_DIRECTION = {"V1": -2.0, "V5": 1.5, "V6": -1.5, "V8": 1.5, "V13": -1.0, "V19": 1.0}
PROTOCOLS = ("no refit", "refit best", "refit scaled", "refit, train forest")


def drifting(frame: pd.DataFrame) -> pd.DataFrame:
    """The synthetic set with frauds drifting along `DRIFT_DIRECTION` in proportion to time."""
    out = frame.copy()
    fraud = out["Class"].to_numpy() == 1
    progress = (out["Time"] / out["Time"].max()).to_numpy()[fraud]
    for column, shift in DRIFT_DIRECTION.items():
        std = float(out.loc[~fraud, column].std())
        out.loc[fraud, column] += shift * std * progress
    return out


def at_threshold(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    cm = confusion(y, scores, threshold)
    precision = cm["tp"] / max(1, cm["tp"] + cm["fp"])
    recall = cm["tp"] / max(1, cm["tp"] + cm["fn"])
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    p, r, _ = precision_recall_curve(y, scores)
    best_f1 = float(np.max(np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=p + r > 0)))
    return {"precision": precision, "recall": recall, "f1": f1, "best_f1": best_f1}


def measure(name: str, frame: pd.DataFrame, config: TrainConfig) -> list[dict[str, Any]]:
    """Every protocol on one data set: test figures, training rows and rounds."""
    splits = split_by_time(frame)
    anomaly = fit_anomaly(splits, seed=config.seed)
    inputs = model_inputs(splits, anomaly)
    start = time.perf_counter()
    selection = select(inputs, anomaly, config, ThresholdPolicy())
    select_s = time.perf_counter() - start
    raw_test, y_test = as_arrays(splits.test)
    rows = []
    for protocol in PROTOCOLS:
        start = time.perf_counter()
        if protocol == "refit, train forest":
            x = np.vstack([inputs.x["train"], inputs.x["validation"]])
            y = np.concatenate([inputs.y["train"], inputs.y["validation"]])
            best = selection.result.best
            rounds = refit_rounds(best.best_iteration, len(inputs.y["train"]), len(y), "scaled")
            booster = refit_variant(best.name, x, y, config, rounds).booster
            scores = booster.inplace_predict(
                model_features(inputs.base["test"], anomaly.scores["test"])
            )
            training_rows = len(y)
        else:
            how = "scaled" if protocol == "no refit" else protocol.split()[-1]
            outcome = finish(
                selection,
                inputs,
                anomaly,
                TrainConfig(
                    **{**config.__dict__, "refit": protocol != "no refit", "refit_rounds": how}
                ),
            )
            scores = outcome.model.predict_proba(raw_test)
            rounds, training_rows = outcome.boosting_rounds, outcome.training_rows
        rows.append(
            {
                "data": name,
                "protocol": protocol,
                "variant": selection.result.chosen,
                "training_rows": training_rows,
                "rounds": rounds,
                "test_average_precision": float(average_precision_score(y_test, scores)),
                "test_roc_auc": float(roc_auc_score(y_test, scores)),
                "threshold": selection.threshold,
                **at_threshold(y_test, np.asarray(scores), selection.threshold),
                "seconds": time.perf_counter()
                - start
                + (select_s if protocol == "no refit" else 0),
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'data':<9} {'protocol':<20} {'variant':<16} {'rows':>8} {'rounds':>6} "
        f"{'test AP':>8} {'ROC AUC':>8} {'P@thr':>6} {'R@thr':>6} {'F1@thr':>6} {'bestF1':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['data']:<9} {r['protocol']:<20} {r['variant']:<16} {r['training_rows']:>8,} "
            f"{r['rounds']:>6} {r['test_average_precision']:>8.4f} {r['test_roc_auc']:>8.4f} "
            f"{r['precision']:>6.3f} {r['recall']:>6.3f} {r['f1']:>6.3f} {r['best_f1']:>6.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=synthetic.N_ROWS)
    parser.add_argument("--fraud-rate", type=float, default=synthetic.FRAUD_RATE)
    parser.add_argument("--seed", type=int, default=42, help="the synthetic data's seed")
    parser.add_argument("--data", default="synthetic,drifting", help="comma-separated data sets")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    base = synthetic.generate(n_rows=args.rows, fraud_rate=args.fraud_rate, seed=args.seed)
    frames = {"synthetic": base, "drifting": drifting(base)}
    rows: list[dict[str, Any]] = []
    for name in args.data.split(","):
        rows += measure(name, frames[name], TrainConfig())
        # Each data set takes minutes on a busy machine: say where it is.
        print(f"{name}: {json.dumps(rows[-len(PROTOCOLS) :])}", file=sys.stderr, flush=True)
    print(f"\nrows: {args.rows:,}, fraud rate {args.fraud_rate:.3%}, seed {args.seed}")
    print_table(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
