"""One platform run for `materialize_vs_script.py`: every asset and check, all state in one folder.

    python benchmarks/_platform_run.py DATA_DIR STATE_DIR --json RESULT.json

Materializes `[*ASSETS, *CHECKS]` with `dagster.materialize` on a Dagster instance under
`STATE_DIR/dagster_home` (local SQLite storage, as `make demo` uses), MLflow on
`STATE_DIR/mlflow.db`, bundles under `STATE_DIR/models`, reading the data files of `DATA_DIR`.
Writes the import time, the time of each Dagster step (from the run's step stats, which the
instance derives from the STEP_START / STEP_SUCCESS events), the time `materialize` took, the peak
resident memory and the test metrics.
"""

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
from pathlib import Path  # noqa: E402

import dagster as dg  # noqa: E402
import mlflow  # noqa: E402

from fraud_assets import instance as dagster_instance  # noqa: E402
from fraud_assets.definitions import ASSETS, CHECKS  # noqa: E402
from fraud_assets.defs.resources import (  # noqa: E402
    DataSource,
    MlflowTracking,
    ModelStoreResource,
    default_resources,
)

_IMPORTS = time.perf_counter() - _T0


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("--json", type=Path, help="write timings and metrics here")
    args = parser.parse_args()
    state = args.state_dir.resolve()

    start = time.perf_counter()
    home = state / "dagster_home"
    os.environ["DAGSTER_HOME"] = str(home)
    dagster_instance.write(home)
    # The embedded defaults (so that a resource added to the platform is there), with every
    # resource that holds state pointed into the state folder.
    resources = {
        **default_resources(),
        "data_source": DataSource(data_dir=str(args.data_dir.resolve())),
        "model_store": ModelStoreResource(models_dir=str(state / "models")),
        "mlflow_tracking": MlflowTracking(
            tracking_uri=f"sqlite:///{state / 'mlflow.db'}",
            artifact_root=str(state / "mlartifacts"),
        ),
    }
    with dg.DagsterInstance.get() as instance:
        setup = time.perf_counter() - start
        start = time.perf_counter()
        result = dg.materialize([*ASSETS, *CHECKS], resources=resources, instance=instance)
        materialize_seconds = time.perf_counter() - start
        steps = {
            stat.step_key: stat.end_time - stat.start_time
            for stat in instance.get_run_step_stats(result.run_id)
            if stat.start_time is not None and stat.end_time is not None
        }
        report = result.output_for_node("evaluation_report")
        promoted = result.output_for_node("promoted_model")
        model = result.output_for_node("fraud_model")
    # The XGBoost fits alone, as the variants' nested MLflow runs recorded them: the rest of the
    # `fraud_model` step is the platform's own work around them (features, tracking, the model).
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}")
    parent = client.get_run(model.mlflow_run_id)
    variant_runs = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{model.mlflow_run_id}'"
    )
    fits = sum(run.data.metrics.get("train_seconds", 0.0) for run in variant_runs)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    out = {
        "imports": _IMPORTS,
        "setup": setup,
        "materialize": materialize_seconds,
        "steps": steps,
        "xgboost_fits": fits,
        "total": time.perf_counter() - _T0,
        "peak_rss_mb": peak_mb,
        "success": result.success,
        "chosen": model.variant,
        "promoted": bool(promoted["promote"]),
        "metrics": {
            "test_average_precision": report.metrics["average_precision"],
            "test_roc_auc": report.metrics["roc_auc"],
            **{f"validation_ap_{k}": v for k, v in model.validation_ap.items()},
        },
    }
    print(
        f"platform: chose {out['chosen']}: test AP {out['metrics']['test_average_precision']:.4f}, "
        f"ROC AUC {out['metrics']['test_roc_auc']:.4f}; imports {_IMPORTS:.2f}s, "
        f"materialize {materialize_seconds:.2f}s; peak {peak_mb:.0f} MB"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
