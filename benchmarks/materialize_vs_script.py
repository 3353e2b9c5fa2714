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
and the peak resident memory of each, and checks the targets for both platform runs: within 1.25x
the bare script and under 30 s.
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
MAX_RATIO = 1.25
MAX_SECONDS = 30.0
REAL_FRAUD_RATE = 492 / 284_807
#: Rows of the untimed runs that fill the byte-code cache (enough frauds for every check).
WARMUP_ROWS = 20_000
NAN = float("nan")

#: Stage rows: (stage, bare script stage, platform assets and checks). A check's step key is its
#: asset's name, "_" and the check's name. Steps not listed land in "other steps". The
#: `promoted_model` step is split into "compare with production" and the rest (`promotion_split`).
STAGES: list[tuple[str, str | None, tuple[str, ...]]] = [
    ("imports", "imports", ()),
    ("load CSV", "load", ("raw_transactions",)),
    ("data checks", None, ("raw_transactions_checks",)),
    ("time split", "split", ("transaction_splits", "check_transaction_splits_min_frauds")),
    ("IsolationForest", "anomaly", ("anomaly_scores",)),
    ("train 3 variants", "train", ("fraud_model",)),
    ("  of which XGBoost fits", None, ()),
    (
        "evaluate on test",
        "evaluate",
        ("evaluation_report", "check_evaluation_report_quality_floor"),
    ),
    ("compare with production", None, ()),
    ("save / publish model", "save", ("promoted_model",)),
]
OTHER = "other steps"
#: Rows after the stages: what the platform does around its steps, and the process itself.
OVERHEAD = [
    "MLflow stores (new mlflow.db / open it)",
    "Dagster instance (new storage / open it)",
    "run overhead (launch, events, between steps)",
    "reading results back",
    "interpreter start and exit",
    "  of which exit",
]
#: Report keys of the sides, in the table's order, with their names.
SIDES = {"bare": "bare", "platform": "platform (cold)", "warm": "platform (warm)"}


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


def promotion_split(platform: dict[str, Any]) -> tuple[float, float]:
    """The `promoted_model` step as (compare with production, the rest of the step).

    The comparison runs from the step's last input to its decision log line: loading and
    verifying the production bundle, scoring the test rows with it, its metrics and the paired
    bootstrap (on a first run, only finding that nothing is in production). The rest is loading
    the inputs and, when the challenger wins, registering, staging and publishing it, then
    storing the output.
    """
    step = platform.get("phases", {}).get("promoted_model", {})
    total = platform["steps"].get("promoted_model", NAN)
    if "decision" not in step or "inputs_ready" not in step:
        return NAN, total
    compare = step["decision"] - step["inputs_ready"]
    return compare, total - compare


def io_manager_seconds(platform: dict[str, Any]) -> float:
    """Seconds inside the steps spent loading inputs and storing outputs, events included."""
    total = 0.0
    for step in platform.get("phases", {}).values():
        total += step.get("inputs_ready", step["start"]) - step["start"]
        if "output" in step and "stored" in step:
            total += step["stored"] - step["output"]
    return total


def bare_rows(bare: dict[str, Any]) -> dict[str, float]:
    """The bare script's seconds for each row of the table."""
    out = {name: bare["stages"][key] if key else NAN for name, key, _ in STAGES}
    out["  of which XGBoost fits"] = bare.get("xgboost_fits", NAN)
    out["interpreter start and exit"] = bare["wall"] - bare["total"]
    out["  of which exit"] = bare["exit"]
    return out


def platform_rows(platform: dict[str, Any]) -> dict[str, float]:
    """A platform run's seconds for each row of the table."""
    steps = dict(platform["steps"])
    out: dict[str, float] = {"imports": platform["imports"]}
    for name, _, step_keys in STAGES:
        if step_keys:
            keys = [k for k in steps if any(k == n or k.endswith(f"_{n}") for n in step_keys)]
            out[name] = sum(steps.pop(k) for k in keys)
    out["  of which XGBoost fits"] = platform.get("xgboost_fits", NAN)
    out["compare with production"], out["save / publish model"] = promotion_split(platform)
    out[OTHER] = sum(steps.values()) if steps else NAN
    store = platform.get("mlflow_store", 0.0)
    overhead = [
        store,
        platform["setup"],
        platform["materialize"] - sum(platform["steps"].values()),
        platform["total"]
        - platform["imports"]
        - store
        - platform["setup"]
        - platform["materialize"],
        platform["wall"] - platform["total"],
        platform["exit"],
    ]
    out.update(zip(OVERHEAD, overhead, strict=True))
    return out


