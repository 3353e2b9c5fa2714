"""`POST /admin/reload`: key and token checks, picking up a new bundle, refusing a corrupt one."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from fraud_core.api_keys import ADMIN, FEEDBACK, SCORE
from fraud_core.bundle import FraudModel
from fraud_core.store import ModelStore
from tests.api.conftest import (
    AUTH,
    CORRUPTIONS,
    TOKEN,
    V1,
    V2,
    V3,
    MakeModel,
    bearer,
    default_log_url,
    make_settings,
    metric,
    new_key,
    publish,
    scrape,
    transaction,
)

PROBE = transaction(V14=-3.0, V4=2.0, Amount=1.0)
SERVING_LOG = "fraud_api.serving"


def serving_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    """The messages the model holder logged at `level`."""
    return [r.getMessage() for r in caplog.records if r.name == SERVING_LOG and r.levelno == level]


def test_the_first_load_is_logged_with_its_version_and_directory(
    store: ModelStore, served_model: FraudModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fraud_api")
    with TestClient(create_app(make_settings(store.root))):
        pass
    release = store.releases / V1
    assert serving_lines(caplog, logging.INFO) == [
        f"loaded model: from version none to version {V1} (source: directory {release})"
    ]
    assert serving_lines(caplog, logging.ERROR) == []


def test_without_a_token_configured_only_an_admin_key_reloads(
    store: ModelStore, served_model: FraudModel
) -> None:
    url = default_log_url(store.root)
    admin, other = new_key(url, ADMIN), new_key(url, FEEDBACK, SCORE)
    with TestClient(create_app(make_settings(store.root, FRAUD_API_RELOAD_TOKEN=None))) as client:
        for headers in ({}, AUTH, {"Authorization": "Bearer "}):
            response = client.post("/admin/reload", headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
        refused = client.post("/admin/reload", headers=bearer(other))
        assert refused.status_code == 403 and "admin" in refused.json()["detail"]
        response = client.post("/admin/reload", headers=bearer(admin))
        assert response.status_code == 200, response.text
        assert response.json() == {"changed": False, "model_version": V1}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": TOKEN},
    ],
    ids=["missing", "wrong", "longer", "shorter", "empty", "basic", "no-scheme"],
)
def test_reload_refuses_a_missing_or_wrong_token(
    client: TestClient, store: ModelStore, make_fraud_model: MakeModel, headers: dict[str, str]
) -> None:
    publish(store, make_fraud_model(seed=2), V2)
    response = client.post("/admin/reload", headers=headers)
    assert response.status_code == 401
    # Nothing was reloaded.
    assert client.get("/model").json()["model_version"] == V1


def test_reload_with_nothing_new_keeps_the_version(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fraud_api")
    response = client.post("/admin/reload", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"changed": False, "model_version": V1}
    # Nothing loaded, nothing said.
    assert serving_lines(caplog, logging.INFO) == []
    assert client.post("/predict", json=PROBE).json()["model_version"] == V1
    assert metric(scrape(client), "fraud_api_model_reloads_total", result="loaded") == 1


def test_reload_picks_up_a_newly_published_bundle(
    client: TestClient,
    store: ModelStore,
    served_model: FraudModel,
    make_fraud_model: MakeModel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fraud_api")
    before = client.post("/predict", json=PROBE).json()
    assert before["fraud_probability"] == pytest.approx(
        served_model.predict_record(PROBE), abs=1e-9
    )
    new_model = make_fraud_model(seed=2)
    publish(store, new_model, V2)
    # The watcher is off in this app: nothing changes until the reload.
    assert client.post("/predict", json=PROBE).json()["model_version"] == V1

    response = client.post("/admin/reload", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"changed": True, "model_version": V2}
    assert serving_lines(caplog, logging.INFO) == [
        f"loaded model: from version {V1} to version {V2} (source: directory {store.releases / V2})"
    ]
    after = client.post("/predict", json=PROBE).json()
    assert after["model_version"] == V2
    assert after["fraud_probability"] == pytest.approx(new_model.predict_record(PROBE), abs=1e-9)
    assert after["fraud_probability"] != pytest.approx(before["fraud_probability"], abs=1e-9)
    assert client.get("/model").json()["model_version"] == V2
    assert client.get("/ready").json()["model_version"] == V2

    samples = scrape(client)
    assert metric(samples, "fraud_api_model_info", model_version=V2) == 1.0
    # The old version's series is gone, not left at 1 beside the new one.
    assert ("fraud_api_model_info", frozenset({("model_version", V1)})) not in samples
    assert metric(samples, "fraud_api_model_reloads_total", result="loaded") == 2


@pytest.mark.parametrize("corrupt", CORRUPTIONS)
def test_a_corrupt_new_bundle_is_refused_and_the_old_one_keeps_serving(
    client: TestClient,
    store: ModelStore,
    served_model: FraudModel,
    make_fraud_model: MakeModel,
    corrupt: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fraud_api")
    before = client.post("/predict", json=PROBE).json()
    release = publish(store, make_fraud_model(seed=2), V2)
    CORRUPTIONS[corrupt](release)

    response = client.post("/admin/reload", headers=AUTH)
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert f"still serving {V1}" in detail
    assert str(release) in detail
    # The refused version, where it was, why, and what still serves.
    (refusal,) = serving_lines(caplog, logging.ERROR)
    why = "sha256" if "byte" in corrupt else "smoke prediction"
    assert refusal.startswith(
        f"refused model version {V2} (source: directory {release}), still serving version {V1}: "
    )
    assert why in refusal
    assert serving_lines(caplog, logging.INFO) == []

    after = client.post("/predict", json=PROBE).json()
    # The same answer; only the request id is new (each request gets its own).
    assert after.pop("request_id") != before.pop("request_id")
    assert after == before
    assert after["model_version"] == V1
    batch = client.post("/predict/batch", json=[PROBE]).json()
    assert batch["model_version"] == V1
    assert client.get("/ready").json() == {"status": "ready", "model_version": V1}
    assert client.get("/model").json()["model_version"] == V1

    samples = scrape(client)
    assert metric(samples, "fraud_api_model_reloads_total", result="refused") == 1
    assert metric(samples, "fraud_api_model_info", model_version=V1) == 1.0
    assert metric(samples, "fraud_api_model_info", model_version=V2) == 0

    # The watcher does not retry the same refused bundle on every poll...
    holder = client.app.state.holder  # type: ignore[attr-defined]
    for _ in range(3):
        assert holder.refresh().version == V1
    assert metric(scrape(client), "fraud_api_model_reloads_total", result="refused") == 1
    assert len(serving_lines(caplog, logging.ERROR)) == 1
    # ...but an operator's reload tries it once more, and a refusal counts again.
    assert client.post("/admin/reload", headers=AUTH).status_code == 409
    assert metric(scrape(client), "fraud_api_model_reloads_total", result="refused") == 2
    assert serving_lines(caplog, logging.ERROR) == [refusal, refusal]
    # A good bundle published after is taken.
    publish(store, make_fraud_model(seed=3), V3)
    response = client.post("/admin/reload", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["model_version"] == V3
    assert serving_lines(caplog, logging.INFO) == [
        f"loaded model: from version {V1} to version {V3} (source: directory {store.releases / V3})"
    ]
    assert client.post("/predict", json=PROBE).json()["model_version"] == V3
