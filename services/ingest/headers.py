"""Webhook headers read straight from the request: the one way both platforms' webhooks read theirs.

Declared as FastAPI `Header()` parameters, five headers were validated one by one through FastAPI's
dependency machinery on every webhook: an eighth of ingest's time per request. Read here instead, they are
documented in OpenAPI exactly as FastAPI documented them, and a missing required one gets the same 422
naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from shared.web import ApiError, FieldError


@dataclass(frozen=True)
class HeaderSpec:
    title: str  # as the platform writes it, e.g. X-Shopify-Topic
    required: bool = False

    @property
    def name(self) -> str:
        return self.title.lower()


def openapi_parameters(specs: Sequence[HeaderSpec]) -> dict[str, Any]:
    """The `openapi_extra` of a route that reads these headers itself."""
    return {
        "parameters": [
            {
                "name": spec.name,
                "in": "header",
                "required": spec.required,
                "schema": {"type": "string", "title": spec.title}
                if spec.required
                else {"anyOf": [{"type": "string"}, {"type": "null"}], "title": spec.title},
            }
            for spec in specs
        ]
    }


def read_headers(request: Request, specs: Sequence[HeaderSpec]) -> dict[str, str | None]:
    """Header name (lower case) -> value; 422 naming every required header that is missing."""
    headers = request.headers
    values = {spec.name: headers.get(spec.name) for spec in specs}
    missing = [
        FieldError(field=spec.name, message="Field required")
        for spec in specs
        if spec.required and values[spec.name] is None
    ]
    if missing:
        detail = "; ".join(f"{e.field}: {e.message}" for e in missing)
        raise ApiError(422, "validation_error", detail, errors=missing)
    return values
