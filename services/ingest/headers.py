"""Webhook headers read straight from the request: the one way both platforms' webhooks read theirs.

Declared as FastAPI `Header()` parameters, five headers were validated one by one through FastAPI's
dependency machinery on every webhook: an eighth of ingest's time per request. Read here instead, in one
pass over the request's raw headers, they are documented in OpenAPI exactly as FastAPI documented them, and
a missing required one gets the same 422 naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Scope

from shared.web import ApiError, FieldError


@dataclass(frozen=True)
class HeaderSpec:
    title: str  # as the platform writes it, e.g. X-Shopify-Topic
    required: bool = False

    @property
    def name(self) -> str:
        return self.title.lower()


@dataclass(frozen=True)
class HeaderSet:
    """The headers one route reads."""

    specs: tuple[HeaderSpec, ...]
    # ASGI servers give header names in lower case (the ASGI spec requires it), as bytes.
    _raw_names: frozenset[bytes] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_raw_names", frozenset(spec.name.encode() for spec in self.specs))

    def read(self, scope: Scope) -> dict[str, str]:
        """Lower-case name -> value of each of these headers the request has (the first, when repeated, as
        Starlette's `request.headers.get` gives it); 422 naming every required header that is missing."""
        found: dict[str, str] = {}
        wanted = self._raw_names
        for name, value in scope["headers"]:
            if name in wanted:
                key = name.decode("latin-1")
                if key not in found:
                    found[key] = value.decode("latin-1")
        if len(found) < len(self.specs):
            missing = [
                FieldError(field=spec.name, message="Field required")
                for spec in self.specs
                if spec.required and spec.name not in found
            ]
            if missing:
                detail = "; ".join(f"{e.field}: {e.message}" for e in missing)
                raise ApiError(422, "validation_error", detail, errors=missing)
        return found

    def openapi_parameters(self) -> dict[str, Any]:
        """The `openapi_extra` of a route that reads these headers itself."""
        return openapi_parameters(self.specs)


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
