"""The promotion rule, and the `fraud-models` command line."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fraud_core import tracking
from fraud_core.bundle import FraudModel
from fraud_core.cli import main
from fraud_core.evaluate import ThresholdPolicy, choose_threshold, metrics
from fraud_core.promote import PromotionPolicy, decide
from fraud_core.store import ModelStore

POLICY = PromotionPolicy()
MakeModel = Callable[..., FraudModel]


def measured(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    policy = ThresholdPolicy()
    return metrics(y, scores, choose_threshold(y, scores, policy), policy)


def labels(seed: int, n: int = 3_000, frauds: int = 60) -> tuple[np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=np.int8)
    y[rng.choice(n, frauds, replace=False)] = 1
    return y, rng


@pytest.fixture(scope="module")
def rows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test labels, a strong scorer and a deliberately weak, noisy one on the same rows."""
    y, rng = labels(seed=0)
    strong = y * 4.0 + rng.normal(0, 1, len(y))
    weak = y * 1.5 + rng.normal(0, 1, len(y))
    return y, strong, weak


def test_below_the_floor_is_not_promoted(rows: tuple[np.ndarray, ...]) -> None:
    y, _, weak = rows
    challenger = measured(y, weak)
    assert challenger["average_precision"] < POLICY.floor_average_precision

    decision = decide(y, weak, challenger, None, None, POLICY)

    assert not decision.promote
    assert "floor" in decision.reason
    assert "average_precision" in decision.reason


def test_a_low_roc_auc_alone_is_below_the_floor(rows: tuple[np.ndarray, ...]) -> None:
    y, strong, _ = rows
    challenger = {**measured(y, strong), "roc_auc": 0.85}
    decision = decide(y, strong, challenger, None, None, POLICY)
    assert not decision.promote
    assert "roc_auc" in decision.reason
    assert "average_precision" not in decision.reason


def test_the_first_model_is_promoted_when_it_clears_the_floor(
    rows: tuple[np.ndarray, ...],
) -> None:
    y, strong, _ = rows
    decision = decide(y, strong, measured(y, strong), None, None, POLICY)
    assert decision.promote
    assert "first model" in decision.reason
    assert decision.champion is None


def test_the_cards_contract_has_its_own_floor(rows: tuple[np.ndarray, ...]) -> None:
    """ROC AUC 0.85 is below Kaggle's floor (0.90) but above the cards floor (0.80)."""
    y, strong, _ = rows
    challenger = {**measured(y, strong), "roc_auc": 0.85}
    assert POLICY.floors("cards") == (0.50, 0.80)
    assert decide(y, strong, challenger, None, None, POLICY, contract="cards").promote
    weaker = {**challenger, "roc_auc": 0.79}
    assert not decide(y, strong, weaker, None, None, POLICY, contract="cards").promote


def test_a_champion_that_cannot_be_compared_is_recorded_with_the_reason(
    rows: tuple[np.ndarray, ...],
) -> None:
    y, strong, _ = rows
    why = "production v1 is a model of the kaggle contract, which cannot score these rows"
    decision = decide(
        y, strong, measured(y, strong), None, None, POLICY, "v1", no_champion_reason=why
    )
    assert (
        decision.promote
        and decision.reason == f"first model: {why} and the challenger clears the floor"
    )
    assert decision.champion_version == "v1" and decision.champion is None


def test_a_clearly_better_challenger_is_promoted(rows: tuple[np.ndarray, ...]) -> None:
    y, strong, weak = rows
    decision = decide(
        y, strong, measured(y, strong), weak, measured(y, weak), POLICY, champion_version="v1"
    )
    assert decision.promote
    assert decision.reason.startswith("promoted")
    assert decision.confidence is not None and decision.confidence >= 0.9
    assert decision.ap_gain is not None and decision.ap_gain > POLICY.margin
    assert decision.gain_interval is not None and decision.gain_interval[0] > 0
    assert decision.champion_version == "v1"
    json.dumps(decision.as_dict())


def test_an_identical_model_is_not_promoted(rows: tuple[np.ndarray, ...]) -> None:
    y, strong, _ = rows
    m = measured(y, strong)
    decision = decide(y, strong, m, strong.copy(), dict(m), POLICY, champion_version="v1")
    assert not decision.promote
    assert decision.ap_gain == 0.0
    assert "not above the margin" in decision.reason
    assert "v1" in decision.reason


def test_a_gain_from_one_lucky_fraud_is_not_significant() -> None:
    # The challenger is the champion with a single fraud moved to the top: AP rises, but the
    # gain is only there in the resamples that happen to draw that one row.
    y, rng = labels(seed=0, frauds=30)
    champion = y * 3.0 + rng.normal(0, 1, len(y))
    frauds = np.flatnonzero(y == 1)
    challenger = champion.copy()
    challenger[frauds[np.argmin(champion[frauds])]] = champion.max() + 1
    challenger_metrics, champion_metrics = measured(y, challenger), measured(y, champion)
    gain = challenger_metrics["average_precision"] - champion_metrics["average_precision"]
    assert gain > POLICY.margin

    decision = decide(y, challenger, challenger_metrics, champion, champion_metrics, POLICY)

    assert not decision.promote
    assert "not significant" in decision.reason
    assert decision.confidence is not None and decision.confidence < POLICY.confidence


