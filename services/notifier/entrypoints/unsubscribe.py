"""Unsubscribing: `GET /u/{token}` shows a page with one button, `POST /u/{token}` unsubscribes at once.

RFC 8058 one-click: mailbox providers POST `List-Unsubscribe=One-Click` to the URL in the List-Unsubscribe
header, without cookies or a session. GET never unsubscribes by itself, because link scanners and previews
fetch every URL in an email. Tokens are 256 random bits stored per customer: unguessable, and a token names
exactly one customer, so nobody can unsubscribe someone else.
"""

from __future__ import annotations

from datetime import datetime
from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from services.notifier.adapters import consent_repository, repository
from shared.logging import get_logger

log = get_logger(__name__)

router = APIRouter(tags=["unsubscribe"])

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 32rem; margin: 3rem auto; line-height: 1.5; color: #222;">
<h1 style="font-size: 1.4rem;">{title}</h1>{body}</body></html>"""


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=escape(title), body=body), status_code=status_code)


def _unknown() -> HTMLResponse:
    return _page("This link is not valid", "<p>It may have been copied incompletely.</p>", 404)


@router.get(
    "/u/{token}",
    response_class=HTMLResponse,
    summary="The unsubscribe page of an email's link: one button, nothing happens until it is pressed",
    responses={404: {"description": "unknown token", "content": {"text/html": {}}}},
)
async def unsubscribe_page(token: str, request: Request) -> HTMLResponse:
    async with request.app.state.engine.connect() as conn:
        customer = await repository.customer_by_token(conn, token)
    if customer is None:
        return _unknown()
    if customer.unsubscribed_at is not None:
        return _page("You are unsubscribed", "<p>You will get no more marketing emails from us.</p>")
    return _page(
        "Unsubscribe from our emails?",
        f'<form method="post" action="/u/{escape(token)}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        "<p>You will still get emails about your orders.</p>"
        '<button type="submit" style="font-size: 1rem; padding: .5rem 1rem;">Unsubscribe</button></form>',
    )


@router.post(
    "/u/{token}",
    response_class=HTMLResponse,
    summary="One-click unsubscribe (RFC 8058): unsubscribes at once, idempotent",
    responses={404: {"description": "unknown token", "content": {"text/html": {}}}},
)
async def unsubscribe_now(token: str, request: Request) -> HTMLResponse:
    now: datetime = request.app.state.clock()
    async with request.app.state.engine.begin() as conn:
        done = await repository.unsubscribe(conn, token, now)
        if done is not None:
            store = request.app.state.stores.get(done.store_id)
            if store is not None:
                await request.app.state.refresh_audiences(conn, store, [done.customer_id], now)
                if done.unsubscribed_at == now:
                    # The first time only: the store's platform hears of it too (its own newsletters stop).
                    await consent_repository.record(
                        conn, store, done.customer_id, subscribed=False, reason="unsubscribe", at=now
                    )
    if done is None:
        return _unknown()
    log.info("unsubscribed", store_id=done.store_id, customer_id=done.customer_id)
    return _page("You are unsubscribed", "<p>You will get no more marketing emails from us.</p>")
