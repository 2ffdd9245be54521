"""The settings document Segment's client libraries load before they send anything.

analytics.js fetches `<cdnURL>/v1/projects/<writeKey>/settings`; analytics-kotlin and analytics-swift fetch
`https://<cdnHost>/projects/<writeKey>/settings` with a cdnHost that includes `/v1`. Pointed at ingest, they
get this document: only the Segment.io destination (us), with its `apiHost` set to where ingest is reached,
so a page that sets `cdnURL` alone already sends its events here. Device-mode destinations, tracking plans,
middleware and the library's own usage metrics are all off: nothing else is loaded into the store's pages.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.ingest.context import context
from services.ingest.cors import check_origin
from shared.web import ApiError, ErrorBody

router = APIRouter(prefix="/v1", tags=["segment"])


class SegmentSettings(BaseModel):
    """The part of Segment's settings document the libraries read (analytics-next's CDNSettings,
    analytics-kotlin's and analytics-swift's Settings)."""

    integrations: dict[str, Any] = Field(
        description="`Segment.io` only: apiKey (the write key), apiHost (ingest, with `/v1`), protocol."
    )
    plan: dict[str, Any] = Field(description="Tracking plan: every event enabled.")
    edgeFunction: dict[str, Any] = Field(description="None.")
    analyticsNextEnabled: bool = True
    middlewareSettings: dict[str, Any] = Field(description="None.")
    enabledMiddleware: dict[str, Any] = Field(description="None.")
    metrics: dict[str, Any] = Field(description="The library's own usage metrics: off (sampleRate 0).")
    legacyVideoPluginsEnabled: bool = False
    remotePlugins: list[Any] = Field(description="None.")


def _api_host(request: Request, public_url: str | None) -> tuple[str, str]:
    """(host[:port]/v1, scheme) where the library should send its calls."""
    if public_url:
        scheme, _, host = public_url.rstrip("/").partition("://")
        return f"{host}/v1", scheme
    return f"{request.url.netloc}/v1", request.url.scheme


@router.get(
    "/projects/{write_key}/settings",
    summary="Settings document of a write key (what Segment's libraries load first)",
    response_model=SegmentSettings,
    responses={
        403: {"model": ErrorBody, "description": "the page's origin is not in the store's allowed_origins"},
        404: {"model": ErrorBody, "description": "no store has this write key"},
    },
)
async def project_settings(write_key: str, request: Request) -> JSONResponse:
    """Served for either of a store's keys; a browser (it sends an Origin header) only from the store's
    allowed_origins. Cacheable for five minutes, as Segment's CDN does."""
    ctx = context(request)
    found = ctx.stores.resolve_write_key(write_key)
    if found is None:
        raise ApiError(404, "unknown_write_key", "no store has this write key")
    store, _ = found
    check_origin(request, store.allows_origin)
    api_host, protocol = _api_host(request, ctx.settings.ingest_public_url)
    document = SegmentSettings(
        integrations={
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": api_host,
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
                "versionSettings": {"version": "4.4.7", "componentTypes": ["browser"]},
            }
        },
        plan={"track": {"__default": {"enabled": True, "integrations": {}}}},
        edgeFunction={},
        middlewareSettings={},
        enabledMiddleware={},
        metrics={"sampleRate": 0},
        remotePlugins=[],
    )
    return JSONResponse(
        document.model_dump(),
        headers={"Cache-Control": "public, max-age=300", "Vary": "Origin"},
    )
