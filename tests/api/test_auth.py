"""API keys on the routes: 401 without a valid key, 403 with the wrong scope, nothing written.

Every protected route, with the app's real key ring on its prediction log: POST /feedback (both
contracts), POST /admin/reload, and the four scoring routes once `FRAUD_API_REQUIRE_SCORE_KEY`
is on. Keys never appear in the logs, nor in clear in any table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.main import create_app
from fraud_core.api_keys import (
    ADMIN,
    FEEDBACK,
    LABEL_CORRECT,
    SCOPES,
    SCORE,
    create_key,
    parse,
    revoke_key,
)
from fraud_core.bundle import FraudModel
from fraud_core.prediction_log import make_engine
from fraud_core.store import ModelStore
from tests.api.conftest import (
    AUTH,
    bearer,
    card_transaction,
    default_log_url,
    make_settings,
    new_key,
    transaction,
)

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")

#: The tables a refused request must leave as they were.
WRITTEN = ("predictions", "feedback", "card_predictions", "card_feedback", "label_events")
#: A key of the right form that no table holds.
MADE_UP = f"fk_{'a' * 12}_{'B' * 43}"


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str
    scope: str  # the scope it needs (any key of another scope is refused)
    body: Any


def _routes() -> list[Route]:
    return [
        Route("predict", "POST", "/predict", SCORE, transaction()),
        Route(
            "predict-batch",
            "POST",
            "/predict/batch",
            SCORE,
            [transaction(), transaction(Amount=3.0)],
        ),
        Route("score", "POST", "/transactions/score", SCORE, card_transaction("c1")),
        Route("score-batch", "POST", "/transactions/score/batch", SCORE, [card_transaction("c2")]),
        Route(
            "feedback", "POST", "/feedback", FEEDBACK, {"request_id": "{known}", "label": "fraud"}
        ),
        Route(
            "card-feedback",
            "POST",
            "/feedback",
            FEEDBACK,
            {"transaction_id": "c0", "label": "legit"},
        ),
        Route("reload", "POST", "/admin/reload", ADMIN, None),
    ]


ROUTES = _routes()
IDS = [route.name for route in ROUTES]


@dataclass
class Deployment:
    client: TestClient
    url: str
    keys: dict[str, str]  # by name: every scope, each one alone, and revoked
    known: str  # a request id the log holds


@pytest.fixture
def deployment(store: ModelStore, served_model: FraudModel) -> Iterator[Deployment]:
    """The app with `FRAUD_API_REQUIRE_SCORE_KEY` on and keys of each scope in its log."""
    url = default_log_url(store.root)
    keys = {scope: new_key(url, scope, name=scope) for scope in SCOPES}
    keys["all"] = new_key(url, *SCOPES, name="all")
    engine = make_engine(url)
    record, keys["revoked"] = create_key(engine, "leaked", SCOPES)
    revoke_key(engine, record.key_id)
    engine.dispose()
    settings = make_settings(store.root, FRAUD_API_REQUIRE_SCORE_KEY=True)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/predict", json=transaction(), headers=bearer(keys[SCORE]))
        assert answer.status_code == 200, answer.text
        yield Deployment(client, url, keys, answer.json()["request_id"])


def counts(deployment: Deployment) -> dict[str, int]:
    """Rows in each table a request could write, once the log's queue is written."""
    assert deployment.client.app.state.prediction_log.flush(30)  # type: ignore[attr-defined]
    engine = make_engine(deployment.url)
    try:
        inspector = sa.inspect(engine)
        with engine.connect() as conn:
            return {
                name: int(conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar() or 0)
                for name in WRITTEN
                if inspector.has_table(name)
            }
    finally:
        engine.dispose()


def send(deployment: Deployment, route: Route, headers: dict[str, str]) -> Any:
    body = route.body
    if isinstance(body, dict) and body.get("request_id") == "{known}":
        body = {**body, "request_id": deployment.known}
    return deployment.client.request(route.method, route.path, json=body, headers=headers)


@pytest.mark.parametrize("route", ROUTES, ids=IDS)
def test_a_protected_route_refuses_a_missing_unknown_or_revoked_key_and_writes_nothing(
    deployment: Deployment, route: Route
) -> None:
    before = counts(deployment)
    refusals = {
        "no header": {},
        "not bearer": {"Authorization": "Basic dXNlcjpwYXNz"},
        "empty": {"Authorization": "Bearer "},
        "made up": bearer(MADE_UP),
        "malformed": bearer("not-a-key"),
        "wrong secret": bearer(deployment.keys["all"][:-4] + "AAAA"),
        "revoked": bearer(deployment.keys["revoked"]),
    }
    for what, headers in refusals.items():
        response = send(deployment, route, headers)
        assert response.status_code == 401, f"{what}: {response.text}"
        assert response.headers["www-authenticate"] == "Bearer", what
        assert deployment.keys["all"][-43:] not in response.text
    assert counts(deployment) == before


