"""Health, readiness, the served model's manifest, and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.deps import AppMetrics, FeatureStateDep, Holder
from api.feature_state import StateUnavailable
from api.schemas import ModelInfo
from fraud_core.contracts import CARDS

router = APIRouter(tags=["operations"])


@router.get("/")
async def root(holder: Holder) -> dict[str, object]:
    """The original health check: the service is up (and which model it serves, if any)."""
    served = holder.current
    return {
        "status": "ok",
        "service": "fraud-detection-api",
        "model_loaded": served is not None,
        "model_version": served.version if served else None,
    }


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "alive"}


@router.get(
    "/ready",
    responses={
        503: {"description": "No model loaded, or the feature state unreachable: the reason"}
    },
)
async def ready(holder: Holder, feature_state: FeatureStateDep) -> JSONResponse:
    """Readiness: 200 once a model is loaded (and, for a card model, its feature state answers),
    503 with the reason before. A card model's answer holds the state's backend and size."""
    served = holder.current
    if served is None:
        return JSONResponse(
            {"status": "not ready", "reason": holder.not_ready_reason()},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    body: dict[str, Any] = {"status": "ready", "model_version": served.version}
    if served.model.contract == CARDS:
        body["contract"] = CARDS
        try:
            # Redis round trips: not on the event loop.
            body["feature_state"] = await run_in_threadpool(feature_state.describe)
        except StateUnavailable as exc:
            return JSONResponse(
                {**body, "status": "not ready", "reason": str(exc)},
                status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
    return JSONResponse(body)


@router.get("/model", response_model=ModelInfo, responses={503: {"description": "No model"}})
async def model(holder: Holder) -> ModelInfo:
    """The served model's manifest: version, MLflow run, data fingerprint, metrics, threshold."""
    served = holder.current
    if served is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, holder.not_ready_reason())
    manifest = served.model.manifest
    return ModelInfo(
        model_version=served.version,
        contract=served.model.contract,
        input_fields=list(served.model.input_fields),
        source=served.source,
        loaded_at=served.loaded_at.isoformat(timespec="seconds"),
        mlflow_run_id=manifest.get("mlflow_run_id"),
        registered_model=manifest.get("registered_model"),
        data_fingerprint=manifest.get("data_fingerprint"),
        data_source=manifest.get("data_source"),
        threshold=served.model.threshold,
        features=list(manifest.get("features", [])),
        metrics={k: float(v) for k, v in (manifest.get("metrics") or {}).items()},
        created_at=manifest.get("created_at"),
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(metrics: AppMetrics) -> Response:
    # Collectors read the drift report's database and the feature state (Redis): not on the
    # event loop that serves the scoring routes.
    body, content_type = await run_in_threadpool(metrics.render)
    return Response(body, media_type=content_type)
