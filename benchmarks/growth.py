"""Growth of the card contract: the platform vs a bare script at 1x, 2x, 4x, 8x the Handbook's size.

    python benchmarks/growth.py [--scales 1 2 4 8] [--dask-workers 1 2] [--sides bare platform]
    python benchmarks/growth.py --scales 0.02 0.05 --dask-workers 1 2      # a quick smoke run
    python benchmarks/growth.py --scales 1 --window-days 28    # the weekly model's 28-day window
    python benchmarks/growth.py --report run1.json run2.json   # the tables of earlier --json runs

Scale k is k Handbook-sized populations of the simulator (`fraud_core.cards.synthetic.generate`,
5,000 customers and 10,000 terminals each, seeds `--seed` + i, ids made unique) over the same 183
days: k x customers, k x terminals, k x transactions (about 1.79 M at 1x) at the same fraud rate
and difficulty (the simulator compromises a fixed number of terminals and customers a day, so
one population k times larger would have a k times lower fraud rate). A scale below 1 is one
population that much smaller. Each size is written once, untimed, as one Parquet file in its own
folder under `--cache` (reruns reuse it). Then, at each size, each in a fresh process:

- bare: `bare_cards_pipeline.py` on that file;
- platform: `_platform_run.py --contract cards` on a new state folder, `make materialize`'s path:
  every day of the data in one `daily_cards_job` run (`labelled_transactions`,
  `card_transactions`: loading and validation, `card_features`), then `weekly_retrain_job` of
  the newest day's week (`transaction_splits` and the chain to `promoted_model`, with its checks).

`--window-days N` (both sides) cuts the splits from the last N days of features, as the weekly
model's `FRAUD_TRAINING_WINDOW_DAYS` does; by default every day of the data (the same work on
both sides as before the weekly chain).

The table: rows, wall clock and peak RSS of each side, their ratios, seconds per million rows
(the linearity check) and test AP, with the 1-minute load average during each run; then seconds
by stage, then the targets (within 1.25x the bare wall clock and 1.5x its peak memory at every
size; the platform's s/Mrow at the largest size no higher than at the smallest).

With `--dask-workers N ...`, the heavy steps at each size on a `distributed.LocalCluster` of N
worker processes of one thread each (`bare_cards_pipeline.py --dask-workers N`, a fresh process
per run): features by `fraud_core.scale.features.compute_features_dask`, the anomaly feature by
`fraud_core.scale.anomaly.fit_anomaly_dask`, the classifier (three variants and the refit) by
`fraud_core.scale.protocol.fit_fraud_model_dask` (`fraud_core.scale.training`), printed as rows/s
per worker beside the bare script's single-process rates of the same stages, with the workers a
weekly retrain on `--capacity-rows` would need within `--capacity-hours` at those rates.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

from _bench_table import print_growth  # noqa: E402
from materialize_vs_script import child_env, run_child  # noqa: E402

#: The Handbook's simulated data set: customers, terminals, days.
HANDBOOK = (5_000, 10_000, 183)
#: The untimed runs that fill the byte-code cache first.
WARMUP_SCALE = 0.02


def populations(scale: float) -> list[tuple[int, int]]:
    """(customers, terminals) of each population of a scale: k full ones, or one smaller."""
    customers, terminals, _ = HANDBOOK
    if scale <= 1:
        return [(max(3, round(customers * scale)), max(2, round(terminals * scale)))]
    whole, part = int(scale), scale - int(scale)
    sizes = [(customers, terminals)] * whole
    if part > 1e-9:
        sizes.append((round(customers * part), round(terminals * part)))
    return sizes


def generate(scale: float, seed: int) -> Any:
    """The card data set of `scale`, canonical columns, in the contract's (time, id) order."""
    import numpy as np
    import pandas as pd

    from fraud_core.cards import definition as d
    from fraud_core.cards.schema import sort_order
    from fraud_core.cards.synthetic import generate as simulate

    parts, rows, customers_before, terminals_before = [], 0, 0, 0
    for i, (customers, terminals) in enumerate(populations(scale)):
        part = simulate(customers, terminals, HANDBOOK[2], seed=seed + i)
        # Ids unique across populations: each population's numbers shifted past the last one's.
        for column, offset in (
            (d.TRANSACTION_ID, rows),
            (d.CUSTOMER_ID, customers_before),
            (d.TERMINAL_ID, terminals_before),
        ):
            part[column] = (part[column].astype(np.int64) + offset).astype(str)
        parts.append(part)
        rows, customers_before = rows + len(part), customers_before + customers
        terminals_before += terminals
    frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    del parts
    order = sort_order(frame[d.TX_US].to_numpy(), frame[d.TRANSACTION_ID].to_numpy())
    return frame.iloc[order][list(d.COLUMNS)].reset_index(drop=True)


