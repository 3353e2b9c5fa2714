"""Rate limits per API key (per client address without one) on scoring and on label feedback.

`limits`' moving window: at most N requests in any window of the stated length, counted per
caller and per group (`score`: the four scoring routes together, a batch one request; `feedback`).
Counts live in memory (each worker its own, the default without Redis) or in Redis, shared by
every worker and replica, under the deployment's key prefix. A request over a limit is answered
429 with `Retry-After` (whole seconds until the window lets one more through) and a message
naming the limit. If the counts' Redis is unreachable the request goes through, with a warning:
rate limits guard the service, they must not be what takes it down.
"""

from __future__ import annotations

import logging
import math
import time

import redis.asyncio
from fastapi import HTTPException, status
from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from api.config import Settings
from api.metrics import Metrics

log = logging.getLogger("fraud_api.rate_limits")

SCORE = "score"
FEEDBACK = "feedback"
GROUPS = (SCORE, FEEDBACK)
OFF = "off"
#: A Redis that does not answer within this is skipped (the request goes through).
REDIS_TIMEOUT_S = 0.5
#: At most one warning about unreachable counts per this many seconds.
_WARN_EVERY_S = 10.0


def parse_limits(value: str, variable: str) -> tuple[RateLimitItem, ...]:
    """The limits of a setting ("6000/minute", "100/second;5000/hour"); none for `off`."""
    if value.strip().lower() == OFF:
        return ()
    try:
        return tuple(parse_many(value))
    except ValueError:
        raise ValueError(
            f"{variable}={value!r} is not a rate limit: write it as '6000/minute' "
            "(several: '100/second;5000/hour'), or 'off'"
        ) from None


def storage_url(settings: Settings) -> str:
    """Where the counts live: the setting, else the feature state's Redis, else memory."""
    url = (settings.rate_limit_storage or "").strip()
    if not url:
        state = (settings.feature_state_url or "").strip()
        url = state if state.startswith(("redis://", "rediss://")) else "memory://"
    if not url.startswith(("memory://", "redis://", "rediss://")):
        raise ValueError(
            f"FRAUD_API_RATE_LIMIT_STORAGE={url!r}: the counts live in memory:// or redis://"
        )
    return url


def _hidden(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


class RateLimits:
    """The API's limits by group and the storage of their counts."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.limits = {
            SCORE: parse_limits(settings.rate_limit_score, "FRAUD_API_RATE_LIMIT_SCORE"),
            FEEDBACK: parse_limits(settings.rate_limit_feedback, "FRAUD_API_RATE_LIMIT_FEEDBACK"),
        }
        self.metrics = metrics
        url = storage_url(settings)
        self.where = _hidden(url)
        self._pool: redis.asyncio.ConnectionPool | None = None
        storage: Storage
        if url.startswith("memory://"):
            storage = storage_from_string("async+memory://", wrap_exceptions=True)  # type: ignore[assignment]
        else:
            # A pool of our own, so that closing the app closes its connections.
            self._pool = redis.asyncio.ConnectionPool.from_url(
                url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
            )
            storage = storage_from_string(  # type: ignore[assignment]
                f"async+{url}",
                implementation="redispy",
                key_prefix=f"{settings.feature_state_prefix}:ratelimit",
                wrap_exceptions=True,
                connection_pool=self._pool,  # type: ignore[arg-type]
            )
        self.storage = storage
        self.limiter = MovingWindowRateLimiter(storage)
        self._warned_at = -math.inf

    def describe(self) -> dict[str, object]:
        return {g: [str(item) for item in items] or OFF for g, items in self.limits.items()}

    async def hit(self, group: str, caller: str) -> None:
        """Count one request of `caller` (`key:<id>`, `address:<host>`) in `group`; 429 past it."""
        for item in self.limits[group]:
            try:
                allowed = await self.limiter.hit(item, group, caller)
                if allowed:
                    continue
                stats = await self.limiter.get_window_stats(item, group, caller)
            except StorageError as exc:
                self._storage_failed(exc)
                return
            retry = max(1, math.ceil(stats.reset_time - time.time()))
            self.metrics.rate_limited.labels(group=group).inc()
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"rate limit of {item} for {group} requests ({caller}) reached: retry in "
                f"{retry} s (FRAUD_API_RATE_LIMIT_{group.upper()})",
                headers={"Retry-After": str(retry)},
            )

    def _storage_failed(self, exc: StorageError) -> None:
        self.metrics.rate_limit_errors.inc()
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "rate limits not applied: their counts (%s) are unreachable: %s",
                self.where,
                exc.storage_error,
            )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
