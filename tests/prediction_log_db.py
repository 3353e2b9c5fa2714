"""Real ways to stall or break the prediction log's database, for the tests of its writer."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
from sqlalchemy.engine import make_url


@contextmanager
def writer_blocked(url: str) -> Iterator[None]:
    """Hold a lock that makes inserts into `predictions` wait until the block ends."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # Not tied to this thread: a test may end the block from a timer.
        conn = sqlite3.connect(str(parsed.database), isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
    else:
        pg = psycopg2.connect(url)
        with pg.cursor() as cur:
            cur.execute("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            pg.rollback()
            pg.close()


@contextmanager
def database_down(url: str) -> Iterator[None]:
    """Make every write fail: SQLite locked past the busy timeout; PostgreSQL refusing connections.

    On SQLite the engine under test must have a short busy timeout.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        with writer_blocked(url):
            yield
        return
    name = parsed.database
    admin = psycopg2.connect(url.replace(f"/{name}", "/postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
    try:
        yield
    finally:
        with admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        admin.close()
