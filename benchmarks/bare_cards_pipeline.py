"""The card-transactions pipeline as one plain script: the baseline of `growth.py`.

It does the platform's work on the card contract and no more of it, with the same libraries and
the platform's defaults: read the Parquet file(s); check and conform the rows, compute the 15
behavioural features on the whole history and cut the delay-gapped time splits (by calling
`fraud_core.cards.schema.conform`, `fraud_core.cards.features.compute_features` and
`fraud_core.cards.splits.split_cards`, the same work the platform calls, as `bare_pipeline.py`
does with its own short version of the Kaggle steps); fit a 100-tree IsolationForest on the
training rows and add its score as a feature; train XGBoost three ways (`bare_pipeline.fit`: no
resampling, `scale_pos_weight`, SMOTE), keep the best by validation average precision; fit the
forest and the chosen variant again on training + validation rows for the best iteration's
rounds scaled by the rows ratio; report test AP and ROC AUC; save the classifier, the forest
and the history a served card model starts its state from. No orchestration, no tracking, no
asset checks, no plots, no bundle verification.

    python benchmarks/bare_cards_pipeline.py DATA (a .parquet file or a folder of them) OUT_DIR
    python benchmarks/bare_cards_pipeline.py DATA OUT_DIR --dask-workers 2
    python benchmarks/bare_cards_pipeline.py DATA OUT_DIR --window-days 28

With `--window-days N` the splits are cut from the N days (UTC) ending on the newest
transaction's day, as the platform's weekly `transaction_splits` cuts a week's model
(`FRAUD_TRAINING_WINDOW_DAYS`); the features are still computed on every day, and the served
state's history still comes from the retention before the newest transaction. The default is the
whole span of the data: every day, the same splits as without the option.

With `--dask-workers N` the heavy stages run on a `distributed.LocalCluster` of N worker
processes of one thread each, through the platform's Dask path as it is
(`fraud_core.scale`): the features by `compute_features_dask`, the anomaly feature by
`fit_anomaly_dask` (a forest fitted on a sample, scored on the workers), the three variants and
the refit by `fit_fraud_model_dask` (`xgboost.dask`); the test rows are scored through the
model's own path. The report then also holds each worker's peak resident memory.

Each stage is timed, from the first import on; with `--json PATH` the timings, the peak resident
memory and the metrics are written there as well.
"""

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import joblib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from bare_pipeline import fit, fit_variant  # noqa: E402
from sklearn.ensemble import IsolationForest  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402

from fraud_core.cards.definition import COLUMNS, DEFAULT, LABEL, TX_US, US_PER_DAY  # noqa: E402
from fraud_core.cards.features import compute_features  # noqa: E402
from fraud_core.cards.schema import conform  # noqa: E402
from fraud_core.cards.splits import split_cards  # noqa: E402
from fraud_core.data import Splits  # noqa: E402

#: The platform's defaults (fraud_assets/defs/constants.py): forest trees and seed, the splits.
FOREST_TREES, SEED = 100, 0
VALIDATION_FRACTION = TEST_FRACTION = 0.2
VARIANTS = ("none", "scale_pos_weight", "smote")
SMOTE_RATIO = 0.1  # bare_pipeline.fit's sampling_strategy


