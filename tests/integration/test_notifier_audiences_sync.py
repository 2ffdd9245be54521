"""Audience push sync against a real Postgres and a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.adapters.audience_repository import refresh_memberships
from services.notifier.adapters.audience_sync import AudienceSyncClient
from services.notifier.adapters.tables import audience_members, audience_sync_batches, customers
from services.notifier.domain.audiences import sha256_hex
from services.notifier.entrypoints.audience_worker import AudienceWorker
from shared.stores import StoreConfig, StoreRegistry

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
SECRET = "test-sync-secret-0123456789"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int
    synced_while_received: int  # members marked synced in the database at the moment the batch arrived

    @property
    def json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


class Receiver:
    """An HTTP endpoint answering with scripted statuses (then 200), recording every request."""

    def __init__(self, loop: asyncio.AbstractEventLoop, engine: AsyncEngine) -> None:
        self.received: list[Received] = []
        self.script: list[int] = []
        self.store_id = ""
        self._loop = loop
        self._engine = engine
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    status = receiver.script.pop(0) if receiver.script else 200
                synced = receiver._synced_now()
                with receiver._lock:
                    receiver.received.append(Received(dict(self.headers), body, status, synced))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/audiences"

    def _synced_now(self) -> int:
        """Ask the database (on the test's event loop, which is waiting for this answer) what is synced."""

        async def count() -> int:
            async with self._engine.connect() as conn:
                found = await conn.scalar(
                    select(func.count()).where(
                        audience_members.c.store_id == self.store_id,
                        audience_members.c.synced_contact.is_not(None),
                    )
                )
                return int(found or 0)

        future: Future[int] = asyncio.run_coroutine_threadsafe(count(), self._loop)
        return future.result(timeout=10)

    def __enter__(self) -> Receiver:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def batches(self) -> list[dict[str, Any]]:
        return [r.json for r in self.received]


@pytest.fixture
async def receiver(engine: AsyncEngine, store_id: str) -> AsyncIterator[Receiver]:
    with Receiver(asyncio.get_running_loop(), engine) as r:
        r.store_id = store_id
        yield r


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def sync_store(store_id: str, url: str, batch_size: int = 2) -> StoreConfig:
    off = {"enabled": False}
    return StoreConfig.model_validate(
        {
            "store_id": store_id,
            "name": "Test",
            "api_key": "k",
            "audiences": {
                "definitions": {"loyal_and_advocates": off, "win_back": off, "cart_abandoners": off},
                "sync": {"url": url, "secret": SECRET, "batch_size": batch_size},
            },
        }
    )


async def put_customers(
    engine: AsyncEngine, store: StoreConfig, rows: list[dict[str, Any]], now: datetime = T0
) -> None:
    """Write customers rows as the processor does, and refresh their memberships in the same transaction."""
    values = [
        {
            "store_id": store.store_id,
            "email": f"{row['customer_id']}@example.com",
            "phone": None,
            "accepts_marketing": True,
            "stage": "first_time",
            "profile": {"country": "DE"},
            **row,
        }
        for row in rows
    ]
    stmt = insert(customers).values(values)
    updated = {key: stmt.excluded[key] for key in values[0] if key not in ("store_id", "customer_id")}
    async with engine.begin() as conn:
        await conn.execute(
            stmt.on_conflict_do_update(index_elements=["store_id", "customer_id"], set_=updated)
        )
        await refresh_memberships(conn, store, [row["customer_id"] for row in rows], now)


def worker(
    engine: AsyncEngine, store: StoreConfig, http: httpx.AsyncClient, clock: list[datetime], attempts: int = 1
) -> AudienceWorker:
    return AudienceWorker(
        engine=engine,
        stores=StoreRegistry([store]),
        clock=lambda: clock[0],
        sync_client=AudienceSyncClient(
            http, attempts=attempts, first_wait_seconds=0.01, max_wait_seconds=0.05
        ),
        first_retry=timedelta(seconds=30),
    )


async def synced(engine: AsyncEngine, store_id: str) -> dict[str, dict[str, str] | None]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(audience_members.c.customer_id, audience_members.c.synced_contact).where(
                audience_members.c.store_id == store_id
            )
        )
        return {r.customer_id: r.synced_contact for r in rows}


def email_hash(customer_id: str) -> dict[str, str]:
    return {"email_sha256": sha256_hex(f"{customer_id}@example.com")}


