"""Who may call what: API keys from `Authorization: Bearer <key>`, checked against the key ring.

`Keys` holds the app's `KeyRing` (`fraud_core.api_keys`) on the prediction log's engine and a
thread that reads the key table again every `FRAUD_API_KEYS_REFRESH_S`: a request only compares
hashes in memory, and a revoked key is refused by every worker within that time. If the table
cannot be read for `stale_after_s`, keys are refused with 503 rather than trusted from an old copy.

- `require(*scopes)`: a dependency returning the `ApiKey`, which must hold one of `scopes`. 401
  (with `WWW-Authenticate: Bearer`) without a key or with one that is unknown, revoked or
  malformed; 403 with a valid key lacking the scope; 503 when the prediction log is off (keys
  live in its database) or the key table has not been read for too long.
- `score_caller`: the scoring routes' caller: open unless `FRAUD_API_REQUIRE_SCORE_KEY`, then
  `require(SCORE)`; a key sent to an open route still names the caller for its rate limit.

A key is never logged, nor echoed in an answer: only its public id is.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError

from api.config import Settings
from api.metrics import Metrics
from api.rate_limits import FEEDBACK as FEEDBACK_GROUP
from api.rate_limits import SCORE as SCORE_GROUP
from api.rate_limits import RateLimits
from fraud_core.api_keys import ADMIN, FEEDBACK, LABEL_CORRECT, SCORE, ApiKey, KeyRing

log = logging.getLogger("fraud_api.auth")

#: The OpenAPI security scheme: /docs gets an Authorize button that sends the header.
SCHEME = "APIKey"
bearer = HTTPBearer(
    auto_error=False,
    scheme_name=SCHEME,
    bearerFormat="fk_<key id>_<secret>",
    description="An API key (`fraud-keys create --name NAME --scope SCOPE`): scopes `score`, "
    "`feedback`, `label:correct`, `admin`. Sent as `Authorization: Bearer <key>`.",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]

#: A key table unread for this many refresh intervals (at least `MIN_STALE_S`) is not trusted.
STALE_INTERVALS = 10
MIN_STALE_S = 30.0

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or one that is unknown, revoked or malformed"},
    403: {"description": "The API key lacks the route's scope"},
    429: {"description": "Over the rate limit of this key (or client address): see Retry-After"},
}


class KeysUnavailable(RuntimeError):
    """The key table has not been read for too long: no key can be trusted."""


class Keys:
    """The app's key ring and the thread that keeps it fresh."""

    def __init__(self, engine: sa.Engine, refresh_s: float) -> None:
        self.ring = KeyRing(engine, refresh_s=refresh_s)
        self.refresh_s = refresh_s
        self.stale_after_s = max(MIN_STALE_S, STALE_INTERVALS * refresh_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="api-keys", daemon=True)
        self._failing = False

    def start(self) -> None:
        self._refresh()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10.0)

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self._refresh()

    def _refresh(self) -> None:
        try:
            self.ring.refresh()
        except SQLAlchemyError as exc:
            if not self._failing:  # once per outage, not every refresh
                log.warning("cannot read the API keys, keeping the last copy: %s", exc)
            self._failing = True
            return
        if self._failing:
            log.info("reading the API keys again")
        self._failing = False

    def check(self, presented: str) -> ApiKey | None:
        """The active key `presented` is, or None; `KeysUnavailable` when the copy is too old."""
        if self.ring.age_s > self.stale_after_s:
            raise KeysUnavailable(
                "the API keys cannot be read from the prediction log's database: try again"
            )
        return self.ring.check(presented)


@dataclass(frozen=True)
class Caller:
    """Who sent a request: its key, else its address."""

    key: ApiKey | None
    address: str

    @property
    def identity(self) -> str:
        return f"key:{self.key.key_id}" if self.key else f"address:{self.address}"


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


def _keys(request: Request) -> Keys | None:
    keys: Keys | None = request.app.state.keys
    return keys


def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def _no_keys() -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "API keys live in the prediction log's database, and the log is off "
        "(FRAUD_PREDICTION_LOG_URL=off)",
    )


