"""API keys: shown once, stored as a hash, verified in constant time, revoked without restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from fraud_core.api_keys import (
    ADMIN,
    FEEDBACK,
    LABEL_CORRECT,
    SCORE,
    ApiKeyError,
    KeyRing,
    api_keys,
    create_key,
    list_keys,
    revoke_key,
)
from fraud_core.api_keys_cli import main
from fraud_core.prediction_log.tables import make_engine
from tests.conftest import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
        yield engine
        engine.dispose()
        return
    with fresh_database() as url:
        engine = make_engine(url)
        yield engine
        engine.dispose()


def test_a_key_is_verified_with_its_scopes_and_its_secret_is_not_stored(engine: sa.Engine) -> None:
    record, key = create_key(engine, "fraud-ops", [FEEDBACK, SCORE])
    ring = KeyRing(engine, refresh_s=60)
    found = ring.verify(key)
    assert found is not None and found.key_id == record.key_id
    assert found.allows(FEEDBACK) and found.allows(SCORE)
    assert not found.allows(LABEL_CORRECT) and not found.allows(ADMIN)
    secret = key.rsplit("_", 1)[1]
    with engine.connect() as conn:
        stored = [str(v) for row in conn.execute(sa.select(api_keys)).all() for v in row]
    assert not any(secret in v or key in v for v in stored)


def test_wrong_malformed_and_unknown_keys_are_refused(engine: sa.Engine) -> None:
    _, key = create_key(engine, "a", [SCORE])
    ring = KeyRing(engine)
    key_id = key.split("_")[1]
    other_secret = "A" * 43
    assert ring.verify(f"fk_{key_id}_{other_secret}") is None
    assert ring.verify(f"fk_{'0' * 12}_{other_secret}") is None
    assert ring.verify("Bearer " + key) is None
    assert ring.verify("") is None
    assert ring.verify(key[:-1]) is None


def test_a_revoked_key_stops_working_at_the_next_refresh(engine: sa.Engine) -> None:
    record, key = create_key(engine, "leaked", [FEEDBACK])
    ring = KeyRing(engine, refresh_s=3600)
    assert ring.verify(key) is not None
    revoked = revoke_key(engine, record.key_id)
    assert revoked.revoked_at is not None and not revoked.allows(FEEDBACK)
    # Until the ring refreshes it still holds the old table; a refresh (timed, or this) sees it.
    ring.refresh()
    assert ring.verify(key) is None
    assert KeyRing(engine, refresh_s=0).verify(key) is None
    # Revoking again keeps the first revocation time.
    assert revoke_key(engine, record.key_id).revoked_at == revoked.revoked_at


def test_list_shows_ids_names_and_scopes(engine: sa.Engine) -> None:
    first, _ = create_key(engine, "analyst", [LABEL_CORRECT, FEEDBACK])
    second, _ = create_key(engine, "ops", [ADMIN])
    revoke_key(engine, second.key_id)
    listed = {k.key_id: k for k in list_keys(engine)}
    assert listed[first.key_id].scopes == {LABEL_CORRECT, FEEDBACK}
    assert listed[first.key_id].active and not listed[second.key_id].active


def test_bad_requests_are_refused_by_name(engine: sa.Engine) -> None:
    with pytest.raises(ApiKeyError, match="label:write"):
        create_key(engine, "x", ["label:write"])
    with pytest.raises(ApiKeyError, match="none"):
        create_key(engine, "x", [])
    with pytest.raises(ApiKeyError, match="name"):
        create_key(engine, "  ", [SCORE])
    with pytest.raises(ApiKeyError, match="nope"):
        revoke_key(engine, "nope")


def test_the_cli_creates_lists_and_revokes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    assert main(["--database", url, "create", "--name", "me", "--scope", "feedback", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["scopes"] == ["feedback"] and created["key"].startswith("fk_")
    assert main(["--database", url, "list"]) == 0
    listed = capsys.readouterr().out
    assert created["key_id"] in listed and created["key"] not in listed
    assert main(["--database", url, "revoke", created["key_id"]]) == 0
    assert json.loads(capsys.readouterr().out)["revoked_at"] is not None
    assert main(["--database", url, "revoke", "missing"]) == 2
    assert "no key with id 'missing'" in capsys.readouterr().err
    engine = make_engine(url)
    assert KeyRing(engine).verify(created["key"]) is None
    engine.dispose()


def test_create_replace_rotates_a_key_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    args = ["--database", url, "create", "--name", "me (make serve)", "--scope", "score", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["--database", url, "create", "--name", "other", "--scope", "score"]) == 0
    capsys.readouterr()
    assert main([*args, "--replace"]) == 0
    second = json.loads(capsys.readouterr().out)
    engine = make_engine(url)
    try:
        active = {k.name: k.key_id for k in list_keys(engine) if k.active}
        assert active == {"me (make serve)": second["key_id"], "other": active["other"]}
        ring = KeyRing(engine)
        assert ring.verify(first["key"]) is None and ring.verify(second["key"]) is not None
    finally:
        engine.dispose()


def test_check_answers_from_the_copy_without_reading_the_table(engine: sa.Engine) -> None:
    ring = KeyRing(engine, refresh_s=0)
    _, key = create_key(engine, "late", [SCORE])
    assert ring.age_s == float("inf")
    assert ring.check(key) is None  # nothing read yet: unknown
    ring.refresh()
    assert ring.check(key) is not None and ring.age_s < 60