def test_a_guard_regression_blocks_promotion() -> None:
    # The champion ranks every fraud fairly high; the challenger puts most frauds at the very
    # top (better AP) but buries a few among the legitimate rows (worse ROC AUC).
    y, rng = labels(seed=0)
    frauds = np.flatnonzero(y == 1)
    champion = rng.normal(0, 1, len(y))
    champion[frauds] = rng.normal(2.5, 0.5, len(frauds))
    challenger = rng.normal(0, 1, len(y))
    challenger[frauds] = 10.0 + rng.random(len(frauds))
    challenger[frauds[:4]] = rng.normal(-0.3, 0.1, 4)
    challenger_metrics, champion_metrics = measured(y, challenger), measured(y, champion)
    assert not POLICY.floor_failures(challenger_metrics)
    assert challenger_metrics["average_precision"] > champion_metrics["average_precision"] + 0.05
    assert champion_metrics["roc_auc"] - challenger_metrics["roc_auc"] > POLICY.guards["roc_auc"]

    decision = decide(y, challenger, challenger_metrics, champion, champion_metrics, POLICY)

    assert not decision.promote
    assert decision.confidence is not None and decision.confidence >= POLICY.confidence
    assert "guard roc_auc" in decision.reason


def test_scores_on_different_rows_raise(rows: tuple[np.ndarray, ...]) -> None:
    y, strong, weak = rows
    with pytest.raises(ValueError, match="same rows"):
        decide(y, strong, measured(y, strong), weak[:-1], measured(y, weak), POLICY)


# -- the command line ---------------------------------------------------------------------------

V1, V2 = "20250101T000000Z-run1", "20250102T000000Z-run2"


def publish(
    store: ModelStore,
    make_fraud_model: MakeModel,
    version: str,
    seed: int,
    **extra: object,
) -> None:
    manifest = {"model_version": version, "metrics": {"average_precision": 0.5 + seed / 10}}
    store.publish(store.stage(make_fraud_model(seed=seed), {**manifest, **extra}))


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "cli-models"


def test_status_with_nothing_published_fails(
    models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--models-dir", str(models_dir), "status"]) == 1
    assert "no production model" in capsys.readouterr().err


def test_status_prints_the_production_manifest(
    models_dir: Path, make_fraud_model: MakeModel, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(ModelStore(models_dir), make_fraud_model, V1, seed=1, data_fingerprint="abc")

    assert main(["--models-dir", str(models_dir), "status"]) == 0

    status = json.loads(capsys.readouterr().out)
    assert status["model_version"] == V1
    assert status["verified"] is True
    assert status["data_fingerprint"] == "abc"
    assert status["metrics"] == {"average_precision": 0.6}
    assert Path(status["path"]) == (models_dir / "releases" / V1).resolve()


def test_status_reads_the_models_dir_from_the_environment(
    make_fraud_model: MakeModel, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(ModelStore(os.environ["FRAUD_MODELS_DIR"]), make_fraud_model, V1, seed=1)
    assert main(["status"]) == 0
    assert json.loads(capsys.readouterr().out)["model_version"] == V1


def test_status_of_a_damaged_production_bundle_fails_cleanly(
    models_dir: Path, make_fraud_model: MakeModel, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ModelStore(models_dir)
    publish(store, make_fraud_model, V1, seed=1)
    (store.production / "anomaly.npz").write_bytes(b"not a forest")

    assert main(["--models-dir", str(models_dir), "status"]) == 1

    err = capsys.readouterr().err
    assert err.startswith("error:")
    assert "anomaly.npz" in err


def test_history_lists_the_backups(
    models_dir: Path, make_fraud_model: MakeModel, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ModelStore(models_dir)
    publish(store, make_fraud_model, V1, seed=1)
    publish(store, make_fraud_model, V2, seed=2)

    assert main(["--models-dir", str(models_dir), "history"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{V1}  AP=0.6000  {store.backups}")
    assert "(production)" not in lines[0]


def test_rollback_without_registry_switches_production_back(
    models_dir: Path, make_fraud_model: MakeModel, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ModelStore(models_dir)
    publish(store, make_fraud_model, V1, seed=1)
    publish(store, make_fraud_model, V2, seed=2)

    assert main(["--models-dir", str(models_dir), "rollback", "--no-registry"]) == 0

    assert f"production: {V2} -> {V1}" in capsys.readouterr().out
    assert store.current_version() == V1
    model = store.load_production(verify=True)
    assert model is not None and model.version == V1
    # History now marks the backup that is in production again.
    assert main(["--models-dir", str(models_dir), "history"]) == 0
    assert "(production)" in capsys.readouterr().out


def test_rollback_with_nothing_to_go_back_to_fails_cleanly(
    models_dir: Path, make_fraud_model: MakeModel, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(ModelStore(models_dir), make_fraud_model, V1, seed=1)
    assert main(["--models-dir", str(models_dir), "rollback", "--no-registry"]) == 1
    assert capsys.readouterr().err.startswith("error: no backup older")
    assert ModelStore(models_dir).current_version() == V1


def test_rollback_moves_the_champion_alias_in_the_registry(
    models_dir: Path, tmp_path: Path, make_fraud_model: MakeModel, mlflow_db: str
) -> None:
    uri = os.environ["MLFLOW_TRACKING_URI"]  # where the CLI looks; mlflow_db created it
    assert uri == mlflow_db
    client = tracking.client(uri)
    client.create_registered_model("fraud-detector")
    (tmp_path / "artifact").mkdir()
    versions = [
        client.create_model_version("fraud-detector", str(tmp_path / "artifact")).version
        for _ in range(2)
    ]
    store = ModelStore(models_dir)
    for version, seed, registered in zip((V1, V2), (1, 2), versions, strict=True):
        entry = {"name": "fraud-detector", "version": str(registered)}
        publish(store, make_fraud_model, version, seed=seed, registered_model=entry)
    tracking.set_champion(uri, "fraud-detector", str(versions[1]))

    assert main(["--models-dir", str(models_dir), "rollback"]) == 0

    assert store.current_version() == V1
    champion = client.get_model_version_by_alias("fraud-detector", tracking.CHAMPION)
    assert str(champion.version) == str(versions[0])
