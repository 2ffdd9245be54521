"""REST API of the retargeting audiences: their sizes, and their members as files for people or ad tools."""

from __future__ import annotations

import base64
import binascii
import csv
import io
from collections.abc import AsyncIterator, Sequence
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
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
from shared.web import COMMON_ERROR_RESPONSES, ApiError, FieldError, StoreDep


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
        limit: Annotated[
            int | None,
            Query(
                ge=1,
                le=MAX_EXPORT_PAGE,
                description=f"members per page (at most {MAX_EXPORT_PAGE}); without it every member is "
                "streamed. A full page names the next in `Link` (rel=next, with `cursor`).",
            ),
        ] = None,
        cursor: Annotated[
            str | None,
            Query(max_length=500, description="where the previous page ended (from its `Link` header)"),
        ] = None,
    ) -> Response:
        if name not in store.audiences.active():
            raise ApiError(404, "audience_not_found", f"no audience {name!r} in store {store.store_id!r}")
        engine: AsyncEngine = request.app.state.engine
        after = _decode_cursor(cursor) if cursor is not None else None
        headers = {
            "Content-Disposition": f'attachment; filename="{store.store_id}-{name}-{export_format}.csv"'
        }
        if limit is None:
            return StreamingResponse(
                _csv_stream(engine, store.store_id, name, export_format, after=after),
                media_type="text/csv; charset=utf-8",
                headers=headers,
            )
        # One page: read (at most MAX_EXPORT_PAGE members), so the next cursor is known for the headers.
        members: list[CustomerFacts] = []
        async with engine.connect() as conn:
            async for partition in repo.exportable_members(
                conn, store.store_id, name, after=after, limit=limit
            ):
                members.extend(partition)
        if len(members) == limit:
            following = request.url.include_query_params(cursor=_encode_cursor(members[-1].customer_id))
            headers["Link"] = f'<{following}>; rel="next"'
        return Response(
            _csv_page(export_format, members), media_type="text/csv; charset=utf-8", headers=headers
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


# A page of an export is read whole before it is answered (its Link names where it ended).
MAX_EXPORT_PAGE = 10_000


def _encode_cursor(customer_id: str) -> str:
    # Opaque, so a guest's id (email:<address>) does not sit readable in URLs and proxy logs.
    return base64.urlsafe_b64encode(customer_id.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        decoded = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
        if not decoded:
            raise ValueError("empty cursor")
        return decoded
    except (binascii.Error, ValueError) as exc:
        raise ApiError(
            422,
            "validation_error",
            "cursor: not a cursor this API gave",
            errors=[FieldError(field="cursor", message="not a cursor this API gave")],
        ) from exc


def _csv_page(export_format: ExportFormat, members: Sequence[CustomerFacts]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(_HEADERS[export_format])
    for facts in members:
        row = _row(export_format, facts)
        if row is not None:
            writer.writerow(row)
    return buffer.getvalue()


async def _csv_stream(
    engine: AsyncEngine,
    store_id: str,
    audience: str,
    export_format: ExportFormat,
    *,
    after: str | None = None,
) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(_HEADERS[export_format])
    yield _drain(buffer)
    async with engine.connect() as conn:
        async for partition in repo.exportable_members(conn, store_id, audience, after=after):
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
