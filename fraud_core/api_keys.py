"""API keys with scopes: who may score, label, correct labels and administer the API.

A key is `fk_<key id>_<secret>`: the id (public, in logs and in the label history) finds the row,
the secret (32 random bytes) is shown once at creation and stored only as its SHA-256, compared in
constant time. A plain hash is the right tool for a random 256-bit secret (nothing to brute-force;
a slow password hash would only slow every request). Keys live in the prediction log's database
(`api_keys`), beside the labels they sign; revoking one is a timestamp, never a delete, so the
label history keeps naming who sent what.

`KeyRing` is the API's side: a copy of the table refreshed every few seconds, so a revocation
reaches every worker and replica within `refresh_s`, with no restart and no database call on the
request path.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from fraud_core.prediction_log.tables import UTCDateTime

#: What a key may do. `label:correct` replaces a stored label (a reversed chargeback); `admin`
#: reloads models and manages the API.
SCORE = "score"
FEEDBACK = "feedback"
LABEL_CORRECT = "label:correct"
ADMIN = "admin"
SCOPES: tuple[str, ...] = (SCORE, FEEDBACK, LABEL_CORRECT, ADMIN)
PREFIX = "fk"
_KEY = re.compile(r"^fk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")

keys_metadata = sa.MetaData()
api_keys = sa.Table(
    "api_keys",
    keys_metadata,
    sa.Column("key_id", sa.String(12), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    #: Space-separated scopes, e.g. "score feedback".
    sa.Column("scopes", sa.String(200), nullable=False),
    #: SHA-256 of the secret, hex. The secret itself is never stored.
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
)


class ApiKeyError(ValueError):
    """A key request that cannot be carried out (unknown scope, unknown id)."""


@dataclass(frozen=True)
class ApiKey:
    """A key's public record: never its secret."""

    key_id: str
    name: str
    scopes: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: str) -> bool:
        return self.active and scope in self.scopes


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    wanted = frozenset(scopes)
    unknown = sorted(wanted - set(SCOPES))
    if unknown or not wanted:
        raise ApiKeyError(f"scopes must be some of {', '.join(SCOPES)}; got {unknown or 'none'}")
    return wanted


def create_key_table(engine: sa.Engine) -> None:
    keys_metadata.create_all(engine)


def create_key(engine: sa.Engine, name: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
    """A new key: its record and the key itself, which is shown this once and never again."""
    wanted = _check_scopes(scopes)
    if not name.strip():
        raise ApiKeyError("a key needs a name (who or what uses it)")
    create_key_table(engine)
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    record = ApiKey(key_id, name.strip(), wanted, datetime.now(UTC))
    with engine.begin() as conn:
        conn.execute(
            api_keys.insert().values(
                key_id=key_id,
                name=record.name,
                scopes=" ".join(sorted(wanted)),
                secret_sha256=_digest(secret),
                created_at=record.created_at,
            )
        )
    return record, f"{PREFIX}_{key_id}_{secret}"


def _record(row: sa.Row) -> ApiKey:
    return ApiKey(
        key_id=row.key_id,
        name=row.name,
        scopes=frozenset(row.scopes.split()),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def list_keys(engine: sa.Engine) -> list[ApiKey]:
    """Every key ever created, oldest first, revoked ones included (never the secrets)."""
    create_key_table(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(*[c for c in api_keys.c if c.name != "secret_sha256"]).order_by(
                api_keys.c.created_at
            )
        ).all()
    return [_record(r) for r in rows]


def revoke_key(engine: sa.Engine, key_id: str) -> ApiKey:
    """Revoke a key by its id; revoking it again changes nothing."""
    create_key_table(engine)
    with engine.begin() as conn:
        conn.execute(
            api_keys.update()
            .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        row = conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).first()
    if row is None:
        raise ApiKeyError(f"no key with id {key_id!r}")
    return _record(row)


def parse(presented: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = _KEY.match(presented.strip())
    return (match.group(1), match.group(2)) if match else None


class KeyRing:
    """The API's view of `api_keys`: verified in memory, refreshed every `refresh_s` seconds."""

    def __init__(self, engine: sa.Engine, refresh_s: float = 2.0) -> None:
        self.engine = engine
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[str, ApiKey]] = {}
        self._loaded_at = float("-inf")

    def refresh(self) -> None:
        create_key_table(self.engine)
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(api_keys)).all()
        self._keys = {r.key_id: (r.secret_sha256, _record(r)) for r in rows}
        self._loaded_at = time.monotonic()

    @property
    def age_s(self) -> float:
        """Seconds since the table was last read; infinite before the first read."""
        return time.monotonic() - self._loaded_at

    def _current(self) -> dict[str, tuple[str, ApiKey]]:
        if time.monotonic() - self._loaded_at >= self.refresh_s:
            with self._lock:
                if time.monotonic() - self._loaded_at >= self.refresh_s:
                    self.refresh()
        return self._keys

    def verify(self, presented: str) -> ApiKey | None:
        """The active key `presented` is, or None (malformed, unknown, wrong secret, revoked).

        Reads the table first when the copy is `refresh_s` old or older.
        """
        return self._match(self._current(), presented)

    def check(self, presented: str) -> ApiKey | None:
        """As `verify`, against the copy as it is: never reads the database (an event loop's
        side, while a thread of its own calls `refresh`)."""
        return self._match(self._keys, presented)

    @staticmethod
    def _match(keys: dict[str, tuple[str, ApiKey]], presented: str) -> ApiKey | None:
        parsed = parse(presented)
        if parsed is None:
            return None
        key_id, secret = parsed
        entry = keys.get(key_id)
        # Compare against a digest even for an unknown id, so timing says nothing about ids.
        stored, record = entry if entry else ("0" * 64, None)
        if not hmac.compare_digest(stored, _digest(secret)) or record is None:
            return None
        return record if record.active else None