@pytest.mark.parametrize("route", ROUTES, ids=IDS)
def test_a_key_without_the_routes_scope_is_forbidden_and_writes_nothing(
    deployment: Deployment, route: Route
) -> None:
    before = counts(deployment)
    others = [
        s
        for s in SCOPES
        if s != route.scope and not (route.scope == FEEDBACK and s == LABEL_CORRECT)
    ]
    for scope in others:
        response = send(deployment, route, bearer(deployment.keys[scope]))
        assert response.status_code == 403, f"{scope}: {response.text}"
        detail = response.json()["detail"]
        key_id = deployment.keys[scope].split("_")[1]
        assert key_id in detail and route.scope in detail
        assert deployment.keys[scope] not in detail
    assert counts(deployment) == before


@pytest.mark.parametrize("route", ROUTES, ids=IDS)
def test_the_routes_scope_gets_through_to_the_route(deployment: Deployment, route: Route) -> None:
    response = send(deployment, route, bearer(deployment.keys[route.scope]))
    # The Kaggle model is served: card scoring answers 409 and an unknown card id 404, past the
    # key check; the rest succeed.
    expected = {"/transactions/score": 409, "/transactions/score/batch": 409}.get(route.path, 200)
    if route.path == "/feedback":
        expected = 201 if "request_id" in route.body else 404
    assert response.status_code == expected, response.text


def test_a_label_correct_key_may_send_first_labels_too(deployment: Deployment) -> None:
    response = deployment.client.post(
        "/feedback",
        json={"request_id": deployment.known, "label": "legit"},
        headers=bearer(deployment.keys[LABEL_CORRECT]),
    )
    assert response.status_code == 201, response.text
    assert response.json()["key_id"] == deployment.keys[LABEL_CORRECT].split("_")[1]


def test_scoring_is_open_by_default_and_a_key_sent_there_must_be_valid(
    client: TestClient, store: ModelStore
) -> None:
    feedback_only = new_key(default_log_url(store.root), FEEDBACK)
    client.app.state.keys.ring.refresh()  # type: ignore[attr-defined]  # the key made after start
    assert client.post("/predict", json=transaction()).status_code == 200
    assert client.post("/predict/batch", json=[transaction()]).status_code == 200
    # A key identifies the caller (its rate limit); any valid one will do on an open route.
    sent = client.post("/predict", json=transaction(), headers=bearer(feedback_only))
    assert sent.status_code == 200
    wrong = client.post("/predict", json=transaction(), headers=bearer(MADE_UP))
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    # Feedback never is open.
    answer = client.post(
        "/feedback", json={"request_id": sent.json()["request_id"], "label": "fraud"}
    )
    assert answer.status_code == 401


def test_the_schema_has_a_bearer_scheme_and_says_which_routes_need_it(
    store: ModelStore,
) -> None:
    def security(settings: Any) -> dict[str, Any]:
        schema = create_app(settings).openapi()
        scheme = schema["components"]["securitySchemes"]["APIKey"]
        assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
        return {
            path: ops["post"].get("security")
            for path, ops in schema["paths"].items()
            if "post" in ops
        }

    open_ = security(make_settings(store.root))
    assert open_["/feedback"] == open_["/admin/reload"] == [{"APIKey": []}]
    for path in ("/predict", "/predict/batch", "/transactions/score", "/transactions/score/batch"):
        assert open_[path] == [{}, {"APIKey": []}], path  # a key may be sent, none is needed
    closed = security(make_settings(store.root, FRAUD_API_REQUIRE_SCORE_KEY=True))
    assert closed["/predict"] == closed["/transactions/score/batch"] == [{"APIKey": []}]