async def test_batches_are_signed_bounded_and_synced_only_after_a_2xx(
    engine: AsyncEngine, store_id: str, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    store = sync_store(store_id, receiver.url, batch_size=2)
    ids = ["c1", "c2", "c3", "c4", "c5"]
    await put_customers(engine, store, [{"customer_id": i} for i in ids])
    clock = [T0]
    sync_worker = worker(engine, store, http, clock)
    receiver.script = [503]

    await sync_worker.step()
    first, *others = receiver.received
    assert first.status == 503
    assert first.synced_while_received == 0
    assert [r.status for r in others] == [200, 200]
    assert all(len(b["added"]) <= 2 and b["removed"] == [] for b in receiver.batches())
    failed_ids = {c for c in ids if {"email_sha256": sha256_hex(f"{c}@example.com")} in first.json["added"]}
    state = await synced(engine, store_id)
    assert {c for c, s in state.items() if s is None} == failed_ids  # nothing synced without a 2xx

    await sync_worker.step()  # not due again before its backoff
    assert len(receiver.received) == 3
    clock[0] = T0 + timedelta(seconds=31)
    await sync_worker.step()
    retried = receiver.received[3]
    assert retried.status == 200
    assert retried.body == first.body  # the same bytes under the same batch id: the receiver can dedupe
    assert retried.headers["Idempotency-Key"] == first.json["batch_id"]
    assert await synced(engine, store_id) == {c: email_hash(c) for c in ids}

    for request in receiver.received:
        expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
        assert request.headers["X-LoyaltyFunnel-Signature"] == f"sha256={expected}"
        assert request.json["store_id"] == store_id
        assert request.json["audience"] == "all_customers"
    added = [m for b in receiver.batches()[1:] for m in b["added"]]
    assert sorted(m["email_sha256"] for m in added) == sorted(email_hash(c)["email_sha256"] for c in ids)

    async with engine.connect() as conn:
        statuses = await conn.execute(
            select(audience_sync_batches.c.status, audience_sync_batches.c.attempts).where(
                audience_sync_batches.c.store_id == store_id
            )
        )
        assert sorted(tuple(r) for r in statuses) == [("delivered", 1), ("delivered", 1), ("delivered", 2)]


async def test_lost_consent_erasure_and_a_new_email_reach_the_endpoint(
    engine: AsyncEngine, store_id: str, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    store = sync_store(store_id, receiver.url, batch_size=10)
    await put_customers(engine, store, [{"customer_id": "c1"}, {"customer_id": "c2"}, {"customer_id": "c3"}])
    clock = [T0]
    sync_worker = worker(engine, store, http, clock)
    await sync_worker.step()
    assert len(receiver.received) == 1

    await put_customers(
        engine,
        store,
        [
            {"customer_id": "c1", "accepts_marketing": False},
            {"customer_id": "c2", "email": None, "phone": None, "accepts_marketing": None},
            {"customer_id": "c3", "email": "c3-new@example.com"},
        ],
    )
    await sync_worker.step()
    [update] = receiver.batches()[1:]
    assert sorted(m["email_sha256"] for m in update["removed"]) == sorted(
        email_hash(c)["email_sha256"] for c in ("c1", "c2", "c3")
    )
    assert update["added"] == [{"email_sha256": sha256_hex("c3-new@example.com")}]
    # c1 is still a customer (unexportable); the erased c2 leaves no trace once the endpoint knows.
    assert await synced(engine, store_id) == {
        "c1": None,
        "c3": {"email_sha256": sha256_hex("c3-new@example.com")},
    }

    await sync_worker.step()
    assert len(receiver.received) == 2  # nothing left to say


async def test_quick_retries_deliver_within_one_step(
    engine: AsyncEngine, store_id: str, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    store = sync_store(store_id, receiver.url)
    await put_customers(engine, store, [{"customer_id": "c1", "phone": "0151 12345678"}])
    receiver.script = [503]
    await worker(engine, store, http, [T0], attempts=3).step()
    assert [r.status for r in receiver.received] == [503, 200]
    assert receiver.received[0].body == receiver.received[1].body
    assert receiver.received[0].synced_while_received == 0
    assert receiver.received[1].synced_while_received == 0  # marked only after the answer
    [member] = receiver.batches()[1]["added"]
    assert member == {
        "email_sha256": sha256_hex("c1@example.com"),
        "phone_sha256": sha256_hex("4915112345678"),
        "phone_e164_sha256": sha256_hex("+4915112345678"),
    }
    assert await synced(engine, store_id) == {"c1": member}


async def test_two_instances_never_push_a_member_twice(
    engine: AsyncEngine, store_id: str, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    store = sync_store(store_id, receiver.url, batch_size=3)
    ids = [f"c{n}" for n in range(20)]
    await put_customers(engine, store, [{"customer_id": i} for i in ids])
    clock = [T0]
    first, second = worker(engine, store, http, clock), worker(engine, store, http, clock)
    for _ in range(5):
        await asyncio.gather(first.step(), second.step())
    added = [m["email_sha256"] for b in receiver.batches() for m in b["added"]]
    assert sorted(added) == sorted(email_hash(c)["email_sha256"] for c in ids)
    assert all(len(b["added"]) <= 3 for b in receiver.batches())


async def test_a_stores_backlog_does_not_hold_back_the_others(
    engine: AsyncEngine, store_id: str, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    # Two stores with members to push and a budget of one batch a step: each step begins with the other.
    first, second = (sync_store(f"{store_id}-{suffix}", receiver.url, batch_size=1) for suffix in "ab")
    for store in (first, second):
        await put_customers(engine, store, [{"customer_id": f"c{n}"} for n in range(3)])
    sync_worker = AudienceWorker(
        engine=engine,
        stores=StoreRegistry([first, second]),
        clock=lambda: T0,
        sync_client=AudienceSyncClient(http, attempts=1),
        batches_per_step=1,
    )
    for _ in range(4):
        await sync_worker.step()
    pushed = [batch["store_id"] for batch in receiver.batches()]
    assert pushed == [first.store_id, second.store_id, first.store_id, second.store_id]