def table_rows(columns: dict[str, dict[str, Any]]) -> list[tuple[str, list[float]]]:
    """(row, seconds of each column) in the table's order; NaN where a column has no such row."""
    values = {
        side: bare_rows(report) if side == "bare" else platform_rows(report)
        for side, report in columns.items()
    }
    names = [name for name, _, _ in STAGES]
    if any(v.get(OTHER, NAN) == v.get(OTHER, NAN) for v in values.values()):
        names.append(OTHER)
    names += OVERHEAD
    return [(name, [values[side].get(name, NAN) for side in columns]) for name in names]


def median_report(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall clock (a real run, so its stages add up)."""
    ordered = sorted(reports, key=lambda r: r["wall"])
    return ordered[(len(ordered) - 1) // 2]


def fmt(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds:.2f}"


def print_table(columns: dict[str, dict[str, Any]], rows: int, repeat: int) -> bool:
    """Print the table, the ratios and the targets; True when every platform run meets both."""
    lines = table_rows(columns)
    headings = [f"{SIDES[side]} s" for side in columns]
    widths = [max(8, len(h)) for h in headings]
    width = max(len(name) for name, _ in lines) + 2
    rule = f"{'-' * width}|" + "|".join("-" * (w + 2) for w in widths)

    def line(name: str, cells: list[str]) -> None:
        padded = (f" {c:>{w}} " for c, w in zip(cells, widths, strict=True))
        print((f"{name:<{width}}|" + "|".join(padded)).rstrip())

    print(
        f"\nrows: {rows:,}   repeat: {repeat} (median run of each column shown)   "
        f"python: {sys.version.split()[0]}"
    )
    line("stage", headings)
    print(rule)
    for name, values in lines:
        line(name, [fmt(v) for v in values])
    print(rule)
    line("total (wall clock)", [f"{r['wall']:.2f}" for r in columns.values()])
    line("CPU time (user + sys)", [f"{r['cpu']:.2f}" for r in columns.values()])

    bare = columns["bare"]
    platforms = {side: r for side, r in columns.items() if side != "bare"}
    print()
    for side, report in platforms.items():
        print(
            f"ratio {SIDES[side]} / bare: {report['wall'] / bare['wall']:.2f}x wall clock, "
            f"{report['cpu'] / bare['cpu']:.2f}x CPU time"
        )
    print(
        "peak RSS: "
        + ", ".join(f"{SIDES[side]} {r['peak_rss_mb']:.0f} MB" for side, r in columns.items())
    )
    print(
        "inside the steps above, the IO manager (loading inputs, storing outputs, with their "
        "events): "
        + ", ".join(f"{SIDES[side]} {io_manager_seconds(r):.2f}s" for side, r in platforms.items())
    )
    for side, report in columns.items():
        m = report["metrics"]
        decision = f"; {report['decision']}" if "decision" in report else ""
        print(
            f"{SIDES[side]}: chose {report['chosen']}, test AP {m['test_average_precision']:.4f}, "
            f"ROC AUC {m['test_roc_auc']:.4f}{decision}"
        )

    ok = True
    label = max(len(SIDES[side]) for side in platforms)
    print()
    for side, report in platforms.items():
        ratio = report["wall"] / bare["wall"]
        ratio_ok, time_ok = ratio <= MAX_RATIO, report["wall"] < MAX_SECONDS
        ok = ok and ratio_ok and time_ok
        name = f"{SIDES[side]:<{label}}"
        print(
            f"target {name} <= {MAX_RATIO}x bare: {'PASS' if ratio_ok else 'FAIL'} ({ratio:.2f}x)"
        )
        print(
            f"target {name} < {MAX_SECONDS:.0f} s:        {'PASS' if time_ok else 'FAIL'} "
            f"({report['wall']:.2f} s)"
        )
    return ok


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
