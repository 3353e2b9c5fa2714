"""How fast the API serves the model, against `mlflow models serve` on the same model.

    python benchmarks/serving.py [--rows 284807] [--duration 10] [--rounds 2] [--keep]
    python benchmarks/serving.py --models-dir DIR --tracking-uri URI   # reuse a trained model
    python benchmarks/serving.py --prediction-log [URL]   # the API with its prediction log on / off

Needs `wrk` (https://github.com/wg/wrk) on the PATH: `apt-get install wrk` on Debian and Ubuntu,
`brew install wrk` on macOS.

Trains one model (untimed) by materializing the Dagster graph on synthetic data into a temporary
folder, or reuses one given with `--models-dir` and `--tracking-uri`. Then, in one run:

- the in-process floor: `FraudModel.predict_proba` on one row and on a batch of 1,000 rows;
- starts the API (`uvicorn api.main:app`, one worker) and `mlflow models serve` on the registered
  model (`models:/fraud-detector@champion`), checks that both return the same probabilities;
- drives each with wrk, one transaction per request, at concurrency 1 and 32, the servers
  alternating so that slow spells of a shared machine hit both alike;
- times a batch of 1,000 transactions through `/predict/batch` (and MLflow's `/invocations`);
- starts the API with `--workers 2` and measures it at concurrency 1 (the Nagle check).

Prints a table (requests/s, p50 and p99 latency, and the server's CPU time per request, which a
busy machine disturbs much less) and checks the targets: the API at least 10x MLflow's throughput
at concurrency 32, its p99 at concurrency 1 under 3 ms, and a batch of 1,000 under 50 ms (p50).
The API logs its predictions to a SQLite file in the temporary folder, as it does by default.

With `--prediction-log` the run compares the API with itself instead: one server logging every
prediction (to a SQLite file in the temporary folder, or to URL, e.g. a PostgreSQL database) and
one with `FRAUD_PREDICTION_LOG_URL=off`, driven alike and in turns; it prints both and the ratio,
checks that every logged request reached the database, and the target: log on within 10 % of
log off in requests/s at concurrency 32.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from materialize_vs_script import default_fraud_rate  # noqa: E402
from serving_load import (  # noqa: E402
    BATCH_ROWS,
    LOADS,
    api_batch_body,
    api_body,
    batch_timing,
    median_load,
    mlflow_body,
    same_model,
    wrk,
)
from serving_model import in_process_floor, train_model, transactions  # noqa: E402
from serving_prediction_log import compare_prediction_log  # noqa: E402
from serving_report import print_report  # noqa: E402
from serving_servers import MODEL_URI, api_server, mlflow_server, server_stack  # noqa: E402

from fraud_core.bundle import BundleError, load_bundle  # noqa: E402
from servicectl.process import free_port  # noqa: E402

INSTALL_WRK = "install it with `apt-get install wrk` (Debian, Ubuntu) or `brew install wrk` (macOS)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=284_807, help="synthetic rows to train on (default 284,807)"
    )
    parser.add_argument(
        "--fraud-rate",
        type=float,
        help="synthetic fraud rate (default: the real 0.172 %%, raised for small --rows)",
    )
    parser.add_argument(
        "--models-dir", type=Path, help="reuse this model store (serves its production bundle)"
    )
    parser.add_argument(
        "--tracking-uri", help=f"with --models-dir: the MLflow store that has {MODEL_URI}"
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="wrk runs per server and concurrency (median shown)"
    )
    parser.add_argument(
        "--no-workers-check", action="store_true", help="skip the API with --workers 2 at c=1"
    )
    parser.add_argument(
        "--workers-loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="uvicorn's --loop for the --workers 2 check (asyncio shows the Nagle delay)",
    )
    parser.add_argument(
        "--prediction-log",
        nargs="?",
        const="sqlite",
        metavar="URL",
        help="compare the API with its prediction log on (SQLite in the temporary folder, or "
        "URL) and off, instead of with MLflow",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 when a target is missed"
    )
    args = parser.parse_args(argv)
    if args.tracking_uri is not None and args.models_dir is None:
        parser.error("--tracking-uri goes with --models-dir")
    if args.models_dir is not None and args.tracking_uri is None and args.prediction_log is None:
        parser.error("--models-dir needs --tracking-uri (MLflow serves the same model)")
    if args.rows < 1000:
        parser.error("--rows must be at least 1,000 (each split needs frauds to train on)")
    if args.rounds < 1 or args.duration < 1:
        parser.error("--rounds and --duration must be at least 1")
    if shutil.which("wrk") is None:
        raise SystemExit(f"wrk is not on the PATH: {INSTALL_WRK}")
    # A plain `kill` of the benchmark still runs the `finally` blocks that stop the servers.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    state = Path(tempfile.mkdtemp(prefix="fraud-serving-bench-"))
    try:
        if args.models_dir is not None:
            models_dir, tracking_uri = args.models_dir.resolve(), args.tracking_uri
        else:
            fraud_rate = args.fraud_rate or default_fraud_rate(args.rows)
            start = time.perf_counter()
            train_model(state, args.rows, fraud_rate)
            models_dir, tracking_uri = state / "models", f"sqlite:///{state / 'mlflow.db'}"
            print(
                f"trained on {args.rows:,} synthetic rows ({fraud_rate:.3%} fraud) "
                f"in {time.perf_counter() - start:.0f}s"
            )
        try:
            model = load_bundle(models_dir / "production", verify=True)
        except BundleError as exc:
            raise SystemExit(f"no model to serve: {exc}") from exc
        model.booster.set_param({"nthread": 1})  # as the API does (api/serving.py)
        trees, forest = model.booster.num_boosted_rounds(), model.anomaly.forest
        info: dict[str, Any] = {
            "model": f"{model.version}: XGBoost {trees} trees + IsolationForest "
            f"{forest.n_trees} trees (depth {forest.depth})"
            + ("" if args.models_dir else f", trained on {args.rows:,} synthetic rows"),
            "stack": server_stack(),
            "duration": args.duration,
            "rounds": args.rounds,
        }
        print(info["model"])

        data = transactions(2_000)
        singles = data[:100]
        batch = data[:BATCH_ROWS]
        floor = in_process_floor(model, singles, batch)
        print(
            f"in-process floor: one row p50 {floor['one_p50_ms']:.3f} ms, "
            f"batch p50 {floor['batch_p50_ms']:.1f} ms"
        )

        if args.prediction_log is not None:
            log_url = args.prediction_log
            if log_url == "sqlite":
                log_url = f"sqlite:///{state / 'predictions.db'}"
            ok = compare_prediction_log(models_dir, state, log_url, singles, batch, args)
            return 1 if args.check and not ok else 0

        api_port, mlflow_port = free_port(), free_port()
        api, mlflow = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{mlflow_port}"
        targets = {
            "API /predict": (f"{api}/predict", [api_body(r) for r in singles]),
            "MLflow /invocations": (
                f"{mlflow}/invocations",
                [mlflow_body(r[None]) for r in singles],
            ),
        }
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        with (
            api_server(models_dir, api_port, state) as api_group,
            mlflow_server(tracking_uri, mlflow_port, state) as mlflow_group,
        ):
            groups = {"API /predict": api_group, "MLflow /invocations": mlflow_group}
            same_model(api, mlflow, singles, model)
            for i in range(args.rounds):
                for concurrency in LOADS:
                    # Alternate who goes first, so that neither always follows the other.
                    order = list(targets) if i % 2 == 0 else list(targets)[::-1]
                    for name in order:
                        url, bodies = targets[name]
                        run = wrk(url, bodies, concurrency, args.duration, state, groups[name])
                        runs.setdefault((name, concurrency), []).append(run)
                        print(
                            f"[{i + 1}/{args.rounds}] {name} c={concurrency}: {run['rps']:.0f} "
                            f"req/s, p50 {run['p50_us'] / 1e3:.2f} ms, "
                            f"p99 {run['p99_us'] / 1e3:.2f} ms"
                        )
            batches = {
                "API /predict/batch": batch_timing(f"{api}/predict/batch", api_batch_body(batch)),
                "MLflow /invocations": batch_timing(f"{mlflow}/invocations", mlflow_body(batch)),
            }
        if not args.no_workers_check:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            with api_server(models_dir, port, state, workers=2, loop=args.workers_loop) as group:
                bodies = targets["API /predict"][1]
                run = wrk(f"{url}/predict", bodies, 1, args.duration, state, group)
            loop = "" if args.workers_loop == "auto" else f" --loop {args.workers_loop}"
            runs[(f"API /predict, --workers 2{loop}", 1)] = [run]
            print(f"API --workers 2 c=1: {run['rps']:.0f} req/s, p50 {run['p50_us'] / 1e3:.2f} ms")

        loads = [median_load(name, c, r) for (name, c), r in runs.items()]
        loads.sort(key=lambda x: (x.concurrency, x.server))
        ok = print_report(floor, loads, batches, info)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            report = {
                "info": info,
                "floor": floor,
                "batch": batches,
                "wrk": {f"{name} c={c}": r for (name, c), r in runs.items()},
            }
            args.json.write_text(json.dumps(report, indent=2))
    finally:
        if args.keep:
            print(f"\nkept {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
