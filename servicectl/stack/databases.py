"""The stack's databases: one per service on one PostgreSQL server, created and dropped here;
and the Redis that holds the API's online feature state, checked and cleared here."""

from __future__ import annotations

from typing import Any

import psycopg2
import redis
from psycopg2 import sql

from servicectl.stack.errors import StackError
from servicectl.stack.state import Stack


def _admin(stack: Stack) -> Any:
    """An autocommit connection to the server's `postgres` database."""
    try:
        conn = psycopg2.connect(stack.database_url("").rsplit("/", 1)[0] + "/postgres")
    except psycopg2.OperationalError as exc:
        raise StackError(
            f"PostgreSQL at {stack.postgres_url} is not reachable ({exc}). Start it, or point "
            "STACK_POSTGRES_URL at one."
        ) from exc
    conn.autocommit = True
    return conn


def create_databases(stack: Stack) -> list[str]:
    """Create each service's database on the PostgreSQL server if it is missing."""
    created = []
    conn = _admin(stack)
    try:
        with conn.cursor() as cur:
            for db in stack.databases:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
                    created.append(db)
    finally:
        conn.close()
    return created


def drop_databases(stack: Stack) -> None:
    conn = _admin(stack)
    try:
        with conn.cursor() as cur:
            for db in stack.databases:
                cur.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
                )
    finally:
        conn.close()


def check_feature_state(stack: Stack) -> None:
    """Fail early, with what to do, when the stack's Redis does not answer."""
    if stack.redis_url == "memory":
        return
    try:
        with redis.Redis.from_url(stack.redis_url, socket_connect_timeout=3) as client:
            client.ping()
    except redis.RedisError as exc:
        raise StackError(
            f"Redis at {stack.redis_url} is not reachable ({exc}). Start it (Debian: apt-get "
            "install redis-server), point STACK_REDIS_URL at one, or set STACK_REDIS_URL=memory "
            "for a state of each API worker's own."
        ) from exc


def clear_feature_state(stack: Stack) -> int:
    """Delete the stack's keys from its Redis (`stack-down --drop-databases`); their count."""
    if stack.redis_url == "memory":
        return 0
    prefix = stack.env()["FRAUD_FEATURE_STATE_PREFIX"]
    deleted = 0
    with redis.Redis.from_url(stack.redis_url, socket_connect_timeout=3) as client:
        # The state's keys are `{prefix}:...` (a hash tag) or `prefix:...`.
        for pattern in (f"{{{prefix}}}:*", f"{prefix}:*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(keys), 1000):
                deleted += int(client.delete(*keys[start : start + 1000]))
    return deleted
