"""Files built once per test run and shared by its xdist workers: an empty, migrated MLflow DB.

Creating an MLflow SQLite database runs MLflow's whole migration history (seconds, and tens of
seconds on a busy machine); every test that materializes the graph used to pay it. A copy of one
built per run is the same database, in milliseconds.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

_root: Path | None = None


def set_root(path: Path) -> None:
    """Where this run keeps what it builds once (tests/conftest.py sets it per session)."""
    global _root
    path.mkdir(parents=True, exist_ok=True)
    _root = path


def run_scoped_dir(basetemp: Path) -> Path:
    """A folder every worker of this run shares: under xdist, beside the workers' basetemps."""
    return (basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp) / "run-cache"


def built_once(name: str, build: Callable[[Path], None]) -> Path | None:
    """`root/name`, built by `build(path)` by the first worker to ask; None outside a run."""
    if _root is None:
        return None
    target = _root / name
    with (_root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the others wait here while the first one builds
        if not target.exists():
            partial = _root / f"{name}.partial"
            partial.unlink(missing_ok=True)
            build(partial)
            os.replace(partial, target)  # whole or absent: a failed build is tried again
    return target


def _migrated_mlflow_db(path: Path) -> None:
    from mlflow.tracking import MlflowClient

    scratch = path.with_name(f"{path.name}.scratch")
    scratch.unlink(missing_ok=True)
    MlflowClient(f"sqlite:///{scratch}").search_experiments()  # creates and migrates it
    # SQLite's backup API: a consistent copy whatever MLflow's engine still holds open.
    source, copy = sqlite3.connect(scratch), sqlite3.connect(path)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()


def seed_mlflow_db(path: Path) -> None:
    """Put an empty, migrated MLflow SQLite database at `path`, unless a file is there."""
    if path.exists():
        return
    template = built_once("mlflow.db", _migrated_mlflow_db)
    if template is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, path)
