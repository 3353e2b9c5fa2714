"""`fraud-models status | history | rollback`: what is in production, and putting a backup back.

Also `python -m fraud_core.cli`. Reads `FRAUD_MODELS_DIR` and, for the alias, `MLFLOW_TRACKING_URI`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _print(data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def main(argv: list[str] | None = None) -> int:
    """`fraud-models status | history | rollback [--to VERSION]`."""
    from fraud_core.bundle import BundleError
    from fraud_core.settings import PlatformSettings
    from fraud_core.store import ModelStore, StoreError

    settings = PlatformSettings()
    parser = argparse.ArgumentParser(prog="fraud-models", description=main.__doc__)
    parser.add_argument("--models-dir", default=str(settings.models_dir), help="models root")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="print what is in production")
    sub.add_parser("history", help="list the backups a rollback can go to")
    rollback = sub.add_parser("rollback", help="put the previous backup back in production")
    rollback.add_argument("--to", dest="to_version", help="a backed-up version (default: previous)")
    rollback.add_argument(
        "--no-registry", action="store_true", help="do not move the MLflow alias 'champion'"
    )
    args = parser.parse_args(argv)
    store = ModelStore(args.models_dir)
    try:
        if args.command == "status":
            # Only the manifest is read here: the model files are loaded once they are verified.
            if store.current_version() is None:
                print(f"no production model in {store.root}", file=sys.stderr)
                return 1
            model = store.load_production(verify=True)
            assert model is not None
            manifest = model.manifest
            _print(
                {
                    "path": str(store.production.resolve()),
                    "verified": True,
                    **{k: manifest.get(k) for k in _STATUS_KEYS},
                    "promotion_reason": manifest.get("promotion", {}).get("reason"),
                }
            )
        elif args.command == "history":
            current = store.current_version()
            for path, manifest in store.list_backups():
                mark = "  (production)" if manifest["model_version"] == current else ""
                ap = manifest.get("metrics", {}).get("average_precision", float("nan"))
                print(f"{manifest['model_version']}  AP={ap:.4f}  {path}{mark}")
        else:
            published = store.rollback(args.to_version)
            print(f"production: {published.previous_version} -> {published.version}")
            if not args.no_registry:
                return _move_alias(store, settings)
    except (StoreError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


_STATUS_KEYS = (
    "model_version",
    "mlflow_run_id",
    "registered_model",
    "data_fingerprint",
    "data_source",
    "threshold",
    "metrics",
    "created_at",
)


def _move_alias(store: Any, settings: Any) -> int:
    from fraud_core import tracking

    manifest = store.load_production(verify=False).manifest
    registered = manifest.get("registered_model") or {}
    if not registered.get("version"):
        print("no MLflow registry entry in the manifest; alias left as it is")
        return 0
    try:
        tracking.set_champion(
            settings.mlflow_tracking_uri, registered["name"], registered["version"]
        )
    except Exception as exc:  # any tracking failure is reported; the files stay rolled back
        print(
            f"error: production rolled back, but the MLflow alias 'champion' was not moved: {exc}",
            file=sys.stderr,
        )
        return 1
    print(f"MLflow: {registered['name']}@champion -> version {registered['version']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
