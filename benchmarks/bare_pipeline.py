"""The fraud pipeline as one plain script: what a user would write by hand with the same libraries.

It is the baseline of `materialize_vs_script.py`, so it does the platform's work and no more of it:
read the CSV, split it in time (60/20/20), fit an IsolationForest on the training rows and add its
score as a feature, train XGBoost three ways (no resampling, `scale_pos_weight`, SMOTE), keep the
best by validation average precision, then (unless `--no-refit`) fit the IsolationForest and the
chosen variant again on training + validation rows for the best iteration's rounds scaled by the
rows ratio, report test AP and ROC AUC (of the model trained on train as well, for comparison),
and save the model files. The parameters are the platform's defaults. No orchestration, no
tracking, no validation.

    python benchmarks/bare_pipeline.py data/raw/creditcard.csv /tmp/bare_models [--no-refit]

Each stage is timed, from the first import on; with `--json PATH` the timings, the peak resident
memory and the metrics are written there as well.
"""

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
from pathlib import Path  # noqa: E402

import joblib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xgboost as xgb  # noqa: E402
from imblearn.over_sampling import SMOTE  # noqa: E402
from imblearn.pipeline import Pipeline  # noqa: E402
from sklearn.ensemble import IsolationForest  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402

XGB_PARAMS = {
    "n_estimators": 300,
    "max_depth": 6,
    "learning_rate": 0.1,
    "subsample": 0.9,
    "colsample_bytree": 0.9,
    "min_child_weight": 1.0,
    "early_stopping_rounds": 30,
    "eval_metric": "aucpr",
    "tree_method": "hist",
    "random_state": 0,
}
PCA = [f"V{i}" for i in range(1, 29)]


def features(frame: pd.DataFrame) -> np.ndarray:
    """V1..V28, log amount and the hour of day on a circle (raw Time only grows)."""
    angle = (frame["Time"].to_numpy() % 86_400) * (2 * np.pi / 86_400)
    return np.column_stack(
        [frame[PCA].to_numpy(np.float64), np.log1p(frame["Amount"]), np.sin(angle), np.cos(angle)]
    )


def fit(name: str, x, y, eval_set=None, **params) -> xgb.XGBClassifier:
    """One variant fitted on (x, y); SMOTE resamples these rows only."""
    if name == "scale_pos_weight":
        params["scale_pos_weight"] = float((len(y) - y.sum()) / y.sum())
    model = xgb.XGBClassifier(**{**XGB_PARAMS, **params})
    kwargs = {"verbose": False} if eval_set is None else {"eval_set": eval_set, "verbose": False}
    if name == "smote":
        smote = SMOTE(sampling_strategy=0.1, k_neighbors=5, random_state=0)
        Pipeline([("smote", smote), ("xgb", model)]).fit(
            x, y, **{f"xgb__{k}": v for k, v in kwargs.items()}
        )
    else:
        model.fit(x, y, **kwargs)
    return model


def fit_variant(name: str, x_train, y_train, x_val, y_val) -> tuple[xgb.Booster, float, float]:
    """Train one variant with early stopping; return its truncated booster, AP and fit seconds."""
    start = time.perf_counter()
    model = fit(name, x_train, y_train, eval_set=[(x_val, y_val)])
    booster = model.get_booster()[: model.best_iteration + 1]
    ap = float(average_precision_score(y_val, booster.inplace_predict(x_val)))
    return booster, ap, time.perf_counter() - start


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--json", type=Path, help="write timings and metrics here")
    parser.add_argument(
        "--refit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="refit the chosen model on train + validation before the test (default: on)",
    )
    args = parser.parse_args()
    stages: dict[str, float] = {"imports": time.perf_counter() - _T0}
    mark = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        stages[stage] = now - mark
        mark = now

    frame = pd.read_csv(args.csv, engine="pyarrow")
    lap("load")

    frame = frame.sort_values("Time", kind="stable").reset_index(drop=True)
    train_end, val_end = round(len(frame) * 0.6), round(len(frame) * 0.8)
    parts = {
        "train": frame.iloc[:train_end],
        "validation": frame.iloc[train_end:val_end],
        "test": frame.iloc[val_end:],
    }
    y = {name: part["Class"].to_numpy(np.int8) for name, part in parts.items()}
    lap("split")

    base = {name: features(part) for name, part in parts.items()}
    forest = IsolationForest(n_estimators=100, random_state=0).fit(base["train"])
    x = {name: np.column_stack([b, -forest.score_samples(b)]) for name, b in base.items()}
    lap("anomaly")

    variants = {
        name: fit_variant(name, x["train"], y["train"], x["validation"], y["validation"])
        for name in ("none", "scale_pos_weight", "smote")
    }
    chosen = max(variants, key=lambda name: variants[name][1])
    selected = booster = variants[chosen][0]
    selected_forest = forest
    rounds = booster.num_boosted_rounds()
    refit_s = 0.0
    if args.refit:
        base_tv = np.vstack([base["train"], base["validation"]])
        y_tv = np.concatenate([y["train"], y["validation"]])
        forest = IsolationForest(n_estimators=100, random_state=0).fit(base_tv)
        rounds = round(rounds * len(y_tv) / len(y["train"]))
        x_tv = np.column_stack([base_tv, -forest.score_samples(base_tv)])
        start = time.perf_counter()
        model = fit(chosen, x_tv, y_tv, n_estimators=rounds, early_stopping_rounds=None)
        booster = model.get_booster()
        refit_s = time.perf_counter() - start
        x["test"] = np.column_stack([base["test"], -forest.score_samples(base["test"])])
    lap("train")

    test_scores = booster.inplace_predict(x["test"])
    metrics = {
        "test_average_precision": float(average_precision_score(y["test"], test_scores)),
        "test_roc_auc": float(roc_auc_score(y["test"], test_scores)),
        **{f"validation_ap_{name}": ap for name, (_, ap, _) in variants.items()},
    }
    if args.refit:
        # The model trained on train only, for the record: what no refit would have published.
        old = np.column_stack([base["test"], -selected_forest.score_samples(base["test"])])
        old_scores = selected.inplace_predict(old)
        metrics["no_refit_test_average_precision"] = float(
            average_precision_score(y["test"], old_scores)
        )
        metrics["no_refit_test_roc_auc"] = float(roc_auc_score(y["test"], old_scores))
    lap("evaluate")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    booster.save_model(args.out_dir / "classifier.ubj")
    joblib.dump(forest, args.out_dir / "anomaly.joblib")
    lap("save")

    # ru_maxrss is in KiB on Linux.
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "stages": stages,
        "total": time.perf_counter() - _T0,
        "xgboost_fits": sum(seconds for _, _, seconds in variants.values()) + refit_s,
        "peak_rss_mb": peak_mb,
        "rows": len(frame),
        "chosen": chosen,
        "refit": "train+validation" if args.refit else "off",
        "boosting_rounds": rounds,
        "metrics": metrics,
    }
    print(
        f"{len(frame):,} rows, chose {chosen}, refit {result['refit']}: "
        f"test AP {metrics['test_average_precision']:.4f}, "
        f"ROC AUC {metrics['test_roc_auc']:.4f}; "
        + ", ".join(f"{k} {v:.2f}s" for k, v in stages.items())
        + f"; peak {peak_mb:.0f} MB"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
