"""Resources: where data comes from, where models go, and MLflow tracking.

MLflow goes through our own `MlflowTracking` resource. We do not use `dagster-mlflow`'s
`mlflow_tracking`: it is a legacy function resource that opens an MLflow run in process-global
state when a step starts and relies on the `end_mlflow_on_run_finished` job hook to close it, which
`dagster asset materialize` (no job) never calls, so runs stay RUNNING; and it offers nothing for
the registry. This resource keeps its useful convention (the Dagster run id as an MLflow tag) and
passes the MLflow run id explicitly from `fraud_model` to the assets after it.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import mlflow
from pydantic import Field

import fraud_notify
from fraud_assets.defs import constants
from fraud_assets.defs.io_managers import ParquetIOManager
from fraud_core import tracking
from fraud_core.cards import schema as card_schema
from fraud_core.contracts import CARDS, CONTRACTS, KAGGLE
from fraud_core.data import LoadedData, data_files, header, load_transactions
from fraud_core.promote import PromotionPolicy
from fraud_core.store import ModelStore

if TYPE_CHECKING:
    import sqlalchemy as sa

    from fraud_core.drift import DriftReport


class DataSource(dg.ConfigurableResource):
    """Transactions from `data_dir` (`*.csv`, `*.parquet`), or a synthetic set when it is empty.

    The data contract (Kaggle's fields or raw card transactions) comes from the files' columns,
    or from `contract` (`FRAUD_DATA_CONTRACT`: auto, kaggle or cards); with no file, `cards`
    gives the synthetic card set of `cards_*` size (the Handbook's simulator), else Kaggle's.
    """

    data_dir: str
    contract: str = "auto"
    synthetic_rows: int = 284_807
    synthetic_seed: int = 42
    synthetic_fraud_rate: float = 492 / 284_807
    cards_customers: int = 5_000
    cards_terminals: int = 10_000
    cards_days: int = 183
    #: The card simulator's seed (None: `synthetic_seed`).
    cards_seed: int | None = None

    def load(self) -> LoadedData:
        return load_transactions(
            Path(self.data_dir),
            contract=self.contract,
            synthetic_rows=self.synthetic_rows,
            seed=self.synthetic_seed,
            fraud_rate=self.synthetic_fraud_rate,
            cards_customers=self.cards_customers,
            cards_terminals=self.cards_terminals,
            cards_days=self.cards_days,
            cards_seed=self.cards_seed,
        )

    def current_contract(self) -> str:
        """The contract `load` will use, from the files' headers alone (no rows read)."""
        if self.contract in CONTRACTS:
            return self.contract
        files = data_files(Path(self.data_dir))
        found = {card_schema.contract_of(header(path)) for path in files}
        # A folder that mixes contracts (or holds neither) fails `load` with the reason.
        return CARDS if found == {CARDS} else KAGGLE


class ComputeEngine(dg.ConfigurableResource):
    """Where the heavy steps run: this process, or the Dask cluster at `dask_address`.

    `FRAUD_DASK_ADDRESS` unset: the single-machine path. `tcp://host:8786`: on that
    `dask.distributed` cluster, the card features (hash-partitioned by customer and by terminal,
    values equal to the single-machine ones), the anomaly forest (fitted on a sample, scored in
    parallel) and the classifier (`xgboost.dask`); the bundle is the same.
    """

    dask_address: str | None = None

    def engine(self) -> str:
        """What the metadata says: `local`, or `dask <address>`."""
        return f"dask {self.dask_address}" if self.dask_address else "local"

    @contextmanager
    def dask_client(self) -> Iterator[Any]:
        """A client of the cluster (None on the single-machine path), closed after."""
        if not self.dask_address:
            yield None
            return
        from fraud_core.scale.cluster import ClusterUnavailable, connect

        try:
            client = connect(self.dask_address)
        except ClusterUnavailable as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        try:
            yield client
        finally:
            client.close()


class ModelStoreResource(dg.ConfigurableResource):
    """The on-disk model store: staging, releases, production symlink, backups."""

    models_dir: str
    keep_backups: int = 10

    def store(self) -> ModelStore:
        return ModelStore(self.models_dir, keep_backups=self.keep_backups)


class PromotionRules(dg.ConfigurableResource):
    """The promotion rule, shared by the quality-floor check and `promoted_model`."""

    margin: float = constants.PROMOTION.margin
    confidence: float = constants.PROMOTION.confidence
    n_resamples: int = constants.PROMOTION.n_resamples
    floor_average_precision: float = constants.PROMOTION.floor_average_precision
    floor_roc_auc: float = constants.PROMOTION.floor_roc_auc
    cards_floor_average_precision: float = constants.PROMOTION.cards_floor_average_precision
    cards_floor_roc_auc: float = constants.PROMOTION.cards_floor_roc_auc
    guards: dict[str, float] = Field(default_factory=lambda: dict(constants.PROMOTION.guards))

    def policy(self) -> PromotionPolicy:
        return PromotionPolicy(
            margin=self.margin,
            confidence=self.confidence,
            n_resamples=self.n_resamples,
            floor_average_precision=self.floor_average_precision,
            floor_roc_auc=self.floor_roc_auc,
            cards_floor_average_precision=self.cards_floor_average_precision,
            cards_floor_roc_auc=self.cards_floor_roc_auc,
            guards=dict(self.guards),
        )


class MlflowTracking(dg.ConfigurableResource):
    """MLflow tracking and registry for the training assets."""

    tracking_uri: str
    experiment_name: str = "fraud-detection"
    registered_model_name: str = "fraud-detector"
    artifact_root: str | None = None
    ui_url: str = "http://127.0.0.1:5000"

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Before any step that tracks does its work: a stopped server fails the run in seconds,
        # naming the server, instead of after training and minutes of MLflow's retries.
        try:
            tracking.check_server(self.tracking_uri)
        except tracking.TrackingServerUnavailable as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc

    def _experiment_id(self) -> str:
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        root = Path(self.artifact_root) if self.artifact_root else None
        experiment_id = tracking.ensure_experiment(
            tracking.client(self.tracking_uri),
            self.experiment_name,
            root if tracking.is_local(self.tracking_uri) else None,
        )
        mlflow.set_experiment(experiment_id=experiment_id)
        return experiment_id

    @contextmanager
    def run(
        self,
        context: dg.AssetExecutionContext,
        run_id: str | None = None,
        run_name: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> Iterator[mlflow.ActiveRun]:
        """Start (or, with `run_id`, resume) an MLflow run tagged with the Dagster run."""
        experiment_id = self._experiment_id()
        while mlflow.active_run() is not None:  # a run left open by a failed step in-process
            mlflow.end_run("FAILED")
        # The Dagster run that created the MLflow run keeps its tag; later stages (evaluation,
        # promotion, each its own Dagster run under Airflow) only add their own tags.
        all_tags = {} if run_id else {"dagster_run_id": context.run_id}
        all_tags.update({"dagster_job": context.job_name, **(tags or {})})
        with mlflow.start_run(
            run_id=run_id, run_name=run_name, experiment_id=experiment_id, tags=all_tags
        ) as active:
            yield active

    def run_url(self, run_id: str) -> str:
        run = tracking.client(self.tracking_uri).get_run(run_id)
        return tracking.run_url(self.ui_url, run.info.experiment_id, run_id)

    def register_and_tag(self, model_uri: str, run_id: str, tags: dict[str, str]) -> str:
        return tracking.register(
            self.tracking_uri, self.registered_model_name, model_uri, run_id, tags
        )

    def set_champion(self, version: str) -> None:
        tracking.set_champion(self.tracking_uri, self.registered_model_name, version)

    def set_run_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        mlflow_client = tracking.client(self.tracking_uri)
        for key, value in tags.items():
            mlflow_client.set_tag(run_id, key, str(value)[:5000])


class PredictionLogResource(dg.ConfigurableResource):
    """The API's prediction log: labelled rows for training, recent predictions for drift."""

    #: A SQLAlchemy URL (sqlite:///FILE or postgresql://); None or "off": no log.
    url: str | None = None

    def engine(self) -> "sa.Engine | None":
        from fraud_core.prediction_log.tables import make_engine, resolve_url

        url = resolve_url(self.url)
        return make_engine(url) if url else None

    def where(self) -> str:
        """The URL without its password, for metadata."""
        import sqlalchemy as sa

        url = self.url or "off"
        return url if url == "off" else sa.make_url(url).render_as_string(hide_password=True)


class Notifier(dg.ConfigurableResource):
    """Slack and e-mail, the same channels (FRAUD_SLACK_*, FRAUD_SMTP_*) as the weekly retrain."""

    def drift_alert(self, report: "DriftReport", run_id: str) -> None:
        settings = fraud_notify.NotifySettings()
        worst = report.table[report.table["status"] != "ok"].head(8)
        lines = [
            f"Drift {report.status.upper()}: {report.current_rows} recent predictions against "
            f"{report.reference_rows} training rows (Dagster run {run_id}).",
            "",
            *(
                f"- {r['feature']}: PSI {r['psi']:.3f}, KS {r['ks_statistic']:.3f} ({r['status']})"
                for _, r in worst.iterrows()
            ),
        ]
        if report.status == "fail":
            lines += ["", "The drift sensor, when switched on, launches weekly_retrain_job."]
        message = fraud_notify.Notification(
            subject=f"[fraud] prediction drift {report.status}: "
            + ", ".join(report.worst_features[:5]),
            text="\n".join(lines),
        )
        fraud_notify.deliver(
            message,
            fraud_notify.slack_from_settings(settings),
            fraud_notify.smtp_from_settings(settings),
        )


def default_resources() -> dict[str, Any]:
    """Resources from the environment (see `.env.example`), with the embedded defaults."""
    from fraud_core.settings import PlatformSettings

    settings = PlatformSettings()
    return {
        "data_source": DataSource(
            data_dir=str(settings.data_dir),
            contract=settings.data_contract,
            synthetic_rows=settings.synthetic_rows,
            synthetic_seed=settings.synthetic_seed,
            synthetic_fraud_rate=settings.synthetic_fraud_rate,
            cards_customers=settings.cards_customers,
            cards_terminals=settings.cards_terminals,
            cards_days=settings.cards_days,
            cards_seed=settings.cards_seed,
        ),
        "model_store": ModelStoreResource(models_dir=str(settings.models_dir)),
        "io_manager": ParquetIOManager(root=settings.storage()),
        "compute": ComputeEngine(dask_address=settings.dask_address),
        "promotion_rules": PromotionRules(),
        "prediction_log": PredictionLogResource(url=settings.prediction_log_url),
        "notifier": Notifier(),
        "mlflow_tracking": MlflowTracking(
            tracking_uri=settings.mlflow_tracking_uri,
            experiment_name=settings.mlflow_experiment,
            registered_model_name=settings.registered_model,
            artifact_root=str(settings.mlflow_artifact_root),
            ui_url=settings.mlflow_ui_url,
        ),
    }
