"""Operator routes: reload the model now (token from `FRAUD_API_RELOAD_TOKEN`)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, status
from starlette.concurrency import run_in_threadpool

from api.deps import AppSettings, Holder

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post(
    "/reload",
    responses={
        401: {"description": "Missing or wrong token"},
        404: {"description": "No reload token configured"},
        409: {"description": "The new bundle was refused; the old model keeps serving"},
    },
)
async def reload(
    settings: AppSettings, holder: Holder, authorization: Annotated[str | None, Header()] = None
) -> dict[str, object]:
    """Check for a newly promoted model now and load it (verified) if there is one."""
    token = settings.reload_token
    if not token:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "reload endpoint disabled (no token set)")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or wrong token (send 'Authorization: Bearer <FRAUD_API_RELOAD_TOKEN>')",
            headers={"WWW-Authenticate": "Bearer"},
        )
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
