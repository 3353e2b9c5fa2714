"""The table of `materialize_vs_script.py`: stage rows of each side, ratios, quality, targets."""

from __future__ import annotations

import sys
from typing import Any

MAX_RATIO = 1.25
MAX_SECONDS = 30.0
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
    print_quality(columns)

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


def print_quality(columns: dict[str, dict[str, Any]]) -> None:
    """Test AP and ROC AUC of every side, with the refit and (bare) without it, on the same rows."""
    print()
    for side, report in columns.items():
        m = report["metrics"]
        refit = report.get("refit", "off")
        decision = f"; {report['decision']}" if "decision" in report else ""
        print(
            f"{SIDES[side]}: chose {report['chosen']}, refit {refit} "
            f"({report.get('boosting_rounds', '?')} rounds): "
            f"test AP {m['test_average_precision']:.4f}, ROC AUC {m['test_roc_auc']:.4f}{decision}"
        )
        if "no_refit_test_average_precision" in m:
            print(
                f"{SIDES[side]} without the refit (trained on train only): "
                f"test AP {m['no_refit_test_average_precision']:.4f}, "
                f"ROC AUC {m['no_refit_test_roc_auc']:.4f}"
            )


# --- growth.py: the card contract at several sizes -------------------------------------------

#: Stage rows of growth's table: (stage, bare script stages, platform steps). A check's step key
#: is its asset's name, "_" and the check's name. The names before 7f101ba (`raw_transactions`:
#: loading, its checks: validation) are kept for `growth.py --report` of older runs, whose
#: `transaction_splits` step held the features too.
CARD_STAGES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("imports", ("imports",), ()),
    ("labels sent back", (), ("labelled_transactions",)),
    (
        "load Parquet, conform",
        ("load", "conform"),
        ("card_transactions", "raw_transactions", "raw_transactions_checks"),
    ),
    ("features", ("features",), ("card_features",)),
    ("split", ("split",), ("transaction_splits", "check_transaction_splits_min_frauds")),
    ("IsolationForest", ("anomaly",), ("anomaly_scores",)),
    ("train 3 variants + refit", ("train",), ("fraud_model",)),
    ("  of which XGBoost fits", (), ()),
    (
        "evaluate on test",
        ("evaluate",),
        ("evaluation_report", "check_evaluation_report_quality_floor"),
    ),
    ("save / publish model", ("save",), ("promoted_model",)),
]

#: The targets of the growth issue: the platform's wall clock and peak memory over the bare one's.
GROWTH_MAX_RATIO = 1.25
GROWTH_MAX_MEMORY = 1.5


def card_stage_seconds(report: dict[str, Any], platform: bool) -> dict[str, float]:
    """One side's seconds for each card stage row, then its overhead rows (NaN where none)."""
    out: dict[str, float] = {}
    steps = dict(report.get("steps", {}))
    for name, bare_keys, step_keys in CARD_STAGES:
        if platform:
            keys = [k for k in steps if any(k == n or k.endswith(f"_{n}") for n in step_keys)]
            out[name] = sum(steps.pop(k) for k in keys) if step_keys else NAN
        else:
            out[name] = sum(report["stages"][k] for k in bare_keys) if bare_keys else NAN
    out["imports"] = report["imports"] if platform else report["stages"]["imports"]
    out["  of which XGBoost fits"] = report.get("xgboost_fits", NAN)
    overhead = platform_rows(report) if platform else {}
    out[OTHER] = sum(steps.values()) if platform and steps else NAN
    for name in OVERHEAD[:-2]:
        out[name] = overhead.get(name, NAN)
    out["interpreter start and exit"] = report["wall"] - report["total"]
    return out


def _cell(report: dict[str, Any] | None, key: str, spec: str, scale: float = 1.0) -> str:
    """`report[key] / scale` formatted by `spec` ("8.1f"), or "-" as wide when no report."""
    return f"{'-':>{spec.split('.')[0]}}" if report is None else format(report[key] / scale, spec)


def _ratio(bare: dict[str, Any] | None, plat: dict[str, Any] | None, key: str) -> str:
    return "-" if bare is None or plat is None else f"{plat[key] / bare[key]:.2f}x"


def _ap(report: dict[str, Any] | None) -> str:
    return "-" if report is None else f"{report['metrics']['test_average_precision']:.4f}"


