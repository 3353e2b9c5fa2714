"""How the Dagster clients talk HTTP: which failures are retried, and what a GraphQL answer is.

Written once for the sync client and the async poller: requests are retried with exponential
backoff on connection errors, timeouts and HTTP 5xx, never on a GraphQL error, which is an answer
(raised at once as `DagsterError`). A request that may have been processed (a read timeout, an
HTTP 500) is retried only when it is `repeatable`: a launch is not.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import tenacity

from airflow_bridge.dagster_results import DagsterError, DagsterUnreachable, LaunchOutcomeUnknown

log = logging.getLogger("airflow_bridge.dagster_client")

#: HTTP statuses that say the request was not processed, so even a launch may be sent again.
_NOT_PROCESSED = frozenset({503})
MAX_BACKOFF_S = 30.0


class ServerError(Exception):
    """An HTTP 5xx answer, raised so that tenacity can retry it."""

    def __init__(self, response: httpx.Response):
        super().__init__(f"HTTP {response.status_code}: {response.text[:300]}")
        self.status_code = response.status_code


def retryable(exc: BaseException, repeatable: bool) -> bool:
    if isinstance(exc, ServerError):
        return repeatable or exc.status_code in _NOT_PROCESSED
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True  # the request never left this machine
    return repeatable and isinstance(exc, httpx.TransportError)


def retry_policy(
    graphql_url: str, *, retries: int, backoff_s: float, repeatable: bool
) -> dict[str, Any]:
    """Keyword arguments of `tenacity.Retrying` and `tenacity.AsyncRetrying`, the same for both."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        log.warning(
            "Dagster at %s: %s; try %d of %d",
            graphql_url,
            state.outcome.exception() if state.outcome else None,
            state.attempt_number + 1,
            retries + 1,
        )

    return {
        "stop": tenacity.stop_after_attempt(retries + 1),
        "wait": tenacity.wait_exponential(multiplier=backoff_s, max=MAX_BACKOFF_S),
        "retry": tenacity.retry_if_exception(lambda exc: retryable(exc, repeatable)),
        "before_sleep": before_sleep,
        "reraise": True,
    }


def checked(response: httpx.Response) -> httpx.Response:
    """The response, unless it is a 5xx: then `ServerError`, for the retry policy to judge."""
    if response.status_code >= 500:
        raise ServerError(response)
    return response


def transport_error(
    exc: httpx.TransportError | ServerError, graphql_url: str, tries: int, repeatable: bool
) -> DagsterUnreachable:
    """The error to raise once the tries are spent (or a launch may have been received)."""
    if not retryable(exc, repeatable):
        return LaunchOutcomeUnknown(
            f"no answer from the Dagster webserver at {graphql_url} ({exc!r}) after "
            "it may have received the request, which is not repeated blindly: look for "
            "the run in the Dagster UI before launching again (launch_or_find does)"
        )
    return DagsterUnreachable(
        f"cannot reach the Dagster webserver at {graphql_url} after {tries} "
        f"tr{'y' if tries == 1 else 'ies'} ({exc!r}): check that dagster-webserver is "
        "running there and that the URL (DAGSTER_WEBSERVER_URL) is right"
    )


def graphql_data(response: httpx.Response, graphql_url: str) -> dict[str, Any]:
    """The `data` of a GraphQL answer; `DagsterError` for GraphQL errors or a non-answer."""
    try:
        body = response.json()
    except ValueError as exc:
        raise DagsterError(
            f"{graphql_url} answered HTTP {response.status_code} with something that is "
            f"not JSON ({response.text[:200]!r}): is this a Dagster webserver?"
        ) from exc
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        messages = "; ".join(str(e.get("message", e)) for e in errors)
        raise DagsterError(f"GraphQL error from {graphql_url}: {messages}")
    if response.is_error or not isinstance(body, dict) or body.get("data") is None:
        raise DagsterError(
            f"{graphql_url} answered HTTP {response.status_code}: {response.text[:300]}"
        )
    data: dict[str, Any] = body["data"]
    return data


def base_url(url: str) -> str:
    """The webserver's URL without a trailing slash or `/graphql`."""
    return url.rstrip("/").removesuffix("/graphql")
