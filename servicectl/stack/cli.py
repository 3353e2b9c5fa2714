"""`python -m servicectl.stack up | status | start <service> | stop <service> | down`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from servicectl.process import ServiceError, alive
from servicectl.stack.control import down, up
from servicectl.stack.databases import clear_feature_state, drop_databases
from servicectl.stack.health import health
from servicectl.stack.services import AIRFLOW_USER, BY_NAME, DAG_ID, REPO, SERVICES, installed
from servicectl.stack.state import Stack


def print_urls(stack: Stack) -> None:
    password = stack.secrets["airflow_password"]
    rows = [
        ("MLflow", stack.url("mlflow"), f"PostgreSQL {stack.database_url('mlflow')}"),
        ("Dagster", stack.url("dagster-webserver"), f"storage {stack.database_url('dagster')}"),
        (
            "Airflow",
            stack.url("airflow-apiserver"),
            f"login {AIRFLOW_USER}/{password if password == 'airflow' else '(AIRFLOW_PASSWORD)'}",
        ),
        ("Fraud API", stack.url("api") + "/docs", f"models {stack.root / 'models'}"),
    ]
    if "prometheus" in stack.pids:
        rows.append(("Prometheus", stack.url("prometheus"), "alerts: /alerts, scraping the API"))
    print()
    for label, url, note in rows:
        print(f"  {label:10} {url:40} {note}")
    print(f"\n  logs: {stack.logs}    stop: make stack-down")
    print(
        "  API keys (scoring, feedback and admin need one): "
        f"uv run fraud-keys --database {stack.database_url('predictions')} create "
        "--name NAME --scope score --scope feedback"
    )
    print(f"  retrain now: Airflow > {DAG_ID} > Trigger, or Dagster > Jobs > weekly_retrain_job")


def print_status(stack: Stack) -> bool:
    all_ok = True
    for service in SERVICES:
        pid = stack.pids.get(service.name)
        if not installed(service):
            print(f"  {service.name:22} {'-':8} {'':28} not installed (optional)")
            continue
        if not alive(pid):
            ok, why = False, "not running"
        else:
            try:
                ok, why = health(stack, service.name)
            except ServiceError as exc:
                ok, why = False, str(exc)
        all_ok &= ok
        where = stack.url(service.name) if service.name in stack.ports else ""
        print(f"  {service.name:22} {'healthy' if ok else 'DOWN':8} {where:28} {why}")
    return all_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m servicectl.stack",
        description="`make stack`: the production shape as local processes, for machines "
        "without Docker.",
    )
    parser.add_argument(
        "--root", type=Path, default=Path(os.environ.get("STACK_DIR", REPO / ".stack"))
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start every service and wait for health")
    sub.add_parser("status", help="each service's health")
    for verb in ("start", "stop"):
        p = sub.add_parser(verb, help=f"{verb} some services")
        p.add_argument("services", nargs="+", choices=list(BY_NAME))
    p = sub.add_parser("down", help="stop everything")
    p.add_argument("--drop-databases", action="store_true", help="and drop the stack's databases")
    args = parser.parse_args(argv)

    stack = Stack.load_or_new(args.root.resolve())
    try:
        if args.command == "up":
            up(stack)
            print_urls(stack)
        elif args.command == "start":
            up(stack, args.services)
        elif args.command == "stop":
            down(stack, args.services)
        elif args.command == "down":
            down(stack)
            if args.drop_databases:
                drop_databases(stack)
                cleared = clear_feature_state(stack)
                (stack.root / "stack.json").unlink(missing_ok=True)
                print(f"dropped databases: {', '.join(stack.databases)}")
                print(f"cleared the API's feature state: {cleared} Redis keys")
        elif args.command == "status":
            return 0 if print_status(stack) else 1
    except ServiceError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    return 0
