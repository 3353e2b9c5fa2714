"""The model store: publishing, backups, crash safety and rollback."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fraud_core import store as store_module
from fraud_core import synthetic
from fraud_core.bundle import CLASSIFIER, BundleError, FraudModel, save_bundle
from fraud_core.data import as_arrays
from fraud_core.store import ModelStore, Published, StoreError

V1, V2, V3, V4 = (f"2025010{i}T000000Z-run{i}" for i in range(1, 5))
#: Each version is a different model, so the probabilities tell which one is served.
SEEDS = {V1: 1, V2: 2, V3: 3, V4: 4}

MakeModel = Callable[..., FraudModel]


class Crash(Exception):
    """Stands for the process dying at that point."""


@pytest.fixture(scope="module")
def probe() -> np.ndarray:
    x, _ = as_arrays(synthetic.generate(n_rows=200, fraud_rate=0.05, seed=33))
    return x


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def manifest(version: str) -> dict[str, object]:
    return {"model_version": version, "metrics": {"average_precision": 0.8}}


def stage(store: ModelStore, make_fraud_model: MakeModel, version: str) -> Path:
    return store.stage(make_fraud_model(seed=SEEDS[version]), manifest(version))


def publish(store: ModelStore, make_fraud_model: MakeModel, version: str) -> Published:
    return store.publish(stage(store, make_fraud_model, version))


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def assert_serving(
    store: ModelStore, version: str, make_fraud_model: MakeModel, probe: np.ndarray
) -> None:
    assert store.current_version() == version
    model = store.load_production(verify=True)
    assert model is not None
    assert model.version == version
    expected = make_fraud_model(seed=SEEDS[version]).predict_proba(probe)
    np.testing.assert_array_equal(model.predict_proba(probe), expected)


def backup_versions(store: ModelStore) -> list[str]:
    return [m["model_version"] for _, m in store.list_backups()]


def test_the_seeds_give_models_that_predict_differently(
    make_fraud_model: MakeModel, probe: np.ndarray
) -> None:
    a = make_fraud_model(seed=SEEDS[V1]).predict_proba(probe)
    b = make_fraud_model(seed=SEEDS[V2]).predict_proba(probe)
    assert not np.allclose(a, b)


def test_an_empty_store_has_no_production(store: ModelStore) -> None:
    assert store.current_version() is None
    assert store.load_production() is None
    assert store.list_backups() == []


def test_first_publish_links_production_to_its_release(
    store: ModelStore, make_fraud_model: MakeModel, probe: np.ndarray
) -> None:
    staged = stage(store, make_fraud_model, V1)
    assert [p.name for p in store.staging.iterdir()] == [V1]

    published = store.publish(staged)

    assert published == Published(V1, store.releases / V1, None, None)
    assert store.production.is_symlink()
    assert store.production.resolve() == (store.releases / V1).resolve()
    assert not staged.exists()
    assert_serving(store, V1, make_fraud_model, probe)


def test_second_publish_backs_up_the_first(
    store: ModelStore, make_fraud_model: MakeModel, probe: np.ndarray
) -> None:
    publish(store, make_fraud_model, V1)
    published = publish(store, make_fraud_model, V2)

    assert published.previous_version == V1
    assert published.backup is not None
    assert published.backup.parent == store.backups
    assert re.fullmatch(r"\d{8}T\d{12}Z__" + re.escape(V1), published.backup.name)
    assert backup_versions(store) == [V1]
    assert files(published.backup) == files(store.releases / V1)
    assert_serving(store, V2, make_fraud_model, probe)


def _raise(*args: object, **kwargs: object) -> None:
    raise Crash("injected")


def fail_before(method: str) -> Callable[[pytest.MonkeyPatch], None]:
    def install(monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(ModelStore, method, _raise)

    return install


def fail_after(method: str) -> Callable[[pytest.MonkeyPatch], None]:
    """The step does its work, then the process dies before the next one."""

    def install(monkeypatch: pytest.MonkeyPatch) -> None:
        real = getattr(ModelStore, method)

        def step(self: ModelStore, *args: object) -> None:
            real(self, *args)
            raise Crash("injected")

        monkeypatch.setattr(ModelStore, method, step)

    return install


def fail_rename_in_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ModelStore._switch

    def switch(self: ModelStore, release: Path) -> None:
        with monkeypatch.context() as patch:
            patch.setattr(store_module.os, "replace", _raise)
            real(self, release)

    monkeypatch.setattr(ModelStore, "_switch", switch)


@pytest.mark.parametrize(
    "inject",
    [
        fail_before("_backup_current"),
        fail_after("_backup_current"),
        fail_before("_release"),
        fail_after("_release"),
        fail_before("_switch"),
        fail_rename_in_switch,
    ],
    ids=[
        "backup",
        "after-backup",
        "release",
        "after-release",
        "switch",
        "rename-in-switch",
    ],
)
def test_a_crash_at_any_step_leaves_the_old_model_serving(
    store: ModelStore,
    make_fraud_model: MakeModel,
    probe: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
    inject: Callable[[pytest.MonkeyPatch], None],
) -> None:
    publish(store, make_fraud_model, V1)
    before = files(store.production)
    staged = stage(store, make_fraud_model, V2)

    with monkeypatch.context() as patch:
        inject(patch)
        with pytest.raises(Crash):
            store.publish(staged)

    assert store.production.is_symlink()
    assert files(store.production) == before
    assert_serving(store, V1, make_fraud_model, probe)
    # The store is not wedged: the next publication goes through.
    publish(store, make_fraud_model, V3)
    assert_serving(store, V3, make_fraud_model, probe)


def test_a_corrupt_staged_bundle_is_never_published(
    store: ModelStore, make_fraud_model: MakeModel, probe: np.ndarray
) -> None:
    publish(store, make_fraud_model, V1)
    before = files(store.production)
    staged = stage(store, make_fraud_model, V2)
    classifier = staged / CLASSIFIER
    data = bytearray(classifier.read_bytes())
    data[100] ^= 0x01
    classifier.write_bytes(bytes(data))

    with pytest.raises(BundleError, match=CLASSIFIER):
        store.publish(staged)

    assert files(store.production) == before
    assert_serving(store, V1, make_fraud_model, probe)
    assert not (store.releases / V2).exists()
    assert store.list_backups() == []


def test_rollback_returns_to_the_previous_version(
    store: ModelStore, make_fraud_model: MakeModel, probe: np.ndarray
) -> None:
    publish(store, make_fraud_model, V1)
    publish(store, make_fraud_model, V2)

    rolled = store.rollback()

    assert (rolled.version, rolled.previous_version) == (V1, V2)
    assert_serving(store, V1, make_fraud_model, probe)
    with pytest.raises(StoreError, match="no backup older"):
        store.rollback()
    assert_serving(store, V1, make_fraud_model, probe)


def test_rollback_to_a_named_version(
    store: ModelStore, make_fraud_model: MakeModel, probe: np.ndarray
) -> None:
    for version in (V1, V2, V3):
        publish(store, make_fraud_model, version)
    assert backup_versions(store) == [V1, V2]

    rolled = store.rollback(to_version=V1)

    assert (rolled.version, rolled.previous_version) == (V1, V3)
    assert_serving(store, V1, make_fraud_model, probe)
    with pytest.raises(StoreError, match="no backup of version"):
        store.rollback(to_version="20990101T000000Z-nothing")


def test_rollback_restores_a_release_that_was_removed(
    store: ModelStore, make_fraud_model: MakeModel, probe: np.ndarray
) -> None:
    publish(store, make_fraud_model, V1)
    publish(store, make_fraud_model, V2)
    shutil.rmtree(store.releases / V1)
    store.rollback()
    assert_serving(store, V1, make_fraud_model, probe)


def test_rollback_with_nothing_older_raises(
    store: ModelStore, make_fraud_model: MakeModel, probe: np.ndarray
) -> None:
    with pytest.raises(StoreError):
        store.rollback()
    publish(store, make_fraud_model, V1)
    with pytest.raises(StoreError, match="no backup older"):
        store.rollback()
    assert_serving(store, V1, make_fraud_model, probe)


def test_staging_an_existing_version_raises(store: ModelStore, make_fraud_model: MakeModel) -> None:
    staged = stage(store, make_fraud_model, V1)
    with pytest.raises(StoreError, match="already exists"):
        stage(store, make_fraud_model, V1)
    store.publish(staged)
    with pytest.raises(StoreError, match="already exists"):
        stage(store, make_fraud_model, V1)


def test_old_backups_are_pruned(
    tmp_path: Path, make_fraud_model: MakeModel, probe: np.ndarray
) -> None:
    store = ModelStore(tmp_path / "models", keep_backups=2)
    for version in (V1, V2, V3, V4):
        publish(store, make_fraud_model, version)
    assert backup_versions(store) == [V2, V3]
    assert len(list(store.backups.iterdir())) == 2
    assert_serving(store, V4, make_fraud_model, probe)


def test_unreadable_backups_are_skipped(store: ModelStore, make_fraud_model: MakeModel) -> None:
    publish(store, make_fraud_model, V1)
    publish(store, make_fraud_model, V2)
    (store.backups / "20000101T000000000000Z__broken").mkdir()
    assert backup_versions(store) == [V1]


def test_a_plain_production_directory_is_refused_and_left_alone(
    store: ModelStore, make_fraud_model: MakeModel, probe: np.ndarray
) -> None:
    manual = "20241231T000000Z-manual"
    save_bundle(make_fraud_model(seed=9), store.production, manifest(manual))
    before = files(store.production)
    staged = stage(store, make_fraud_model, V1)

    with pytest.raises(StoreError, match="not the symlink"):
        store.publish(staged)

    assert not store.production.is_symlink()
    assert files(store.production) == before
    assert staged.is_dir()
    assert not (store.releases / V1).exists()
    # Following the error's advice works: move it into releases/ and publish again.
    store.releases.mkdir(parents=True, exist_ok=True)
    os.replace(store.production, store.releases / manual)
    store.publish(staged)
    assert_serving(store, V1, make_fraud_model, probe)


def test_an_empty_plain_production_directory_is_refused(
    store: ModelStore, make_fraud_model: MakeModel
) -> None:
    store.production.mkdir(parents=True)
    staged = stage(store, make_fraud_model, V1)
    with pytest.raises(StoreError, match="not the symlink"):
        store.publish(staged)
    assert store.production.is_dir() and not store.production.is_symlink()
    assert list(store.production.iterdir()) == []


def test_a_dangling_production_link_is_reported(store: ModelStore) -> None:
    store.root.mkdir(parents=True)
    store.production.symlink_to(store.releases / "gone", target_is_directory=True)
    with pytest.raises(StoreError, match="dangling"):
        store.current_version()
