"""`fraud-keys create | list | revoke`: the API keys of the prediction log's database.

Reads `FRAUD_PREDICTION_LOG_URL` (the database the API verifies keys against). The key itself is
printed once, by `create`; nothing can show it again.
"""

from __future__ import annotations

import argparse
import json
import sys

from fraud_core.api_keys import SCOPES, ApiKey, ApiKeyError, create_key, list_keys, revoke_key


def _public(key: ApiKey) -> dict[str, object]:
    return {
        "key_id": key.key_id,
        "name": key.name,
        "scopes": sorted(key.scopes),
        "created_at": key.created_at.isoformat(timespec="seconds"),
        "revoked_at": key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else None,
    }


def main(argv: list[str] | None = None) -> int:
    """`fraud-keys create --name NAME --scope S [--scope S …] [--replace] | list | revoke ID`."""
    from fraud_core.prediction_log.tables import make_engine, resolve_url
    from fraud_core.settings import PlatformSettings

    parser = argparse.ArgumentParser(prog="fraud-keys", description=main.__doc__)
    parser.add_argument(
        "--database",
        default=None,
        help="SQLAlchemy URL of the prediction log (default: FRAUD_PREDICTION_LOG_URL)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--name", required=True, help="who or what uses the key")
    create.add_argument(
        "--scope", action="append", required=True, choices=SCOPES, help="repeat for several"
    )
    create.add_argument("--json", action="store_true", help="print the record and key as JSON")
    create.add_argument(
        "--replace",
        action="store_true",
        help="revoke the active keys of the same name first (rotate a key; make demo's)",
    )
    sub.add_parser("list", help="list the keys (ids, names, scopes; never the secrets)")
    revoke = sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    args = parser.parse_args(argv)
    url = resolve_url(args.database or PlatformSettings().prediction_log_url)
    if url is None:
        print(
            "fraud-keys: the prediction log is off (FRAUD_PREDICTION_LOG_URL): keys live in its "
            "database",
            file=sys.stderr,
        )
        return 2
    engine = make_engine(url)
    try:
        if args.command == "create":
            if args.replace:
                for old in list_keys(engine):
                    if old.active and old.name == args.name.strip():
                        revoke_key(engine, old.key_id)
            record, key = create_key(engine, args.name, args.scope)
            if args.json:
                print(json.dumps({**_public(record), "key": key}))
            else:
                print(f"key id {record.key_id} ({record.name}): {', '.join(sorted(record.scopes))}")
                print(key)
                print("This is the only time the key is shown: store it now.", file=sys.stderr)
        elif args.command == "list":
            print(json.dumps([_public(k) for k in list_keys(engine)], indent=2))
        else:
            print(json.dumps(_public(revoke_key(engine, args.key_id))))
    except ApiKeyError as exc:
        print(f"fraud-keys: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
