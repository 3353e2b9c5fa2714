"""One platform run for `materialize_vs_script.py` and `growth.py`: every asset and check, all
state in one folder.

    python benchmarks/_platform_run.py DATA_DIR STATE_DIR [--contract cards] --json RESULT.json
    python benchmarks/_platform_run.py DATA_DIR STATE_DIR --contract cards --window-days 28

Kaggle data: materializes `[*ASSETS, *CHECKS]` with `dagster.materialize`. Card data: the path
`make materialize` runs (`_cards_platform.run_cards`): every day of the data in one
`daily_cards_job` run, then `weekly_retrain_job` of the newest day's week, its splits cut from the
last `--window-days` days (default: every day of the data, the bare script's work). Both on a
Dagster instance under `STATE_DIR/dagster_home` (local SQLite storage, as `make demo` uses),
MLflow on `STATE_DIR/mlflow.db`, bundles under `STATE_DIR/models`, the assets' Parquet under
`STATE_DIR/dagster_home/storage` and the prediction log (where training reads labels sent back)
on `STATE_DIR/predictions.db`, reading the data files of `DATA_DIR` as `--contract` says (default
auto: by their columns). The heavy steps run in this process (the single-machine path, whatever
FRAUD_DASK_ADDRESS says).
A new STATE_DIR is a first run (cold); running again on the same STATE_DIR is a retrain on an
existing instance and MLflow database with a model in production (warm), which also scores that
model and compares the two with a paired bootstrap.

Writes the import time, the time of opening the Dagster instance and MLflow's store, the time of
each Dagster step (from the run's step stats, which the instance derives from the STEP_START /
STEP_SUCCESS events), the phases inside the steps that the event log shows (inputs loaded, outputs
stored, the promotion decision), the time `materialize` took, the peak resident memory, the test
metrics and the promotion decision. For card data `materialize` is both runs together, `steps`
and `phases` hold both runs' steps, the metrics are the weekly run's, `setup` includes finding
the data's days (`fraud_assets.run_cards.card_days`) and building the code location
(`prepare_cards`: those alone), and `runs` names the two runs, the week, the window and the days.
"""

import time

_T0 = time.perf_counter()
_T0_EPOCH = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
from pathlib import Path  # noqa: E402

import dagster as dg  # noqa: E402
import mlflow  # noqa: E402
from _cards_platform import run_cards  # noqa: E402

from fraud_assets import instance as dagster_instance  # noqa: E402
from fraud_assets.definitions import ASSETS, CHECKS  # noqa: E402
from fraud_assets.defs.io_managers import ParquetIOManager  # noqa: E402
from fraud_assets.defs.resources import (  # noqa: E402
    ComputeEngine,
    DataSource,
    MlflowTracking,
    ModelStoreResource,
    PredictionLogResource,
    default_resources,
)
from fraud_core.contracts import CARDS  # noqa: E402
from fraud_core.store import ModelStore  # noqa: E402

_IMPORTS = time.perf_counter() - _T0