def print_growth(sizes: list[dict[str, Any]]) -> bool:
    """The growth table (one line per size), the per-stage table, the targets; True if all met.

    Each size: {"scale", "rows", "frauds", "bare", "platform"} with the two sides' reports
    (either may be missing), and "load" with each side's load average during its run.
    """
    print(
        f"\n{'scale':>6} {'rows':>11} {'fraud':>6} | {'bare s':>8} {'plat. s':>8} {'ratio':>6} | "
        f"{'bare MB':>8} {'plat. MB':>8} {'ratio':>6} | {'bare s/Mrow':>11} {'plat. s/Mrow':>12} | "
        f"{'bare AP':>7} {'plat. AP':>8} | {'bare CPU s':>10} {'plat. CPU s':>11} {'ratio':>6} | "
        "load avg (bare; platform)"
    )
    for size in sizes:
        bare, plat = size.get("bare"), size.get("platform")
        mrows = size["rows"] / 1e6
        loads = "; ".join(size.get("load", {}).get(side, "-") for side in ("bare", "platform"))
        print(
            f"{size['scale']:>5g}x {size['rows']:>11,} {size['frauds'] / size['rows']:>6.2%} | "
            f"{_cell(bare, 'wall', '8.1f')} {_cell(plat, 'wall', '8.1f')} "
            f"{_ratio(bare, plat, 'wall'):>6} | {_cell(bare, 'peak_rss_mb', '8.0f')} "
            f"{_cell(plat, 'peak_rss_mb', '8.0f')} {_ratio(bare, plat, 'peak_rss_mb'):>6} | "
            f"{_cell(bare, 'wall', '11.2f', mrows)} {_cell(plat, 'wall', '12.2f', mrows)} | "
            f"{_ap(bare):>7} {_ap(plat):>8} | {_cell(bare, 'cpu', '10.1f')} "
            f"{_cell(plat, 'cpu', '11.1f')} {_ratio(bare, plat, 'cpu'):>6} | {loads}"
        )
    print_growth_stages(sizes)
    return print_growth_targets(sizes)


def print_growth_stages(sizes: list[dict[str, Any]]) -> None:
    """Seconds of each stage at each size, bare and platform side by side."""
    columns: list[tuple[str, dict[str, float]]] = []
    for size in sizes:
        for side, platform in (("bare", False), ("platform", True)):
            if size.get(side) is not None:
                label = f"{size['scale']:g}x {'bare' if not platform else 'plat.'}"
                columns.append((label, card_stage_seconds(size[side], platform)))
    if not columns:
        return
    names = [name for name, _, _ in CARD_STAGES] + [OTHER, *OVERHEAD[:-2]]
    names.append("interpreter start and exit")
    width = max(map(len, names)) + 2
    print(f"\n{'seconds by stage':<{width}}" + "".join(f"{c:>12}" for c, _ in columns))
    for name in names:
        print(f"{name:<{width}}" + "".join(f"{fmt(v.get(name, NAN)):>12}" for _, v in columns))
    print(f"{'total (wall clock)':<{width}}" + "".join(f"{v:>12}" for v in _walls(sizes)))


def _walls(sizes: list[dict[str, Any]]) -> list[str]:
    return [
        f"{size[side]['wall']:.2f}"
        for size in sizes
        for side in ("bare", "platform")
        if size.get(side) is not None
    ]


def print_growth_targets(sizes: list[dict[str, Any]]) -> bool:
    """PASS/FAIL of each target at each size, and the growth of cost per row; True if all PASS."""
    ok = True
    print()
    both = [s for s in sizes if s.get("bare") is not None and s.get("platform") is not None]
    for size in both:
        bare, plat = size["bare"], size["platform"]
        time_ratio = plat["wall"] / bare["wall"]
        memory_ratio = plat["peak_rss_mb"] / bare["peak_rss_mb"]
        ok = ok and time_ratio <= GROWTH_MAX_RATIO and memory_ratio <= GROWTH_MAX_MEMORY
        print(
            f"target {size['scale']:g}x: platform <= {GROWTH_MAX_RATIO}x bare wall clock: "
            f"{'PASS' if time_ratio <= GROWTH_MAX_RATIO else 'FAIL'} ({time_ratio:.2f}x); "
            f"<= {GROWTH_MAX_MEMORY}x its peak memory: "
            f"{'PASS' if memory_ratio <= GROWTH_MAX_MEMORY else 'FAIL'} ({memory_ratio:.2f}x)"
        )
    for side in ("bare", "platform"):
        runs = [s for s in sizes if s.get(side) is not None]
        if len(runs) < 2:
            continue
        small, big = min(runs, key=lambda s: s["rows"]), max(runs, key=lambda s: s["rows"])
        per_row = [s[side]["wall"] / s["rows"] * 1e6 for s in (small, big)]
        linear = per_row[1] <= per_row[0]
        ok = ok and (linear or side != "platform")
        print(
            f"target linear ({side}): s/Mrow at {big['scale']:g}x <= at {small['scale']:g}x: "
            f"{'PASS' if linear else 'FAIL'} ({per_row[1]:.2f} vs {per_row[0]:.2f} s/Mrow, "
            f"{per_row[1] / per_row[0]:.2f}x)"
        )
    return ok
