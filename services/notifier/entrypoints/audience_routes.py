"""REST API of the retargeting audiences: their sizes, and their members as files for people or ad tools."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.adapters import audience_repository as repo
from services.notifier.adapters.audience_export import (
    GOOGLE_COLUMNS,
    META_COLUMNS,
    PEOPLE_COLUMNS,
    google_row,
    meta_row,
    people_row,
)
from services.notifier.domain.audiences import CustomerFacts, exported_contact
from shared.web import COMMON_ERROR_RESPONSES, ApiError, StoreDep


class AudienceSummary(BaseModel):
    name: str
    description: str
    size: int = Field(description="members")
    exportable: int = Field(description="members with marketing consent and an email or a phone number")


class ExportFormat(StrEnum):
    CSV = "csv"
    META = "meta"
    GOOGLE = "google"


_FORMATS_DOC = """Only members who accept marketing and have not unsubscribed are exported, in every format;
members without a usable email or phone number are left out. The file is streamed (CSV, UTF-8, CRLF).

- `csv`: for people: `customer_id, email, phone, first_name, last_name, country, stage, health`
  (phone in E.164 when it can be placed in a country).
- `meta`: a Meta Custom Audience customer list: columns `EMAIL` and `PHONE`, SHA-256 hex of the email
  trimmed and lower-cased, and of the phone as digits with the country code (no '+', no leading zeros).
- `google`: a Google Ads Customer Match file: columns `Email` and `Phone`, SHA-256 hex of the email trimmed
  and lower-cased, and of the phone in E.164 with the '+'.
"""

_CSV_EXAMPLES = {
    "csv": "customer_id,email,phone,first_name,last_name,country,stage,health\r\n"
    "c-1,ines@example.com,+4915112345678,Ines,Berg,DE,loyal,active\r\n",
    "meta": "EMAIL,PHONE\r\n<sha256 of ines@example.com>,<sha256 of 4915112345678>\r\n",
    "google": "Email,Phone\r\n<sha256 of ines@example.com>,<sha256 of +4915112345678>\r\n",
}

_MEMBERS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the exportable members, as a CSV file in the requested format",
        "content": {
            "text/csv": {
                "schema": {"type": "string"},
                "examples": {
                    name: {"summary": f"format={name}", "value": value}
                    for name, value in _CSV_EXAMPLES.items()
                },
            }
        },
    },
    **COMMON_ERROR_RESPONSES,
}


def audience_router() -> APIRouter:
    router = APIRouter(prefix="/v1/stores/{store_id}", tags=["audiences"])

    @router.get(
        "/audiences",
        response_model=list[AudienceSummary],
        responses=COMMON_ERROR_RESPONSES,
        summary="The store's retargeting audiences with their sizes",
    )
    async def list_audiences(store: StoreDep, request: Request) -> list[AudienceSummary]:
        engine: AsyncEngine = request.app.state.engine
        async with engine.connect() as conn:
            counts = await repo.audience_counts(conn, store.store_id)
        return [
            AudienceSummary(
                name=name,
                description=definition.description,
                size=counts.get(name, repo.AudienceCounts()).size,
                exportable=counts.get(name, repo.AudienceCounts()).exportable,
            )
            for name, definition in store.audiences.active().items()
        ]

    @router.get(
        "/audiences/{name}/members",
        response_class=StreamingResponse,
        responses=_MEMBERS_RESPONSES,
        summary="Export an audience's members for people, Meta or Google",
        description=_FORMATS_DOC,
    )
    async def audience_members(
        store: StoreDep,
        name: str,
        request: Request,
        export_format: Annotated[
            ExportFormat, Query(alias="format", description="csv (for people), meta or google")
        ] = ExportFormat.CSV,
    ) -> StreamingResponse:
        if name not in store.audiences.active():
            raise ApiError(404, "audience_not_found", f"no audience {name!r} in store {store.store_id!r}")
        engine: AsyncEngine = request.app.state.engine
        return StreamingResponse(
            _csv_stream(engine, store.store_id, name, export_format),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{store.store_id}-{name}-{export_format}.csv"'
            },
        )

    return router


_HEADERS: dict[ExportFormat, Sequence[str]] = {
    ExportFormat.CSV: PEOPLE_COLUMNS,
    ExportFormat.META: META_COLUMNS,
    ExportFormat.GOOGLE: GOOGLE_COLUMNS,
}


def _row(export_format: ExportFormat, facts: CustomerFacts) -> list[str] | None:
    contact = exported_contact(facts)
    if contact is None:
        return None
    if export_format is ExportFormat.META:
        return meta_row(contact)
    if export_format is ExportFormat.GOOGLE:
        return google_row(contact)
    return people_row(facts)


async def _csv_stream(
    engine: AsyncEngine, store_id: str, audience: str, export_format: ExportFormat
) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(_HEADERS[export_format])
    yield _drain(buffer)
    async with engine.connect() as conn:
        async for partition in repo.exportable_members(conn, store_id, audience):
            for facts in partition:
                row = _row(export_format, facts)
                if row is not None:
                    writer.writerow(row)
            yield _drain(buffer)


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