def step_phases(instance: dg.DagsterInstance, run_id: str, reason: str) -> dict[str, dict]:
    """Timestamps inside each step, from the run's event log (seconds since the epoch).

    `start` and `end`: STEP_START and STEP_SUCCESS. `inputs_ready`: the last STEP_INPUT (every
    input loaded by the IO manager and type-checked). `output`: the first STEP_OUTPUT (the step's
    own code returned). `stored`: the last HANDLED_OUTPUT (the IO manager wrote the outputs).
    `decision`: for `promoted_model`, the log line with the promotion decision, which the asset
    writes right after comparing the challenger with production.
    """
    phases: dict[str, dict] = {}
    for record in instance.all_logs(run_id):
        key = record.step_key
        if key is None:
            continue
        event = record.dagster_event.event_type_value if record.dagster_event else None
        step = phases.setdefault(key, {})
        if event == "STEP_START":
            step["start"] = record.timestamp
        elif event == "STEP_INPUT":
            step["inputs_ready"] = record.timestamp
        elif event == "STEP_OUTPUT":
            step.setdefault("output", record.timestamp)
        elif event == "HANDLED_OUTPUT":
            step["stored"] = record.timestamp
        elif event == "STEP_SUCCESS":
            step["end"] = record.timestamp
        elif event is None and record.user_message == reason:
            step.setdefault("decision", record.timestamp)
    return {key: step for key, step in phases.items() if "start" in step and "end" in step}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("state_dir", type=Path)
    parser.add_argument(
        "--contract",
        choices=("auto", "kaggle", "cards"),
        default="auto",
        help="the data contract of DATA_DIR's files (default: auto, by their columns)",
    )
    parser.add_argument(
        "--window-days",
        type=int,
        help="card data: the days the week's model is cut from (default: all the data's days)",
    )
    parser.add_argument("--json", type=Path, help="write timings and metrics here")
    args = parser.parse_args()
    if args.window_days is not None and args.window_days < 1:
        parser.error("--window-days must be at least 1")
    data_source = DataSource(data_dir=str(args.data_dir.resolve()), contract=args.contract)
    contract = data_source.current_contract()  # from the files' headers alone
    if args.window_days is not None and contract != CARDS:
        parser.error("--window-days is for card data")
    state = args.state_dir.resolve()
    tracking_uri = f"sqlite:///{state / 'mlflow.db'}"
    home = state / "dagster_home"
    models = ModelStore(state / "models")
    before = {
        "dagster_instance": (home / "storage").is_dir(),
        "mlflow_db": (state / "mlflow.db").is_file(),
        "production_version": models.current_version(),
    }

    # MLflow's stores, opened once here so that their one-time cost (a new `mlflow.db` and its
    # migrations on a first run, the schema check otherwise) shows on its own row rather than
    # inside the first step that logs to MLflow. MLflow caches a store per URI in the process, so
    # the run reuses these: the total is the same as without this.
    start = time.perf_counter()
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.search_experiments(max_results=1)
    client.search_registered_models(max_results=1)
    mlflow_store = time.perf_counter() - start

    start = time.perf_counter()
    os.environ["DAGSTER_HOME"] = str(home)
    dagster_instance.write(home)
    # The embedded defaults (so that a resource added to the platform is there), with every
    # resource that holds state pointed into the state folder.
    resources = {
        **default_resources(),
        "data_source": data_source,
        "model_store": ModelStoreResource(models_dir=str(models.root)),
        # Never the project's own prediction log: its labels would become training rows here.
        "prediction_log": PredictionLogResource(url=f"sqlite:///{state / 'predictions.db'}"),
        "io_manager": ParquetIOManager(root=str(home / "storage")),
        "compute": ComputeEngine(),
        "mlflow_tracking": MlflowTracking(
            tracking_uri=tracking_uri, artifact_root=str(state / "mlartifacts")
        ),
    }
    with dg.DagsterInstance.get() as instance:
        setup = time.perf_counter() - start
        extra: dict = {}  # card data: the two runs, and finding the days before them
        if contract == CARDS:
            cards = run_cards(instance, resources, args.window_days)
            setup += cards.prepare_seconds
            materialize_seconds, results = cards.run_seconds, [cards.daily, cards.weekly]
            extra = {"runs": cards.runs, "prepare_cards": cards.prepare_seconds}
        else:
            start = time.perf_counter()
            result = dg.materialize([*ASSETS, *CHECKS], resources=resources, instance=instance)
            materialize_seconds = time.perf_counter() - start
            results = [result]
        result = results[-1]  # the training run: its outputs
        steps = {
            stat.step_key: stat.end_time - stat.start_time
            for run in results
            for stat in instance.get_run_step_stats(run.run_id)
            if stat.start_time is not None and stat.end_time is not None
        }
        report = result.output_for_node("evaluation_report")
        promoted = result.output_for_node("promoted_model")
        model = result.output_for_node("fraud_model")
        phases = {
            key: step
            for run in results
            for key, step in step_phases(instance, run.run_id, promoted["reason"]).items()
        }
    # The XGBoost fits alone, as the variants' nested MLflow runs recorded them: the rest of the
    # `fraud_model` step is the platform's own work around them (features, tracking, the model).
    parent = client.get_run(model.mlflow_run_id)
    variant_runs = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{model.mlflow_run_id}'"
    )
    fits = sum(run.data.metrics.get("train_seconds", 0.0) for run in variant_runs)
    # The refit on train + validation is a fit too (recorded on the training run itself).
    fits += parent.data.metrics.get("refit_seconds", 0.0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    out = {
        "imports": _IMPORTS,
        "mlflow_store": mlflow_store,
        "setup": setup,
        "materialize": materialize_seconds,
        "steps": steps,
        "phases": phases,
        "xgboost_fits": fits,
        "start_epoch": _T0_EPOCH,
        "total": time.perf_counter() - _T0,
        "peak_rss_mb": peak_mb,
        "success": all(run.success for run in results),
        "state_before": before,
        "chosen": model.variant,
        "refit": model.training.get("refit", "off"),
        "boosting_rounds": model.training.get("boosting_rounds"),
        "promoted": bool(promoted["promote"]),
        "decision": promoted["reason"],
        "metrics": {
            "test_average_precision": report.metrics["average_precision"],
            "test_roc_auc": report.metrics["roc_auc"],
            # Cards only: the Handbook's Card Precision@k on the test days.
            **{
                f"test_{k}": v
                for k, v in report.metrics.items()
                if k.startswith("card_precision_top_")
            },
            **{f"validation_ap_{k}": v for k, v in model.validation_ap.items()},
        },
        **extra,
    }
    state_word = "warm" if before["production_version"] else "cold"
    print(
        f"platform ({state_word}): chose {out['chosen']}, refit {out['refit']}: "
        f"test AP {out['metrics']['test_average_precision']:.4f}, "
        f"ROC AUC {out['metrics']['test_roc_auc']:.4f}; imports {_IMPORTS:.2f}s, "
        f"materialize {materialize_seconds:.2f}s; peak {peak_mb:.0f} MB; {out['decision']}"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
