"""Property-based fuzzing of every route in the OpenAPI schema (schemathesis): never a 5xx.

Each generated case is sent as it is (schemathesis makes up bearer tokens for the key scheme,
or sends none) and again with a real API key holding every scope, which gets past the key check
to the route itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings

from api.main import create_app
from fraud_core.api_keys import SCOPES
from fraud_core.store import ModelStore
from tests.api.conftest import (
    AUTH,
    V1,
    MakeModel,
    bearer,
    default_log_url,
    make_settings,
    new_key,
    publish,
)

# Finite values beyond float32 overflow in the anomaly feature's float32 cast: expected here.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")

# The document alone, from an app that is never started. schemathesis' lazy loader
# (`schemathesis.pytest.from_fixture`) reaches into pytest internals that pytest 9 removed.
schema = schemathesis.openapi.from_dict(create_app(make_settings(Path("unused"))).openapi())


@pytest.fixture(scope="module")
def fuzz_app(
    tmp_path_factory: pytest.TempPathFactory, make_fraud_model: MakeModel
) -> Iterator[tuple[FastAPI, str]]:
    """An app serving a published model, and a key of every scope in its log; schemathesis runs
    its lifespan once for all cases."""
    store = ModelStore(tmp_path_factory.mktemp("fuzz") / "models")
    publish(store, make_fraud_model(seed=1), V1)
    key = new_key(default_log_url(store.root), *SCOPES, name="fuzz")
    app = create_app(make_settings(store.root))
    yield app, key
    schemathesis.python.asgi.shutdown_lifespans()


def call_with(case: schemathesis.Case, app: FastAPI, headers: dict[str, str]) -> Any:
    """`case` sent with `headers` in place of any Authorization header it was generated with."""
    kept = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    case.headers = {**kept, **headers}
    return case.call(app=app)


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    database=None,
    # The app is shared by every example on purpose; the env-isolation fixture is autouse.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_route_answers_with_a_server_error(
    case: schemathesis.Case, fuzz_app: tuple[FastAPI, str]
) -> None:
    app, key = fuzz_app
    response = case.call(app=app)
    assert response.status_code < 500, f"{case.method} {case.path}: {response.text}"
    with_key = call_with(case, app, bearer(key))
    assert with_key.status_code < 500, f"{case.method} {case.path} with a key: {with_key.text}"
    assert with_key.status_code not in (401, 403), with_key.text
    if case.path == "/admin/reload" and case.method == "POST":
        # The generated headers never hold the token nor a key: both reload.
        assert with_key.status_code == 200, with_key.text
        authorised = call_with(case, app, AUTH)
        assert authorised.status_code == 200, authorised.text
        assert authorised.json()["model_version"] == V1
