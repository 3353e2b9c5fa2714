"""Operator routes: reload the model now.

Every route here needs an API key with the `admin` scope (401 without, 403 with another scope;
503 when the prediction log, where keys live, is off). `POST /admin/reload` also takes the
`FRAUD_API_RELOAD_TOKEN` bearer token, its one credential before keys, so that deployments using
it keep working.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, status
from starlette.concurrency import run_in_threadpool

from api.deps import AdminCaller, Holder

log = logging.getLogger("fraud_api.admin")

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post(
    "/reload",
    responses={
        401: {"description": "No admin key or reload token, or a wrong one"},
        403: {"description": "The API key lacks the admin scope"},
        409: {"description": "The new bundle was refused; the old model keeps serving"},
        503: {"description": "API keys are off with the prediction log (the token still works)"},
    },
)
async def reload(caller: AdminCaller, holder: Holder) -> dict[str, object]:
    """Check for a newly promoted model now and load it (verified) if there is one.

    Needs an API key with the `admin` scope, or the `FRAUD_API_RELOAD_TOKEN` bearer token.
    """
    log.info("model reload asked by %s", caller)
    # Not forced: an unchanged production answers `changed: false`; a bundle refused before is
    # tried again here (an operator asking is worth one more attempt).
    force = holder.current is None or holder.last_error is not None
    # Loading takes milliseconds to seconds (longer from a remote MLflow): not on the event loop,
    # where it would stall every request in flight.
    result = await run_in_threadpool(holder.refresh, force)
    if result.error:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"refused, still serving {result.version}: {result.error}",
        )
    return {"changed": result.changed, "model_version": result.version}
