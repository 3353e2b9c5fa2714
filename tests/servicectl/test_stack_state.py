"""`make stack`'s state: long secrets, a state file only its owner reads, the triggerer."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from servicectl.stack import BY_NAME, SERVICES, Stack
from servicectl.stack.services import AIRFLOW_COMPONENTS, command
from servicectl.stack.state import SECRET_BYTES, write_private

GENERATED = ("jwt", "api_secret")


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 0: a file written the ordinary way would be world-readable (0666)."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_generated_secrets_are_at_least_64_bytes_and_differ(tmp_path: Path) -> None:
    """Airflow signs its JWTs with HS512 and warns below a 64-byte key."""
    one, two = Stack.load_or_new(tmp_path / "a"), Stack.load_or_new(tmp_path / "b")
    for key in GENERATED:
        assert len(one.secrets[key].encode()) >= SECRET_BYTES >= 64, key
        assert one.secrets[key] != two.secrets[key]
    assert one.secrets["jwt"] != one.secrets["api_secret"]
    assert one.airflow_env()["AIRFLOW__API_AUTH__JWT_SECRET"] == one.secrets["jwt"]


def test_stack_json_is_created_with_mode_0600(
    tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    chmods: list[object] = []
    monkeypatch.setattr(os, "chmod", lambda *args, **kw: chmods.append(args))
    stack = Stack.load_or_new(tmp_path / "stack")
    stack.save()
    path = tmp_path / "stack" / "stack.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert chmods == []  # created with that mode, never wider for a moment
    stack.pids["api"] = 1234
    stack.save()  # and again over the old file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["secrets"] == stack.secrets
    assert not list((tmp_path / "stack").glob("*.tmp"))


def test_write_private_replaces_a_wider_leftover(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "passwords.json"
    leftover = tmp_path / "passwords.json.tmp"
    leftover.write_text("old")
    leftover.chmod(0o644)
    write_private(path, '{"airflow": "pw"}\n')
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == '{"airflow": "pw"}\n'


def test_a_saved_stack_keeps_its_secrets_and_short_old_ones_are_renewed(tmp_path: Path) -> None:
    stack = Stack.load_or_new(tmp_path)
    stack.save()
    assert Stack.load_or_new(tmp_path).secrets == stack.secrets
    # What an older `make stack` wrote: token_urlsafe(32), 43 bytes.
    data = json.loads((tmp_path / "stack.json").read_text())
    data["secrets"]["jwt"] = "x" * 43
    (tmp_path / "stack.json").write_text(json.dumps(data))
    renewed = Stack.load_or_new(tmp_path)
    assert len(renewed.secrets["jwt"].encode()) >= 64
    assert renewed.secrets["api_secret"] == stack.secrets["api_secret"]


def test_the_triggerer_is_a_service_with_a_health_check(tmp_path: Path) -> None:
    names = [s.name for s in SERVICES]
    assert names.index("airflow-triggerer") > names.index("airflow-scheduler")
    triggerer = BY_NAME["airflow-triggerer"]
    assert triggerer.database == "airflow"
    assert AIRFLOW_COMPONENTS["airflow-triggerer"] == "triggerer"
    argv = command(Stack.load_or_new(tmp_path), "airflow-triggerer")
    assert Path(argv[0]).name == "airflow" and argv[1:] == ["triggerer"]
