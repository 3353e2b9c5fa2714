"""The stack's databases: one per service on one PostgreSQL server, created and dropped here."""

from __future__ import annotations

from typing import Any

import psycopg2
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
