"""A whole-graph materialization done once per session, for the tests that only read it.

Materializing the graph trains three variants, evaluates, plots and registers: the most expensive
thing the suite does. Tests that only read what a first run leaves (its metadata, the model store,
the MLflow run and registry) share one; a test that writes copies it into its own tmp dir first.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pytest

from fraud_assets.definitions import ASSETS, CHECKS
from fraud_assets.defs.assets.model import TrainingConfig
from fraud_assets.defs.resources import PromotionRules
from tests.conftest import SMALL_CARDS, SMALL_FRAUD_RATE, SMALL_ROWS, make_resources

#: A deliberately weak model that still clears a lowered floor.
WEAK = TrainingConfig(n_estimators=4, max_depth=1, learning_rate=0.3, variants=["none"])
LOW_FLOOR = PromotionRules(floor_average_precision=0.05, floor_roc_auc=0.6)
#: What a run leaves behind, relative to its state folder.
STATE = ("raw", "models", "mlflow.db", "mlartifacts", "predictions.db")


def materialize(resources: dict[str, Any], **ops: dg.Config) -> dg.ExecuteInProcessResult:
    """The whole graph with its checks; `ops` configures steps (e.g. fraud_model=WEAK)."""
    return dg.materialize(
        [*ASSETS, *CHECKS],
        resources=resources,
        run_config=dg.RunConfig(ops=ops),
        raise_on_error=False,
    )


@dataclass(frozen=True)
class Trained:
    """A first materialization on empty state: its result and the state it left in `root`."""

    root: Path
    result: dg.ExecuteInProcessResult
    promotion_rules: PromotionRules | None
    #: Further `make_resources` arguments of the run (e.g. contract="cards").
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def resources(self) -> dict[str, Any]:
        """The resources the run used: reading through them reads the shared state."""
        return make_resources(self.root, promotion_rules=self.promotion_rules, **self.options)

    def copy_to(self, dest: Path) -> dict[str, Any]:
        """The state copied into `dest` (for a test that writes), and resources on the copy."""
        for name in STATE:
            source = self.root / name
            if source.is_dir():
                shutil.copytree(source, dest / name, symlinks=True)  # `production` is relative
            elif source.exists():
                shutil.copyfile(source, dest / name)
        _move_paths(dest / "mlflow.db", self.root, dest)
        for mlmodel in (dest / "mlartifacts").rglob("MLmodel"):  # it records its artifact_path
            mlmodel.write_text(mlmodel.read_text().replace(str(self.root), str(dest)))
        return make_resources(dest, promotion_rules=self.promotion_rules, **self.options)


def _move_paths(db: Path, old: Path, new: Path) -> None:
    """Point the copied MLflow store's artifact paths and URIs at the copy's own artifacts.

    MLflow records absolute locations (experiment, runs, logged models, model versions); left as
    they are, the copy's new runs would write into the shared folder.
    """
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for column in conn.execute(f'PRAGMA table_info("{table}")').fetchall():
                name, kind = column[1], str(column[2]).upper()
                if "CHAR" in kind or "TEXT" in kind:
                    conn.execute(
                        f'UPDATE "{table}" SET "{name}" = replace("{name}", ?, ?) '
                        f'WHERE instr("{name}", ?) > 0',
                        (str(old), str(new), str(old)),
                    )
        conn.commit()
    finally:
        conn.close()


@contextmanager
def _own_environment(root: Path) -> Iterator[None]:
    """Every default pointed at `root` while a session fixture materializes.

    A session fixture runs inside the first test that asks for it, whose environment points at
    that test's tmp dir; and the MLflow resource sets MLflow's process-wide URIs (and their
    variables), which must not outlive the build.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUD_MODELS_DIR", str(root / "models"))
        mp.setenv("FRAUD_DATA_DIR", str(root / "raw"))
        mp.setenv("FRAUD_MLFLOW_ARTIFACT_ROOT", str(root / "mlartifacts"))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("MLFLOW_REGISTRY_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("DAGSTER_HOME", str(root))
        mp.setenv("FRAUD_SYNTHETIC_ROWS", str(SMALL_ROWS))
        mp.setenv("FRAUD_SYNTHETIC_FRAUD_RATE", str(SMALL_FRAUD_RATE))
        mp.setenv("FRAUD_DATA_CONTRACT", "auto")
        for name, value in zip(("CUSTOMERS", "TERMINALS", "DAYS"), SMALL_CARDS, strict=True):
            mp.setenv(f"FRAUD_CARDS_{name}", str(value))
        mp.setenv("FRAUD_PREDICTION_LOG_URL", f"sqlite:///{root / 'predictions.db'}")
        try:
            yield
        finally:
            mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
            mlflow.set_registry_uri(None)  # type: ignore[arg-type]


def train_once(
    root: Path,
    promotion_rules: PromotionRules | None = None,
    options: dict[str, Any] | None = None,
    **ops: dg.Config,
) -> Trained:
    """Materialize the graph on the empty state in `root` (defaults to the test's resources).

    `options` are further `make_resources` arguments (e.g. contract="cards").
    """
    options = dict(options or {})
    with _own_environment(root):
        resources = make_resources(root, promotion_rules=promotion_rules, **options)
        result = materialize(resources, **ops)
    return Trained(root, result, promotion_rules, options)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The default graph once on empty state (promoted, registered as version 1). Read only."""
    return train_once(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="session")
def trained_cards(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The default graph once on a small synthetic card set (contract cards). Read only."""
    return train_once(tmp_path_factory.mktemp("trained_cards"), options={"contract": "cards"})


@pytest.fixture(scope="session")
def trained_weak(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A weak model (WEAK) promoted over a lowered floor (LOW_FLOOR) on empty state. Read only."""
    return train_once(tmp_path_factory.mktemp("trained_weak"), LOW_FLOOR, fraud_model=WEAK)