def data_dir(cache: Path, scale: float, seed: int) -> tuple[Path, dict[str, Any]]:
    """The folder holding the Parquet file of `scale` (written when missing) and its summary."""
    folder = cache / f"cards-x{scale:g}-seed{seed}"
    summary_path = folder / "summary.json"
    if summary_path.is_file():
        return folder / "data", json.loads(summary_path.read_text())
    start = time.perf_counter()
    frame = generate(scale, seed)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    target = folder / "data" / "transactions.parquet"
    partial = folder / "transactions.parquet.partial"  # outside data/: never read half-written
    frame.to_parquet(partial, index=False)
    partial.replace(target)
    summary = {"rows": len(frame), "frauds": int(frame["is_fraud"].sum()), "scale": scale}
    summary_path.write_text(json.dumps(summary))
    print(
        f"wrote {target} ({summary['rows']:,} rows, {summary['frauds'] / summary['rows']:.2%} "
        f"fraud, {target.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - start:.1f}s",
        flush=True,
    )
    return folder / "data", summary


class LoadWatch:
    """The 1-minute load average, sampled every few seconds while a child process runs."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.samples = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def describe(self) -> str:
        mean = sum(self.samples) / len(self.samples)
        return f"{min(self.samples):.1f}-{max(self.samples):.1f} (mean {mean:.1f})"


def run_side(argv: list[str], json_path: Path, env: dict[str, str]) -> dict[str, Any]:
    """One side in a fresh process (`run_child`), with the load average during it."""
    with LoadWatch() as load:
        report = run_child(argv, json_path, env)
    report["load_average"] = load.describe()
    return report


def side_argv(side: str, data: Path, out: Path, window_days: int | None = None) -> list[str]:
    window = [] if window_days is None else ["--window-days", str(window_days)]
    if side == "bare":
        return [str(HERE / "bare_cards_pipeline.py"), str(data), str(out / "bare_models"), *window]
    platform = [str(HERE / "_platform_run.py"), str(data), str(out / "state")]
    return [*platform, "--contract", "cards", *window]


def warm_up(tmp: Path, args: argparse.Namespace, env: dict[str, str], sides: list[str]) -> None:
    """One untimed run of each side (and of a Dask run) on a small set: fills the byte-code
    cache of `env`, which the workers of a LocalCluster use too."""
    start = time.perf_counter()
    data, _ = data_dir(args.cache, WARMUP_SCALE, args.seed)
    days = args.window_days
    runs = {side: side_argv(side, data, tmp / f"warmup-{side}", days) for side in sides}
    if args.dask_workers:
        runs["dask"] = [*side_argv("bare", data, tmp / "warmup-dask", days), "--dask-workers", "1"]
    for name, argv in runs.items():
        run_child(argv, tmp / f"warmup-{name}.json", env)
    print(f"byte-code cache filled by untimed runs in {time.perf_counter() - start:.1f}s")


#: The stages a Dask run moves to the cluster, with their names in the table.
HEAVY = (("features", "features"), ("anomaly", "anomaly"), ("train", "3 variants + refit"))


def _rates(report: dict[str, Any], rows: int, workers: int) -> str:
    return " | ".join(
        f"{report['stages'][key]:>19.1f} {rows / report['stages'][key] / workers:>14,.0f}"
        for key, _ in HEAVY
    )


def print_dask(
    runs: list[dict[str, Any]], sizes: list[dict[str, Any]], capacity_rows: float, hours: float
) -> None:
    """Seconds and rows/s per worker of the heavy stages, the single-process rates, capacity."""
    bare = {size["scale"]: size["bare"] for size in sizes if size.get("bare") is not None}
    print(
        f"\n{'scale':>6} {'workers':>7} {'rows':>11} | "
        + " | ".join(f"{label:>17} s  rows/s/worker" for _, label in HEAVY)
        + f" | {'test AP':>7} | {'client MB':>9} {'worker MB':>9} | load avg"
    )
    for scale in sorted({run["scale"] for run in runs}):
        if scale in bare:
            single, rows = bare[scale], bare[scale]["rows"]
            print(
                f"{scale:>5g}x {'bare':>7} {rows:>11,} | {_rates(single, rows, 1)} | "
                f"{single['metrics']['test_average_precision']:>7.4f} | "
                f"{single['peak_rss_mb']:>9.0f} {'-':>9} | {single['load_average']}"
            )
        for run in (r for r in runs if r["scale"] == scale):
            workers, rows = run["dask_workers"], run["rows"]
            print(
                f"{scale:>5g}x {workers:>7} {rows:>11,} | {_rates(run, rows, workers)} | "
                f"{run['metrics']['test_average_precision']:>7.4f} | "
                f"{run['peak_rss_mb']:>9.0f} {max(run['worker_peak_rss_mb']):>9.0f} | "
                f"{run['load_average']}"
            )
    largest = max(run["scale"] for run in runs)
    print(
        f"\ncapacity: a weekly retrain on {capacity_rows:,.0f} rows within {hours:g} h "
        f"(features + anomaly + training), at the {largest:g}x runs' rates per worker, "
        "scaled linearly in rows and in workers:"
    )
    for run in (r for r in runs if r["scale"] == largest):
        workers, rows = run["dask_workers"], run["rows"]
        per_row = sum(run["stages"][key] for key, _ in HEAVY) * workers / rows  # worker-s/row
        needed = max(1, math.ceil(capacity_rows * per_row / (hours * 3600)))
        # A worker's memory: what it holds idle, plus its measured growth per row it held.
        idle = max(run["worker_idle_rss_mb"])
        grown = (max(run["worker_peak_rss_mb"]) - idle) / (rows / workers)
        worker_gb = (idle + grown * capacity_rows / needed) / 1024
        client_gb = (run["peak_rss_mb"] - run["client_idle_rss_mb"]) / rows * capacity_rows / 1024
        print(
            f"  {workers} worker(s): {per_row * 1e6:,.1f} worker-s per M rows, "
            f"{capacity_rows * per_row / 3600:,.1f} worker-hours -> {needed} workers, "
            f"{worker_gb:,.1f} GB each; the client, which holds every row here, {client_gb:,.0f} GB"
        )
    if largest in bare:
        single = bare[largest]
        per_row = sum(single["stages"][key] for key, _ in HEAVY) / single["rows"]
        print(f"  one process (bare): {capacity_rows * per_row / 3600:,.1f} hours")


def reprint(paths: list[Path], capacity_rows: float, hours: float, check: bool) -> int:
    """The tables of several earlier runs' --json files together (sizes in order of rows)."""
    runs = [json.loads(path.read_text()) for path in paths]
    sizes = sorted((s for r in runs for s in r["sizes"]), key=lambda s: s["rows"])
    dask = [d for r in runs for d in r["dask"]]
    ok = print_growth(sizes) if sizes else True
    if dask:
        print_dask(dask, sizes, capacity_rows, hours)
    return 1 if check and not ok else 0


