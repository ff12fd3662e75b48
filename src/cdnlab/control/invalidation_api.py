"""HTTP routes of fleet invalidation: ``POST /v1/invalidations``, ``GET /v1/invalidations[/{id}]``.
Kept apart from app.py so the API module stays a list of small route groups."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response

from cdnlab.control.invalidation import Conflict, Invalidation, InvalidationManager, InvalidationRequest


def router(manager: InvalidationManager, dependencies: list[Any]) -> APIRouter:
    r = APIRouter(prefix="/v1/invalidations", tags=["invalidation"], dependencies=dependencies)

    @r.post(
        "",
        status_code=202,
        response_model=Invalidation,
        responses={
            200: {"description": "the same request seen before: its invalidation"},
            409: {"description": "request_id reused for a different request"},
        },
    )
    async def create(req: InvalidationRequest, response: Response) -> Invalidation:
        """Purge paths, prefixes and wildcard patterns on every registered appliance and on
        CloudFront. 202 with the new invalidation; 200 with the earlier one for a repeat."""
        try:
            inv, new = manager.submit(req)
        except Conflict as exc:
            raise HTTPException(409, str(exc)) from None
        if not new:
            response.status_code = 200
        response.headers["Location"] = f"/v1/invalidations/{inv.id}"
        return inv

    @r.get("", response_model=list[Invalidation], summary="recent invalidations, newest first")
    async def list_all() -> list[Invalidation]:
        return list(reversed(manager.items.values()))

    @r.get("/{inv_id}", response_model=Invalidation, responses={404: {"description": "unknown id"}})
    async def get(inv_id: str) -> Invalidation:
        """Status overall, per appliance (attempts, purged count, last error) and for CloudFront."""
        inv = await manager.refreshed(inv_id)
        if inv is None:
            raise HTTPException(404, f"no invalidation {inv_id!r}")
        return inv

    return r
