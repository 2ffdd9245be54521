"""A local SMTP sink for `make up`: accepts every message, keeps it on disk, shows it on a small web UI.

    python -m deploy.devstack.smtp_sink --smtp-port 1025 --http-port 8025 --dir DIR

Messages are stored as DIR/<id>.eml plus DIR/<id>.json (the SMTP envelope), so they survive a restart
of the sink and can be opened with any mail client. HTTP:
    GET /                        the list of messages (HTML)
    GET /messages/{id}           one message (HTML)
    GET /messages/{id}.eml       the raw message
    GET /api/messages            [{id, from, to, subject, date, received_at}], newest first
    GET /api/messages/{id}       plus cc, envelope_from, envelope_to, headers, text, html, attachments
    DELETE /api/messages         forget every message
    GET /healthz                 200 while the sink runs
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import re
import time
import uuid
import warnings
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import uvicorn
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, Response

_ID = re.compile(r"^[0-9]{19}-[0-9a-f]{8}$")
_PARSER = BytesParser(policy=policy.default)


def _addresses(message: EmailMessage, header: str) -> list[str]:
    return [address for _, address in getaddresses(message.get_all(header, [])) if address]


def _content(part: object) -> str | None:
    if not isinstance(part, EmailMessage):
        return None
    content = part.get_content()
    # Mail travels with CRLF line ends; JSON readers and the web page want plain newlines.
    return content.replace("\r\n", "\n") if isinstance(content, str) else None


class MessageStore:
    """Messages on disk, one .eml and one .json (envelope) per message; ids sort by arrival."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, content: bytes, envelope_from: str | None, envelope_to: list[str]) -> str:
        message_id = f"{time.time_ns():019d}-{uuid.uuid4().hex[:8]}"
        meta = {"envelope_from": envelope_from, "envelope_to": envelope_to, "received_at": time.time()}
        # The .json is written last: a message is listed only once both files are complete.
        (self.directory / f"{message_id}.eml").write_bytes(content)
        (self.directory / f"{message_id}.json").write_text(json.dumps(meta))
        return message_id

    def ids(self) -> list[str]:
        return sorted((p.stem for p in self.directory.glob("*.json") if _ID.match(p.stem)), reverse=True)

    def raw(self, message_id: str) -> bytes | None:
        if not _ID.match(message_id):
            return None
        try:
            return (self.directory / f"{message_id}.eml").read_bytes()
        except FileNotFoundError:
            return None

    def _load(self, message_id: str) -> tuple[EmailMessage, dict[str, Any]] | None:
        raw = self.raw(message_id)
        if raw is None:
            return None
        meta = json.loads((self.directory / f"{message_id}.json").read_text())
        message = _PARSER.parsebytes(raw)
        assert isinstance(message, EmailMessage)  # guaranteed by policy.default
        return message, meta

    def summary(self, message_id: str) -> dict[str, Any] | None:
        loaded = self._load(message_id)
        if loaded is None:
            return None
        message, meta = loaded
        received_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(meta["received_at"]))
        return {
            "id": message_id,
            "from": str(message.get("From", "")),
            "to": _addresses(message, "To") or meta["envelope_to"],
            "subject": str(message.get("Subject", "")),
            "date": str(message.get("Date", "")) or received_at,
            "received_at": received_at,
        }

    def detail(self, message_id: str) -> dict[str, Any] | None:
        loaded = self._load(message_id)
        summary = self.summary(message_id)
        if loaded is None or summary is None:
            return None
        message, meta = loaded
        headers: dict[str, str] = {}
        for name, value in message.items():
            # Repeated headers (Received...) keep every value, one per line.
            headers[name] = f"{headers[name]}\n{value}" if name in headers else str(value)
        text = message.get_body(preferencelist=("plain",))
        body_html = message.get_body(preferencelist=("html",))
        return {
            **summary,
            "cc": _addresses(message, "Cc"),
            "envelope_from": meta["envelope_from"],
            "envelope_to": meta["envelope_to"],
            "headers": headers,
            "text": _content(text),
            "html": _content(body_html),
            "attachments": [
                {"filename": part.get_filename(), "content_type": part.get_content_type()}
                for part in message.iter_attachments()
                if isinstance(part, EmailMessage)
            ],
        }

    def clear(self) -> int:
        ids = self.ids()
        for message_id in ids:
            (self.directory / f"{message_id}.json").unlink(missing_ok=True)
            (self.directory / f"{message_id}.eml").unlink(missing_ok=True)
        return len(ids)


