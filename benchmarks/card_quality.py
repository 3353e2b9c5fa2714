"""Test AP, ROC AUC and Card Precision@100 on the synthetic card set, beside the Handbook's XGBoost.

    python benchmarks/card_quality.py [--customers 5000] [--terminals 10000] [--days 183]
                                      [--seed 42] [--variants none,scale_pos_weight,smote]
                                      [--json PATH]

The protocol is what `make materialize` runs with FRAUD_DATA_CONTRACT=cards, through the same
`fraud_core` functions the assets call, stage by stage and timed:

1. the Handbook's simulator at its full size (5,000 customers, 10,000 terminals, 183 days);
2. the contract's checks (`fraud_core.cards.schema.problems`) and the canonical frame;
3. the 15 behavioural features on the whole history (`fraud_core.cards.features`);
4. the time split 60 / 20 / 20 by days, the 7-day label delay left out before validation and
   before test (`fraud_core.cards.splits`);
5. the IsolationForest on the training split, the three variants with early stopping on
   validation, the threshold, the refit on train + validation (`fraud_core.training`);
6. the test split scored through the bundle's path: AP, ROC AUC, Card Precision@100.

The Handbook's figures (chapter 3 / 5, XGBoost on its simulated data, one week of training and
one of test after a one-week delay) are printed beside ours: AUC 0.869, AP 0.687, CP@100 0.303.
Its protocol trains on far less history than ours; the figures are a reference, not a race on
the same rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fraud_core.cards import schema as card_schema
from fraud_core.cards.definition import DEFAULT
from fraud_core.cards.evaluate import card_precision_top_k
from fraud_core.cards.features import compute_features
from fraud_core.cards.splits import split_cards
from fraud_core.cards.synthetic import generate
from fraud_core.evaluate import ThresholdPolicy, metrics
from fraud_core.train import VARIANTS, TrainConfig
from fraud_core.training import fit_anomaly, fit_fraud_model, model_inputs

#: The Handbook's published XGBoost on its simulated data (AUC ROC, AP, CP@100).
HANDBOOK = {"roc_auc": 0.869, "average_precision": 0.687, "card_precision_top_100": 0.303}

T = TypeVar("T")


def timed(stages: dict[str, float], name: str, work: Callable[[], T]) -> T:
    start = time.perf_counter()
    out = work()
    stages[name] = time.perf_counter() - start
    print(f"  {name:<34} {stages[name]:8.2f} s", flush=True)
    return out


def run(customers: int, terminals: int, days: int, seed: int, variants: tuple[str, ...]) -> dict:
    stages: dict[str, float] = {}
    print(f"{customers} customers, {terminals} terminals, {days} days, seed {seed}")
    frame = timed(stages, "simulate", lambda: generate(customers, terminals, days, seed=seed))
    found = timed(stages, "checks (schema.problems)", lambda: card_schema.problems(frame))
    if found:
        raise SystemExit("; ".join(p.message for p in found))
    canonical = timed(stages, "canonical frame (conform)", lambda: card_schema.conform(frame))
    features = timed(stages, "15 features, whole history", lambda: compute_features(canonical))
    splits, plan = timed(
        stages, "split by days, delay gaps", lambda: split_cards(canonical, features, DEFAULT)
    )
    anomaly = timed(stages, "IsolationForest (train split)", lambda: fit_anomaly(splits))
    inputs = model_inputs(splits, anomaly)
    config = TrainConfig(variants=variants)
    outcome = timed(
        stages,
        f"{len(variants)} variants + refit",
        lambda: fit_fraud_model(inputs, anomaly, config, ThresholdPolicy()),
    )
    x_test, y_test = splits.arrays(splits.test)

    def evaluate() -> dict[str, float]:
        scores = outcome.model.predict_proba(x_test)
        figures = metrics(y_test, scores, outcome.threshold, ThresholdPolicy())
        figures["card_precision_top_100"] = card_precision_top_k(splits.test, scores, 100).mean
        return figures

    figures = timed(stages, "score test + metrics", evaluate)
    summary = splits.summary()
    return {
        "size": {"customers": customers, "terminals": terminals, "days": days, "seed": seed},
        "rows": len(canonical),
        "fraud_rate": float(canonical["is_fraud"].mean()),
        "periods": plan.describe(),
        "splits": summary,
        "chosen_variant": outcome.chosen,
        "validation_ap": {n: v.validation_ap for n, v in outcome.result.variants.items()},
        "test": {k: figures[k] for k in ("average_precision", "roc_auc", *HANDBOOK)},
        "stages_s": stages,
    }


def report(result: dict[str, Any]) -> None:
    print()
    print(f"{result['rows']:,} transactions, fraud rate {result['fraud_rate']:.4%}")
    for name, period in result["periods"].items():
        rows = result["splits"].get(name, {})
        extra = f"{rows['rows']:>9,} rows {rows['frauds']:>6,} frauds" if rows else ""
        print(f"  {name:<15} {period:<24} {extra}")
    print(
        f"chosen variant: {result['chosen_variant']} (validation AP "
        + ", ".join(f"{n} {v:.4f}" for n, v in result["validation_ap"].items())
        + ")"
    )
    print()
    print(f"{'test metric':<24} {'ours':>8} {'Handbook XGBoost':>18}")
    for key, book in HANDBOOK.items():
        print(f"{key:<24} {result['test'][key]:>8.3f} {book:>18.3f}")
    print()
    print(f"total {sum(result['stages_s'].values()):.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--terminals", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(
        args.customers, args.terminals, args.days, args.seed, tuple(args.variants.split(","))
    )
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