def _verified(request: Request, keys: Keys, presented: str) -> ApiKey:
    try:
        key = keys.check(presented)
    except KeysUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    if key is None:
        _metrics(request).auth_refused.labels(reason="invalid").inc()
        # Never the key itself in the answer: it may be a real one with a typo.
        raise _unauthorized("unknown, revoked or malformed API key")
    return key


def require(
    *scopes: str,
) -> Callable[[Request, HTTPAuthorizationCredentials | None], Awaitable[ApiKey]]:
    """A dependency: the request's API key, which must hold one of `scopes`."""
    wanted = " or ".join(scopes)

    async def dependency(request: Request, credentials: Credentials) -> ApiKey:
        keys = _keys(request)
        if keys is None:
            raise _no_keys()
        if credentials is None:
            _metrics(request).auth_refused.labels(reason="missing").inc()
            raise _unauthorized(
                f"this route needs an API key with the {wanted} scope: send "
                "'Authorization: Bearer <key>' (keys are made with fraud-keys create)"
            )
        key = _verified(request, keys, credentials.credentials)
        if not any(key.allows(scope) for scope in scopes):
            _metrics(request).auth_refused.labels(reason="scope").inc()
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"API key {key.key_id} has the scopes {', '.join(sorted(key.scopes))}; "
                f"this route needs {wanted}",
            )
        return key

    dependency.__name__ = f"require_{'_or_'.join(s.replace(':', '_') for s in scopes)}"
    return dependency


_score_key = require(SCORE)
_feedback_key = require(FEEDBACK, LABEL_CORRECT)
admin_key = require(ADMIN)


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _limits(request: Request) -> RateLimits:
    limits: RateLimits = request.app.state.rate_limits
    return limits


async def score_caller(request: Request, credentials: Credentials) -> Caller:
    """The caller of a scoring route, counted against the `score` rate limit."""
    settings: Settings = request.app.state.settings
    keys = _keys(request)
    if settings.require_score_key:
        key: ApiKey | None = await _score_key(request, credentials)
    elif credentials is not None and keys is not None:
        # Open, but a key sent is checked: a client learns its key is wrong, and cannot take a
        # fresh rate-limit count with each made-up key.
        try:
            key = keys.check(credentials.credentials)
        except KeysUnavailable:
            key = None  # the route is open: counted by address instead
        else:
            if key is None:
                _metrics(request).auth_refused.labels(reason="invalid").inc()
                raise _unauthorized("unknown, revoked or malformed API key")
    else:
        key = None
    caller = Caller(key, _address(request))
    await _limits(request).hit(SCORE_GROUP, caller.identity)
    return caller


async def feedback_key(request: Request, credentials: Credentials) -> ApiKey:
    """The key of a label (`feedback` or `label:correct`), counted against its rate limit."""
    key = await _feedback_key(request, credentials)
    await _limits(request).hit(FEEDBACK_GROUP, f"key:{key.key_id}")
    return key


async def admin_caller(request: Request, credentials: Credentials) -> str:
    """Who calls an admin route: an `admin` key's id, or `reload token` (FRAUD_API_RELOAD_TOKEN)."""
    settings: Settings = request.app.state.settings
    token = settings.reload_token
    if (
        token
        and credentials is not None
        and secrets.compare_digest(credentials.credentials.encode(), token.encode())
    ):
        return "reload token"
    if token and _keys(request) is None:
        raise _unauthorized(
            "missing or wrong token (send 'Authorization: Bearer <FRAUD_API_RELOAD_TOKEN>'; "
            "API keys are off with the prediction log)"
        )
    key = await admin_key(request, credentials)
    return f"key {key.key_id}"


def document_optional_security(app: FastAPI, settings: Settings, paths: tuple[str, ...]) -> None:
    """Say in the OpenAPI schema that `paths` take a key but do not need one (when open)."""
    if settings.require_score_key:
        return
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for path in paths:
                for operation in schema.get("paths", {}).get(path, {}).values():
                    operation["security"] = [{}, *operation.get("security", [])]
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