def read(data: Path) -> pd.DataFrame:
    """The contract's six columns of one Parquet file, or of every Parquet file of a folder."""
    files = sorted(data.glob("*.parquet")) if data.is_dir() else [data]
    if not files:
        raise SystemExit(f"{data}: no .parquet file")
    frames = [pd.read_parquet(path, columns=list(COLUMNS)) for path in files]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def window(
    frame: pd.DataFrame, features: pd.DataFrame, days: int | None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """The rows of the `days` days ending on the newest one, their features, and where the
    served state's history comes from (None: those rows, as when the window is every day)."""
    tx_us = frame[TX_US].to_numpy(np.int64)
    if days is None or len(tx_us) == 0:
        return frame, features, None
    newest = int(tx_us[-1]) // US_PER_DAY
    lo = int(np.searchsorted(tx_us, (newest - days + 1) * US_PER_DAY))
    if lo == 0:
        return frame, features, None
    # split_cards keeps the history of the retention before the newest transaction from it.
    return frame.iloc[lo:], features.iloc[lo:], frame


def forest_scores(forest: IsolationForest, x: np.ndarray) -> np.ndarray:
    """The anomaly feature: higher for more anomalous rows."""
    return np.asarray(-forest.score_samples(x))


def as_fitted(name: str, y: np.ndarray) -> str:
    """The variant to fit: SMOTE only where frauds are below its ratio (else it could only
    remove rows, and refuses), as the platform trains it (`fraud_core.train`)."""
    frauds = int(y.sum())
    return "none" if name == "smote" and frauds >= (len(y) - frauds) * SMOTE_RATIO else name


def model_local(splits: Splits, lap: Callable[[str], None]) -> dict[str, Any]:
    """Forest, three variants, refit, test metrics in this process; what to save and report."""
    names = list(DEFAULT.feature_names)
    base = {name: part[names].to_numpy(np.float64) for name, part in splits.items()}
    y = {name: part[LABEL].to_numpy(np.int8) for name, part in splits.items()}
    forest = IsolationForest(n_estimators=FOREST_TREES, random_state=SEED).fit(base["train"])
    x = {name: np.column_stack([b, forest_scores(forest, b)]) for name, b in base.items()}
    lap("anomaly")

    variants = {
        name: fit_variant(
            as_fitted(name, y["train"]), x["train"], y["train"], x["validation"], y["validation"]
        )
        for name in VARIANTS
    }
    chosen = max(variants, key=lambda name: variants[name][1])
    booster = variants[chosen][0]
    base_tv = np.vstack([base["train"], base["validation"]])
    y_tv = np.concatenate([y["train"], y["validation"]])
    forest = IsolationForest(n_estimators=FOREST_TREES, random_state=SEED).fit(base_tv)
    rounds = round(booster.num_boosted_rounds() * len(y_tv) / len(y["train"]))
    x_tv = np.column_stack([base_tv, forest_scores(forest, base_tv)])
    start = time.perf_counter()
    model = fit(
        as_fitted(chosen, y_tv), x_tv, y_tv, n_estimators=rounds, early_stopping_rounds=None
    )
    booster = model.get_booster()
    refit_s = time.perf_counter() - start
    del base_tv, x_tv
    lap("train")

    x_test = np.column_stack([base["test"], forest_scores(forest, base["test"])])
    scores = booster.inplace_predict(x_test)
    return {
        "booster": booster,
        "forest": forest,
        "scores": scores,
        "y_test": y["test"],
        "chosen": chosen,
        "boosting_rounds": rounds,
        "xgboost_fits": sum(seconds for _, _, seconds in variants.values()) + refit_s,
        "validation_ap": {name: ap for name, (_, ap, _) in variants.items()},
    }


def model_dask(splits: Splits, client: Any, lap: Callable[[str], None]) -> dict[str, Any]:
    """The same stages through `fraud_core.scale` on the cluster of `client`."""
    from fraud_core.evaluate import ThresholdPolicy
    from fraud_core.scale.anomaly import fit_anomaly_dask
    from fraud_core.scale.protocol import fit_fraud_model_dask
    from fraud_core.train import TrainConfig
    from fraud_core.training import model_inputs

    anomaly = fit_anomaly_dask(client, splits, n_estimators=FOREST_TREES, seed=SEED)
    inputs = model_inputs(splits, anomaly)
    lap("anomaly")
    outcome = fit_fraud_model_dask(client, inputs, anomaly, TrainConfig(), ThresholdPolicy())
    lap("train")
    model = outcome.model
    scores = model.predict_proba(splits.arrays(splits.test)[0])
    fits = sum(v.seconds for v in outcome.result.variants.values())
    return {
        "booster": model.booster,
        "forest": model.anomaly.fitted,
        "scores": scores,
        "y_test": inputs.y["test"],
        "chosen": outcome.chosen,
        "boosting_rounds": outcome.boosting_rounds,
        "xgboost_fits": fits + (outcome.refit.seconds if outcome.refit else 0.0),
        "validation_ap": {n: v.validation_ap for n, v in outcome.result.variants.items()},
    }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--json", type=Path, help="write timings and metrics here")
    parser.add_argument("--dask-workers", type=int, help="heavy stages on a LocalCluster of N")
    parser.add_argument(
        "--window-days", type=int, help="cut the splits from the last N days (default: all)"
    )
    args = parser.parse_args()
    if args.window_days is not None and args.window_days < 1:
        parser.error("--window-days must be at least 1")
    stages: dict[str, float] = {"imports": time.perf_counter() - _T0}
    mark = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        stages[stage] = now - mark
        mark = now

    client = cluster = None
    idle: dict[str, Any] = {}
    if args.dask_workers:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=args.dask_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        )
        client = Client(cluster)
        # What the processes hold before any data: the base of the memory per row.
        idle = {"client": _peak_rss_mb(), "workers": list(client.run(_peak_rss_mb).values())}
        lap("cluster")
    raw = read(args.data)
    lap("load")
    # The contract's checks (a ValueError naming every problem) and the canonical, sorted frame.
    frame = conform(raw)
    del raw
    lap("conform")
    if client is None:
        features = compute_features(frame, DEFAULT)
    else:
        from fraud_core.scale.features import compute_features_dask

        features = compute_features_dask(frame, DEFAULT, client)
    lap("features")
    rows_w, features_w, history_from = window(frame, features, args.window_days)
    splits, _ = split_cards(
        rows_w,
        features_w,
        DEFAULT,
        VALIDATION_FRACTION,
        TEST_FRACTION,
        history_from=history_from,
    )
    rows, frauds, window_rows = len(frame), int(frame[LABEL].sum()), len(rows_w)
    del frame, features, rows_w, features_w, history_from  # the splits hold copies of their rows
    lap("split")

    out = model_local(splits, lap) if client is None else model_dask(splits, client, lap)
    y_test, scores = out["y_test"], out["scores"]
    metrics = {
        "test_average_precision": float(average_precision_score(y_test, scores)),
        "test_roc_auc": float(roc_auc_score(y_test, scores)),
        **{f"validation_ap_{name}": ap for name, ap in out["validation_ap"].items()},
    }
    lap("evaluate")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    out["booster"].save_model(args.out_dir / "classifier.ubj")
    joblib.dump(out["forest"], args.out_dir / "anomaly.joblib")
    if splits.history is not None:
        splits.history.to_parquet(args.out_dir / "history.parquet", index=False)
    lap("save")

    workers: dict[str, float] = {}
    if client is not None and cluster is not None:
        workers = client.run(_peak_rss_mb)
        client.close()
        cluster.close()
    peak_mb = _peak_rss_mb()
    result = {
        "stages": stages,
        "total": time.perf_counter() - _T0,
        "xgboost_fits": out["xgboost_fits"],
        "peak_rss_mb": peak_mb,
        "dask_workers": args.dask_workers or 0,
        "worker_peak_rss_mb": list(workers.values()),
        "worker_idle_rss_mb": idle.get("workers", []),
        "client_idle_rss_mb": idle.get("client"),
        "rows": rows,
        "frauds": frauds,
        "window_days": args.window_days,
        "window_rows": window_rows,
        "split_rows": {name: len(part) for name, part in splits.items()},
        "chosen": out["chosen"],
        "refit": "train+validation",
        "boosting_rounds": out["boosting_rounds"],
        "metrics": metrics,
    }
    engine = f"dask {args.dask_workers} worker(s)" if args.dask_workers else "local"
    print(
        f"{rows:,} rows ({engine}), chose {out['chosen']}, refit {result['refit']}: "
        f"test AP {metrics['test_average_precision']:.4f}, "
        f"ROC AUC {metrics['test_roc_auc']:.4f}; "
        + ", ".join(f"{k} {v:.2f}s" for k, v in stages.items())
        + f"; peak {peak_mb:.0f} MB"
        + (f", workers {', '.join(f'{v:.0f}' for v in workers.values())} MB" if workers else "")
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