def test_with_the_log_off_keys_are_off_and_the_reload_token_still_works(
    store: ModelStore, served_model: FraudModel
) -> None:
    settings = make_settings(store.root, FRAUD_PREDICTION_LOG_URL="off")
    with TestClient(create_app(settings)) as client:
        feedback = client.post(
            "/feedback", json={"request_id": "x", "label": "fraud"}, headers=bearer(MADE_UP)
        )
        assert feedback.status_code == 503
        assert "FRAUD_PREDICTION_LOG_URL=off" in feedback.json()["detail"]
        assert client.post("/admin/reload", headers=bearer(MADE_UP)).status_code == 401
        assert client.post("/admin/reload", headers=AUTH).status_code == 200
    no_token = make_settings(
        store.root, FRAUD_PREDICTION_LOG_URL="off", FRAUD_API_RELOAD_TOKEN=None
    )
    with TestClient(create_app(no_token)) as client:
        response = client.post("/admin/reload", headers=bearer(MADE_UP))
        assert response.status_code == 503 and "API keys" in response.json()["detail"]
        # Scoring stays open: there is no key to check, and none is needed.
        assert (
            client.post("/predict", json=transaction(), headers=bearer(MADE_UP)).status_code == 200
        )
    required = make_settings(
        store.root, FRAUD_PREDICTION_LOG_URL="off", FRAUD_API_REQUIRE_SCORE_KEY=True
    )
    with TestClient(create_app(required)) as client:
        assert client.post("/predict", json=transaction()).status_code == 503


def test_a_revoked_key_is_refused_at_the_next_refresh_without_a_restart(
    store: ModelStore, served_model: FraudModel
) -> None:
    url = default_log_url(store.root)
    engine = make_engine(url)
    record, key = create_key(engine, "ops", [FEEDBACK])
    settings = make_settings(store.root, FRAUD_API_KEYS_REFRESH_S=0.1)
    try:
        with TestClient(create_app(settings)) as client:
            body = {"request_id": "never-predicted", "label": "fraud"}
            assert client.post("/feedback", json=body, headers=bearer(key)).status_code == 404
            revoke_key(engine, record.key_id)
            # The ring's thread reads the table every 0.1 s: poll for the refusal.
            deadline = time.monotonic() + 30
            while client.post("/feedback", json=body, headers=bearer(key)).status_code != 401:
                assert time.monotonic() < deadline, "the revoked key is still accepted"
                time.sleep(0.05)
    finally:
        engine.dispose()


def every_text(url: str) -> list[str]:
    """Every value of every row of every table of the database at `url`, as text."""
    engine = make_engine(url)
    try:
        metadata = sa.MetaData()
        metadata.reflect(engine)
        with engine.connect() as conn:
            return [
                str(value)
                for table in metadata.sorted_tables
                for row in conn.execute(sa.select(table))
                for value in row
            ]
    finally:
        engine.dispose()


def test_keys_are_never_logged_nor_stored_in_clear(
    deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, keys = deployment.client, deployment.keys
    client.post("/predict", json=transaction(), headers=bearer(keys[SCORE]))
    client.post(
        "/feedback",
        json={"request_id": deployment.known, "label": "legit"},
        headers=bearer(keys[FEEDBACK]),
    )
    client.post(
        "/feedback",
        json={"request_id": deployment.known, "label": "fraud"},
        headers=bearer(keys[LABEL_CORRECT]),
    )
    client.post("/admin/reload", headers=bearer(keys[ADMIN]))
    client.post("/admin/reload", headers=bearer(keys[SCORE]))
    client.post(
        "/feedback", json={"request_id": "x", "label": "fraud"}, headers=bearer(keys["revoked"])
    )
    assert counts(deployment)["label_events"] == 2  # the requests did reach the routes
    secrets_ = [parsed[1] for k in keys.values() if (parsed := parse(k))]
    logged = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    assert "corrected from legit to fraud" in logged  # the audit line, with the key id only
    stored = every_text(deployment.url)
    for key, secret in zip(keys.values(), secrets_, strict=True):
        assert secret not in logged and key not in logged
        assert not any(secret in value for value in stored)


def test_two_hundred_requests_with_keys_cost_no_database_call_each(
    deployment: Deployment,
) -> None:
    # The ring answers from memory: the key table is read by its thread, not per request.
    reads = []
    engine = deployment.client.app.state.keys.ring.engine  # type: ignore[attr-defined]

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "api_keys" in statement:
            reads.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(200):
            client_answer = deployment.client.post(
                "/feedback",
                json={"request_id": "never-predicted", "label": "fraud"},
                headers=bearer(deployment.keys[FEEDBACK]),
            )
            assert client_answer.status_code == 404
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    # At most the ring's own refreshes (every 2 s) while the loop ran.
    assert len(reads) < 200