class SinkHandler:
    """aiosmtpd handler: accept every recipient and store every message."""

    def __init__(self, store: MessageStore) -> None:
        self.store = store

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", errors="surrogateescape")
        self.store.add(content or b"", envelope.mail_from, list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


def _accept_any_login(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    # A notifier configured with SMTP credentials must be able to log in to the sink too.
    return AuthResult(success=True)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:.4rem;text-align:left;vertical-align:top}
tr:hover{background:#f6f6f6}pre{white-space:pre-wrap;background:#f6f6f6;padding:1rem}
iframe{width:100%;height:60vh;border:1px solid #ddd}.muted{color:#777}
"""


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _list_page(store: MessageStore) -> HTMLResponse:
    rows = []
    for message_id in store.ids():
        item = store.summary(message_id)
        if item is None:
            continue
        link = f"/messages/{message_id}"
        rows.append(
            "<tr>"
            f"<td class=muted>{html.escape(item['received_at'])}</td>"
            f"<td>{html.escape(item['from'])}</td>"
            f"<td>{html.escape(', '.join(item['to']))}</td>"
            f"<td><a href='{link}'>{html.escape(item['subject'] or '(no subject)')}</a></td>"
            f"<td class=muted>{html.escape(item['date'])}</td>"
            "</tr>"
        )
    table = (
        "<table><tr><th>Received</th><th>From</th><th>To</th><th>Subject</th><th>Date</th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else "<p class=muted>No messages yet.</p>"
    )
    header = f"<h1>SMTP sink</h1><p class=muted>{len(rows)} message(s). <a href='/'>Refresh</a></p>"
    return _page("SMTP sink", header + table)


def _message_page(detail: dict[str, Any]) -> HTMLResponse:
    headers = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
        for name, value in detail["headers"].items()
    )
    parts = []
    if detail["html"]:
        # Sandboxed: the message's HTML is shown, never run; links open outside the frame.
        srcdoc = html.escape("<base target='_blank'>" + detail["html"], quote=True)
        parts.append(
            f"<h2>HTML</h2><iframe sandbox='allow-popups allow-popups-to-escape-sandbox' "
            f'srcdoc="{srcdoc}"></iframe>'
        )
    if detail["text"]:
        parts.append(f"<h2>Text</h2><pre>{html.escape(detail['text'])}</pre>")
    raw_link = f"/messages/{detail['id']}.eml"
    body = (
        f"<p><a href='/'>&larr; all messages</a> · <a href='{raw_link}'>raw .eml</a></p>"
        f"<h1>{html.escape(detail['subject'] or '(no subject)')}</h1>"
        f"<table>{headers}</table>" + "".join(parts)
    )
    return _page(detail["subject"] or "message", body)


def create_app(store: MessageStore) -> FastAPI:
    app = FastAPI(title="SMTP sink", docs_url="/docs", redoc_url=None)

    def detail_or_404(message_id: str) -> dict[str, Any]:
        detail = store.detail(message_id)
        if detail is None:
            raise HTTPException(status_code=404, detail=f"no message {message_id}")
        return detail

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/messages")
    def list_messages() -> list[dict[str, Any]]:
        return [item for item in map(store.summary, store.ids()) if item is not None]

    @app.get("/api/messages/{message_id}")
    def get_message(message_id: str) -> dict[str, Any]:
        return detail_or_404(message_id)

    @app.delete("/api/messages")
    def clear_messages() -> dict[str, int]:
        return {"deleted": store.clear()}

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return _list_page(store)

    @app.get("/messages/{message_id}.eml")
    def raw_message(message_id: str) -> Response:
        raw = store.raw(message_id)
        if raw is None:
            raise HTTPException(status_code=404, detail=f"no message {message_id}")
        return Response(raw, media_type="message/rfc822")

    @app.get("/messages/{message_id}", response_class=HTMLResponse)
    def show_message(message_id: str) -> HTMLResponse:
        return _message_page(detail_or_404(message_id))

    return app


async def serve(host: str, smtp_port: int, http_port: int, directory: Path) -> None:
    """Serve SMTP and HTTP until SIGTERM/SIGINT (uvicorn handles both and returns)."""
    store = MessageStore(directory)
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(
        lambda: SMTP(
            SinkHandler(store),
            # A fixed name: the default looks up this host's FQDN, which can stall without DNS.
            hostname="smtp-sink.localhost",
            enable_SMTPUTF8=True,
            auth_require_tls=False,
            authenticator=_accept_any_login,
        ),
        host,
        smtp_port,
    )
    config = uvicorn.Config(create_app(store), host=host, port=http_port, log_level="warning", lifespan="off")
    try:
        await uvicorn.Server(config).serve()
    finally:
        smtp.close()
        await smtp.wait_closed()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.devstack.smtp_sink", description="A local SMTP sink with a web UI."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--smtp-port", type=int, default=1025)
    parser.add_argument("--http-port", type=int, default=8025)
    parser.add_argument("--dir", type=Path, required=True, help="where received messages are stored")
    args = parser.parse_args(argv)
    # aiosmtpd warns on every login about an attribute it reads itself; the sink has nothing to change.
    warnings.filterwarnings("ignore", message=".*login_data is deprecated.*")
    print(
        f"SMTP sink: smtp://{args.host}:{args.smtp_port}, UI http://{args.host}:{args.http_port}/, "
        f"messages in {args.dir}",
        flush=True,
    )
    asyncio.run(serve(args.host, args.smtp_port, args.http_port, args.dir))


if __name__ == "__main__":
    main()