def stop(*_: object) -> None:
    """SIGTERM: stop the child and its processes (a LocalCluster's workers), then `finally`."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        child.terminate()
    psutil.wait_procs(children, timeout=10)
    sys.exit(143)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--sides", nargs="+", choices=("bare", "platform"), default=None)
    parser.add_argument("--dask-workers", type=int, nargs="*", default=[])
    parser.add_argument("--seed", type=int, default=42, help="the first population's seed")
    parser.add_argument(
        "--window-days", type=int, help="both sides: splits of the last N days (default: all)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "fraud-growth-data",
        help="where each size's Parquet file is kept between runs",
    )
    parser.add_argument("--capacity-rows", type=float, default=1e9)
    parser.add_argument("--capacity-hours", type=float, default=1.0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", type=Path, help="also write every run's report here")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--report", type=Path, nargs="+", help="only print the tables of earlier --json files"
    )
    args = parser.parse_args(argv)
    if args.report:
        return reprint(args.report, args.capacity_rows, args.capacity_hours, args.check)
    if any(s <= 0 for s in args.scales) or any(w < 1 for w in args.dask_workers):
        parser.error("scales must be positive and worker counts at least 1")
    if args.window_days is not None and args.window_days < 1:
        parser.error("--window-days must be at least 1")
    sides = args.sides or ["bare", "platform"]
    scales = sorted(set(args.scales))
    print(f"load average at start: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    signal.signal(signal.SIGTERM, stop)
    tmp = Path(tempfile.mkdtemp(prefix="fraud-growth-"))
    sizes: list[dict[str, Any]] = []
    dask: list[dict[str, Any]] = []

    def save() -> None:
        """Every report so far to --json: a run stopped part way keeps what it measured."""
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"sizes": sizes, "dask": dask}, indent=2))

    try:
        env = child_env(tmp / "pycache")
        # The single-machine path in every child, whatever this shell points at.
        for name in ("FRAUD_DASK_ADDRESS", "FRAUD_STORAGE_ROOT", "FRAUD_DATA_CONTRACT"):
            env.pop(name, None)
        sets = {scale: data_dir(args.cache, scale, args.seed) for scale in scales}
        warm_up(tmp, args, env, sides)
        for scale, (data, summary) in sets.items():
            size: dict[str, Any] = {**summary, "scale": scale, "load": {}}
            sizes.append(size)
            for side in sides:
                out = tmp / f"x{scale:g}-{side}"
                argv_ = side_argv(side, data, out, args.window_days)
                report = run_side(argv_, tmp / f"x{scale:g}-{side}.json", env)
                size[side], size["load"][side] = report, report["load_average"]
                last = report["stdout"].splitlines()[-1] if report["stdout"] else ""
                print(
                    f"{scale:g}x {side} {report['wall']:.1f}s (load {size['load'][side]}): {last}"
                )
                shutil.rmtree(out, ignore_errors=True)  # models, state: not needed any more
                save()
        ok = print_growth(sizes)
        for scale, (data, _) in sets.items():
            for workers in args.dask_workers:
                name = f"x{scale:g}-dask{workers}"
                bare = side_argv("bare", data, tmp / name, args.window_days)
                argv_ = [*bare, "--dask-workers", str(workers)]
                report = run_side(argv_, tmp / f"{name}.json", env)
                report["scale"] = scale
                dask.append(report)
                last = report["stdout"].splitlines()[-1] if report["stdout"] else ""
                print(f"{scale:g}x dask {workers} worker(s) {report['wall']:.1f}s "
                      f"(load {report['load_average']}): {last}")  # fmt: skip
                shutil.rmtree(tmp / name, ignore_errors=True)
                save()
        if dask:
            print_dask(dask, sizes, args.capacity_rows, args.capacity_hours)
    finally:
        if args.keep:
            print(f"\nkept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
