"""How much the platform costs over a bare script doing the same work on the same data.

    python benchmarks/materialize_vs_script.py [--rows 284807] [--repeat 1] [--no-warm] [--keep]

Writes one synthetic `creditcard.csv` (untimed) into a temporary folder, then runs, each in its own
fresh Python process so that imports and memory count separately:

- bare: `benchmarks/bare_pipeline.py`, the pipeline written by hand with the same libraries;
- platform (cold): `benchmarks/_platform_run.py`, `dagster.materialize([*ASSETS, *CHECKS])` with
  Dagster, MLflow and the model store all in a new state folder: a first run;
- platform (warm, unless `--no-warm`): the same again on the same state folder, as a weekly
  retrain runs: the Dagster instance and `mlflow.db` exist and a model is in production, so the
  run also scores that model and compares the two with a paired bootstrap.

Every run reads the same CSV. Before any timing, each side runs once on a small data set (untimed)
to fill a byte-code cache that the timed processes use (`--no-bytecode-cache` turns this off).
Wall clock is measured here, around each process; the per-stage times come from the processes
themselves (the Dagster steps' events for the platform). Prints a table with all three, the ratios
and the peak resident memory of each, the test AP and ROC AUC of each (both sides refit the chosen
model on train + validation; the bare script also reports its model trained on train alone), and
checks the targets for both platform runs: within 1.25x the bare script and under 30 s. The table
itself is built in `_bench_table.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _bench_table import SIDES, print_table  # noqa: E402

REAL_FRAUD_RATE = 492 / 284_807
#: Rows of the untimed runs that fill the byte-code cache (enough frauds for every check).
WARMUP_ROWS = 20_000


def default_fraud_rate(rows: int) -> float:
    """The real data's 492 / 284,807, raised on small sets so each split keeps enough frauds.

    The platform's blocking check wants 20 frauds in every split; 400 frauds in all leave room
    for the night-heavy fraud rhythm (40,000 rows get 1 %, as in the tests).
    """
    return min(0.05, max(REAL_FRAUD_RATE, 400 / rows))


def write_csv(rows: int, fraud_rate: float, path: Path) -> None:
    """The synthetic data set, as the CSV both sides read."""
    sys.path.insert(0, str(ROOT))
    from fraud_core import synthetic

    path.parent.mkdir(parents=True, exist_ok=True)
    synthetic.generate(n_rows=rows, fraud_rate=fraud_rate).to_csv(path, index=False)


def child_env(pycache: Path | None) -> dict[str, str]:
    """The environment of every child process."""
    env = dict(os.environ)
    # The platform sets this at import (fraud_core/__init__.py); give the bare script the same
    # OpenMP behaviour so that the comparison measures the platform, not OpenMP spin-waiting.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if pycache is not None:
        # Byte code from a cache of our own, filled by the warm-up runs, as an installed
        # environment has it whatever PYTHONDONTWRITEBYTECODE says here: without one, each process
        # compiles every module it imports from source (thousands for the platform).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def warm_up(folder: Path, env: dict[str, str]) -> None:
    """One untimed run of each side on a small data set: fills the byte-code cache of `env`."""
    csv = folder / "raw" / "creditcard.csv"
    write_csv(WARMUP_ROWS, default_fraud_rate(WARMUP_ROWS), csv)
    run_child([str(HERE / "bare_pipeline.py"), str(csv), str(folder / "bare")], folder / "b", env)
    run_child(
        [str(HERE / "_platform_run.py"), str(csv.parent), str(folder / "state")], folder / "p", env
    )


def run_child(argv: list[str], json_path: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run one side in a fresh interpreter; return its own report plus the wall clock around it."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *argv, "--json", str(json_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    ended = time.time()
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"{argv[0]} failed with exit code {proc.returncode}")
    report = json.loads(json_path.read_text())
    report["wall"] = wall
    # Both sides write their report last: from then on the process is exiting (atexit handlers,
    # the interpreter's finalization, giving the memory back).
    report["exit"] = max(0.0, ended - json_path.stat().st_mtime)
    # CPU time is less sensitive than wall clock to other work on the machine.
    report["cpu"] = (cpu_after.ru_utime - cpu_before.ru_utime) + (
        cpu_after.ru_stime - cpu_before.ru_stime
    )
    report["stdout"] = proc.stdout.strip()
    return report


def median_report(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall clock (a real run, so its stages add up)."""
    ordered = sorted(reports, key=lambda r: r["wall"])
    return ordered[(len(ordered) - 1) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=284_807, help="synthetic rows (default 284,807)"
    )
    parser.add_argument(
        "--fraud-rate",
        type=float,
        help="synthetic fraud rate (default: the real 0.172 %%, raised for small --rows)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side (median shown)")
    parser.add_argument(
        "--warm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after each cold platform run, run it again on the same state (default: on)",
    )
    parser.add_argument(
        "--bytecode-cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fill a byte-code cache in untimed warm-up runs first (default: on)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", type=Path, help="also write every run's report here")
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 when a target is missed"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.rows < 1000:
        parser.error("--rows must be at least 1,000 (each split needs frauds to train on)")

    tmp = Path(tempfile.mkdtemp(prefix="fraud-bench-"))
    try:
        csv = tmp / "raw" / "creditcard.csv"
        start = time.perf_counter()
        fraud_rate = args.fraud_rate or default_fraud_rate(args.rows)
        write_csv(args.rows, fraud_rate, csv)
        print(
            f"wrote {csv} ({args.rows:,} rows, {fraud_rate:.3%} fraud, "
            f"{csv.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - start:.1f}s"
        )
        env = child_env(tmp / "pycache" if args.bytecode_cache else None)
        if args.bytecode_cache:
            start = time.perf_counter()
            warm_up(tmp / "warmup", env)
            print(
                f"byte-code cache filled by an untimed run of each side on {WARMUP_ROWS:,} rows "
                f"in {time.perf_counter() - start:.1f}s"
            )
        sides = ["bare", "platform", *(["warm"] if args.warm else [])]
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        for i in range(args.repeat):
            # The sides take turns, so that slow spells of a shared machine hit all of them alike.
            # The warm run reuses the cold run's state folder: the instance, `mlflow.db` and the
            # production model it left.
            state = str(tmp / f"state_{i}")
            argvs = {
                "bare": [str(HERE / "bare_pipeline.py"), str(csv), str(tmp / f"bare_models_{i}")],
                "platform": [str(HERE / "_platform_run.py"), str(csv.parent), state],
                "warm": [str(HERE / "_platform_run.py"), str(csv.parent), state],
            }
            for side in sides:
                report = run_child(argvs[side], tmp / f"{side}_{i}.json", env)
                runs[side].append(report)
                summary = report["stdout"].splitlines()[-1] if report["stdout"] else ""
                print(f"[{i + 1}/{args.repeat}] {SIDES[side]} {report['wall']:.2f}s: {summary}")
        if args.repeat > 1:
            for side, reports in runs.items():
                walls = [r["wall"] for r in reports]
                print(
                    f"{SIDES[side]} wall clock over {len(walls)} runs: "
                    f"median {statistics.median(walls):.2f}s, "
                    f"min {min(walls):.2f}s, max {max(walls):.2f}s"
                )
        columns = {side: median_report(reports) for side, reports in runs.items()}
        ok = print_table(columns, args.rows, args.repeat)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"rows": args.rows, **runs}, indent=2))
    finally:
        if args.keep:
            print(f"\nkept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
