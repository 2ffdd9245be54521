"""What an attacker sends to the public endpoints of the running services, and what must come back.

Each probe goes over HTTP to the services started as processes (tests/e2e/conftest.py), with no store key
where an attacker has none."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from deploy.devstack.ports import free_ports
from deploy.devstack.process import ManagedProcess
from services.ingest.sources import shopify
from shared.fields import url_segment
from shared.kafka import STOREFRONT_EVENTS
from shared.settings import REPO_ROOT
from tests.e2e.conftest import RunningServices
from tests.examples import source_example
from tests.fixtures.stack import SmtpServer
from tests.kafka_helpers import end_offsets
from tests.polling import eventually

pytestmark = pytest.mark.e2e

API = {"Authorization": "Bearer demo-api-key"}


@pytest.mark.parametrize(
    ("service", "path"),
    [
        ("notifier", "/u/%00"),
        ("notifier", "/u/%0d%0aSet-Cookie:%20x=1"),
        ("segmenter", "/v1/stores/demo/customers/%00"),
        ("segmenter", "/v1/stores/demo/customers?email=%00"),
        ("segmenter", "/v1/stores/demo/customers?email=a%0d%0a@example.com"),
        ("notifier", "/v1/stores/demo/customers/%00/notifications"),
        ("notifier", "/v1/stores/demo/customers/%00/coupons"),
    ],
)
def test_a_nul_or_line_break_in_a_path_or_query_is_a_4xx_not_dependency_down(
    services: RunningServices, service: str, path: str
) -> None:
    base = getattr(services, service)
    for method in ("GET", "POST") if path.startswith("/u/") else ("GET",):
        response = httpx.request(method, f"{base}{path}", headers=API, timeout=10)
        assert 400 <= response.status_code < 500, (method, path, response.status_code, response.text)
        assert response.json()["error"] == "bad_request"
    # ...and the service is still ready afterwards: nothing was mistaken for an outage.
    assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200


@contextlib.contextmanager
def _another_ingest(
    services: RunningServices, tmp_path_factory: pytest.TempPathFactory, name: str, settings: dict[str, str]
) -> Iterator[str]:
    """One more ingest process beside the session's, with these settings (environment variables)."""
    run_dir: Path = tmp_path_factory.mktemp(name)
    [port] = free_ports(1)
    process = ManagedProcess(name, run_dir / "ingest.pid", run_dir / "ingest.log")
    env = {**services.env, "INGEST_PORT": str(port), **settings}
    process.start(
        [sys.executable, "-m", "services.ingest", "serve"], env=env, cwd=REPO_ROOT, die_with_parent=True
    )
    try:
        process.wait_for_http(f"http://127.0.0.1:{port}/readyz", timeout=90)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop(timeout=15)


@pytest.fixture(scope="module")
def strict_ingest(services: RunningServices, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second ingest instance, as an operator would run it with a tight per-client limit."""
    limits = {"RATE_LIMIT_PER_CLIENT_PER_SECOND": "0.5", "RATE_LIMIT_PER_CLIENT_BURST": "5"}
    with _another_ingest(services, tmp_path_factory, "strict-ingest", limits) as url:
        yield url


def test_a_flood_of_unsigned_webhooks_is_refused_429_before_any_signature_check(strict_ingest: str) -> None:
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Shop-Domain": "demo.myshopify.com",
        "X-Shopify-Hmac-Sha256": "forged",
        # A forwarded-for header from an untrusted peer must not buy a fresh bucket per request.
    }
    codes = []
    with httpx.Client(timeout=10) as client:
        for i in range(12):
            response = client.post(
                f"{strict_ingest}/webhooks/shopify",
                content=b"{}",
                headers={**headers, "X-Forwarded-For": f"198.51.100.{i}"},
            )
            codes.append(response.status_code)
            if response.status_code == 429:
                assert int(response.headers["Retry-After"]) >= 1
                assert response.json()["error"] == "rate_limited"
        # Health checks and metrics stay reachable for operators.
        assert client.get(f"{strict_ingest}/readyz").status_code == 200
        metrics = client.get(f"{strict_ingest}/metrics").text
    assert codes[:5] == [401] * 5
    assert codes.count(429) >= 6
    assert 'http_rate_limited_total{service="ingest"}' in metrics


READ_DEADLINE = 2.0  # HTTP_REQUEST_READ_TIMEOUT_SECONDS of the instance below (30 by default)


@pytest.fixture(scope="module")
def impatient_ingest(services: RunningServices, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A third ingest instance, with a short deadline on reading each request, so a test sees it pass."""
    deadline = {"HTTP_REQUEST_READ_TIMEOUT_SECONDS": str(READ_DEADLINE)}
    with _another_ingest(services, tmp_path_factory, "impatient-ingest", deadline) as url:
        yield url


async def _answer_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection, which it must do within `seconds`."""
    return await asyncio.wait_for(reader.read(), seconds)


async def _trickle(port: int, parts: list[bytes], every: float) -> tuple[bytes, float]:
    """Connect, send `parts` `every` seconds apart, and read until the server closes: (answer, seconds)."""
    started = asyncio.get_running_loop().time()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        closing = asyncio.ensure_future(_answer_within(reader, READ_DEADLINE + 5))
        for part in parts:
            if closing.done():
                break
            writer.write(part)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            await asyncio.sleep(every)
        answer = await closing
    finally:
        writer.close()
    return answer, asyncio.get_running_loop().time() - started


async def test_a_request_sent_a_few_bytes_at_a_time_is_cut_off_and_holds_no_connection(
    impatient_ingest: str,
) -> None:
    """Slowloris: hundreds of connections each sending a request's headers, or its body, a few bytes at a
    time. uvicorn alone held each of them for as long as the client liked (a few thousand exhaust the
    process's file descriptors); now each is answered 408 and closed once the deadline passes, a connection
    that never sent anything is closed silently, and everyone else is served meanwhile."""
    port = int(impatient_ingest.rsplit(":", 1)[1])
    headers = [b"POST /webhooks/shopify HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n"]
    headers += [b"X-Padding-%d: x\r\n" % i for i in range(40)]
    body_headers = (
        b"POST /webhooks/shopify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"X-Shopify-Topic: orders/create\r\nX-Shopify-Shop-Domain: demo.myshopify.com\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    slow = [_trickle(port, headers, 0.5) for _ in range(200)]
    slow.append(_trickle(port, [body_headers] + [b"{"] * 40, 0.5))
    silent = _trickle(port, [], 0)
    async with httpx.AsyncClient(timeout=10) as client:
        held = asyncio.gather(*slow, silent)
        await asyncio.sleep(READ_DEADLINE / 2)
        # While they are held, the service answers others.
        assert (await client.get(f"{impatient_ingest}/readyz")).status_code == 200
        *answers, (nothing, silent_for) = await held
        for answer, took in answers:
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert READ_DEADLINE - 0.5 < took < READ_DEADLINE + 3, took
        assert nothing == b""
        assert READ_DEADLINE - 0.5 < silent_for < READ_DEADLINE + 3, silent_for
        # A request that is slow but in time is served, and the service is still ready.
        answer, _ = await _trickle(
            port, [b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"Connection: close\r\n\r\n"], 1.0
        )
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        assert (await client.get(f"{impatient_ingest}/readyz")).status_code == 200


def _guest_order(email: str) -> tuple[bytes, dict[str, str]]:
    """A signed orders/create of a guest checkout: no customer object, so the customer is `email:<addr>`."""
    payload = source_example("shopify", "orders.create__order_with_customer")
    payload["id"] = uuid.uuid4().int % 10**15
    payload["customer"] = None
    payload["email"] = email
    now = datetime.now(UTC).isoformat()
    payload.update(created_at=now, processed_at=now, updated_at=now)
    body = json.dumps(payload).encode()
    return body, {
        "Content-Type": "application/json",
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Shop-Domain": "demo.myshopify.com",
        "X-Shopify-Hmac-Sha256": shopify.sign("demo-shopify-secret", body),
        "X-Shopify-Event-Id": str(uuid.uuid4()),
    }


async def test_a_segment_email_with_a_header_in_it_is_422_and_reaches_nothing(
    services: RunningServices, kafka_bootstrap: str
) -> None:
    before = await end_offsets(kafka_bootstrap, STOREFRONT_EVENTS)
    body = {
        "messageId": str(uuid.uuid4()),
        "userId": f"attacker-{uuid.uuid4().hex[:8]}",
        "traits": {"email": "victim@example.com\r\nBcc: everyone@example.net"},
    }
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{services.ingest}/v1/identify", json=body, auth=("demo-write-key", ""))
        batch = await client.post(
            f"{services.ingest}/v1/batch",
            json={"batch": [{"type": "identify", **body, "context": {"locale": "../../etc/passwd"}}]},
            auth=("demo-write-key", ""),
        )
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["traits.email"]
    assert batch.status_code == 422, batch.text
    fields = {e["field"] for e in batch.json()["errors"]}
    assert fields == {"batch[0].traits.email", "batch[0].context.locale"}
    assert await end_offsets(kafka_bootstrap, STOREFRONT_EVENTS) == before


async def test_json_nested_to_any_depth_is_a_4xx_and_publishes_nothing_the_segmenter_cannot_read(
    services: RunningServices, kafka_bootstrap: str
) -> None:
    # Nested arrays, as deep as the JSON parsers go and past it, in a custom event's properties (kept, so
    # the events' own reader must take them: pydantic's parser stops at 200 levels), in traits (read in
    # part, the rest dropped), one call alone or in a batch, with a messageId and without (then hashed).
    # Before, these were 500s from about 270 levels (a custom event written for Kafka) or 950 (a batch's
    # calls measured or named as JSON), and those under 270 were accepted and then dead-lettered.
    before = await end_offsets(kafka_bootstrap, STOREFRONT_EVENTS)
    user = f"attacker-{uuid.uuid4().hex[:8]}"
    answers: dict[tuple[str, int], int] = {}
    async with httpx.AsyncClient(timeout=10, auth=("demo-write-key", "")) as client:
        for depth in [33, 40, 199, 200, 201, 260, 300, 500, *range(900, 1001, 3), 2000]:
            nested = "[" * depth + "]" * depth
            for message_id in ('"messageId": "m",', ""):
                call = (
                    f'{{{message_id} "userId": "{user}", "event": "Deep", "properties": {{"x": {nested}}}}}'
                )
                for path, body in (
                    ("/v1/track", call),
                    ("/v1/batch", f'{{"batch": [{{"type": "track", {call[1:]}]}}'),
                ):
                    response = await client.post(
                        f"{services.ingest}{path}", content=body, headers={"Content-Type": "application/json"}
                    )
                    answers[(path, depth)] = response.status_code
                    assert response.status_code in (400, 422), (path, depth, response.text)
    # 422 naming the properties while the parser read the body; 400 past what it (or a step after it) reads.
    assert answers[("/v1/track", 33)] == answers[("/v1/batch", 500)] == 422
    assert answers[("/v1/track", 2000)] == 400
    assert await end_offsets(kafka_bootstrap, STOREFRONT_EVENTS) == before


async def test_guest_ids_and_smtp_replies_stay_out_of_logs_and_error_bodies(
    services: RunningServices, smtp_server: SmtpServer
) -> None:
    tag = uuid.uuid4().hex[:10]
    delivered, bounced = f"guest.{tag}@example.com", f"bounce-{tag}@example.com"
    async with httpx.AsyncClient(timeout=10) as client:
        for email in (delivered, bounced):
            body, headers = _guest_order(email)
            response = await client.post(f"{services.ingest}/webhooks/shopify", content=body, headers=headers)
            assert response.status_code == 200, response.text

        async def welcomed() -> bool:
            return any(m["To"] == delivered for m in smtp_server.messages)

        await eventually(welcomed, 60, "the guest's welcome email")
        bounced_url = (
            f"{services.notifier}/v1/stores/demo/customers/{url_segment('email:' + bounced)}/notifications"
        )

        async def refused() -> bool:
            answer = await client.get(bounced_url, headers=API)
            return answer.status_code == 200 and any(n["status"] == "failed" for n in answer.json())

        await eventually(refused, 60, "the bounced guest's welcome marked failed")
        # An unknown guest's 404 does not echo the address it was asked about.
        unknown = f"nobody.{tag}@example.com"
        missing = await client.get(
            f"{services.segmenter}/v1/stores/demo/customers/{url_segment('email:' + unknown)}", headers=API
        )
        assert missing.status_code == 404
        assert unknown not in missing.text
    for name, path in services.logs.items():
        text = path.read_text()
        for address in (delivered, bounced, tag):
            assert address not in text, f"{name} logged {address!r}"
    notifier_log = services.logs["notifier"].read_text()
    # The lines are there, with the customer as a ref: message_sent for one, message_failed for the other.
    assert '"message_sent"' in notifier_log
    assert '"message_failed"' in notifier_log
    assert '"customer_ref": "c_' in notifier_log


def test_a_production_deploy_with_a_weak_registry_fails_listing_every_problem(
    services: RunningServices, tmp_path: Path
) -> None:
    registry = tmp_path / "stores.yaml"
    registry.write_text(
        "stores:\n"
        "  one: {name: One, api_key: short, segment: {write_key: same-key-on-two-stores-0123456789}}\n"
        "  two: {name: Two, api_key: short, segment: {write_key: same-key-on-two-stores-0123456789},\n"
        "        notifier: {site_url: 'http://two.example.org'}}\n"
    )
    [port] = free_ports(1)
    env = {**services.env, "ENVIRONMENT": "production", "STORES_FILE": str(registry)}
    env["INGEST_PORT"] = str(port)
    done = subprocess.run(
        [sys.executable, "-m", "services.ingest", "serve"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    output = done.stdout + done.stderr
    for problem in (
        "store 'one': api_key: shorter than 24 characters",
        "store 'two': api_key: shorter than 24 characters",
        "store 'two': notifier.site_url: must be an https URL",
        "stores 'one', 'two' share the same API key",
        "stores 'one', 'two' share the same Segment write key",
    ):
        assert problem in output, output[-3000:]
    assert "same-key-on-two-stores" not in output  # the secret itself is never printed


def test_the_segmenter_takes_the_notifiers_service_key_not_a_guess(services: RunningServices) -> None:
    service = {"Authorization": "Bearer dev-service-api-key"}
    url = f"{services.segmenter}/v1/stores/demo/products/p-1/complements"
    assert httpx.get(url, headers=service).status_code == 200
    assert httpx.get(url, headers={"Authorization": "Bearer dev-service-api-kez"}).status_code == 401
    # An escaped id with a path in it stays one path segment: it reaches no other route.
    crafted = f"{services.segmenter}/v1/stores/demo/products/{url_segment('../../funnel?x=')}/complements"
    assert httpx.get(crafted, headers=service).status_code == 404


@pytest.mark.parametrize("topic", ["shop/redact", "customers/redact", "customers/data_request"])
async def test_a_privacy_webhook_signed_for_another_shop_is_401_and_erases_nothing(
    services: RunningServices, kafka_bootstrap: str, topic: str
) -> None:
    """A public app signs every shop's webhooks with one secret: a genuine body of shop B, sent with the
    (unsigned) X-Shopify-Shop-Domain of our shop, must not erase our customers. Bodies as Shopify documents
    them (https://shopify.dev/docs/apps/build/compliance/privacy-law-compliance, mandatory compliance
    webhooks: every one carries `shop_id` and `shop_domain`)."""
    body_of = {
        "shop/redact": {"shop_id": 954889, "shop_domain": "other-shop.myshopify.com"},
        "customers/redact": {
            "shop_id": 954889,
            "shop_domain": "other-shop.myshopify.com",
            "customer": {"id": 191167, "email": "john@example.com", "phone": "555-625-1199"},
            "orders_to_redact": [299938, 280263],
        },
        "customers/data_request": {
            "shop_id": 954889,
            "shop_domain": "other-shop.myshopify.com",
            "orders_requested": [299938],
            "customer": {"id": 191167, "email": "john@example.com", "phone": "555-625-1199"},
            "data_request": {"id": 9999},
        },
    }
    payload = body_of[topic]
    before = await end_offsets(kafka_bootstrap, STOREFRONT_EVENTS)

    async def send(body: dict[str, object]) -> httpx.Response:
        raw = json.dumps(body).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Shop-Domain": "demo.myshopify.com",
            "X-Shopify-Hmac-Sha256": shopify.sign("demo-shopify-secret", raw),
            "X-Shopify-Event-Id": str(uuid.uuid4()),
        }
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(f"{services.ingest}/webhooks/shopify", content=raw, headers=headers)

    forged = await send(payload)
    assert forged.status_code == 401, forged.text
    assert forged.json()["error"] == "shop_mismatch"
    missing = await send({k: v for k, v in payload.items() if k != "shop_domain"})
    assert missing.status_code == 401
    assert await end_offsets(kafka_bootstrap, STOREFRONT_EVENTS) == before
    if topic != "shop/redact":  # the matching shop is accepted (a shop-wide erasure would hit other tests)
        genuine = await send({**payload, "shop_domain": "demo.myshopify.com"})
        assert genuine.status_code == 200, genuine.text


def _checkout_with_link(customer_id: int, email: str, link: str) -> tuple[bytes, dict[str, str]]:
    payload = source_example("shopify", "checkouts.create__abandoned_checkout")
    now = datetime.now(UTC).isoformat()
    payload.update(
        id=customer_id + 7,
        token=f"t{customer_id}",
        cart_token=f"cart{customer_id}",
        email=email,
        buyer_accepts_marketing=True,
        created_at=now,
        updated_at=now,
        abandoned_checkout_url=link,
        customer={
            "id": customer_id,
            "email": email,
            "first_name": "Noor",
            "email_marketing_consent": {"state": "subscribed", "opt_in_level": "single_opt_in"},
        },
    )
    body = json.dumps(payload).encode()
    return body, {
        "Content-Type": "application/json",
        "X-Shopify-Topic": "checkouts/create",
        "X-Shopify-Shop-Domain": "demo.myshopify.com",
        "X-Shopify-Hmac-Sha256": shopify.sign("demo-shopify-secret", body),
        "X-Shopify-Event-Id": str(uuid.uuid4()),
    }


async def test_a_recovery_link_off_the_stores_hosts_never_reaches_an_email(
    services: RunningServices, smtp_server: SmtpServer
) -> None:
    base = uuid.uuid4().int % 10**12
    cases = {
        # A phishing link, the store's host spelled as a user name, plain http: all dropped.
        f"noor.evil.{base}@example.com": ("https://evil.example/recover?x=1", None),
        f"noor.userinfo.{base}@example.com": ("https://demo-store.example@evil.example/r", None),
        f"noor.http.{base}@example.com": ("http://demo.myshopify.com/1/checkouts/a/recover", None),
        # The shop's own checkout domain is kept.
        f"noor.own.{base}@example.com": (
            "https://demo.myshopify.com/80184432/checkouts/ac/1/recover?key=k",
            "https://demo.myshopify.com/80184432/checkouts/ac/1/recover?key=k",
        ),
    }
    async with httpx.AsyncClient(timeout=10) as client:
        for offset, (email, (link, _)) in enumerate(cases.items()):
            body, headers = _checkout_with_link(base * 10 + offset, email, link)
            response = await client.post(f"{services.ingest}/webhooks/shopify", content=body, headers=headers)
            assert response.status_code == 200, response.text

    def cart_email(email: str) -> str | None:
        for message in smtp_server.messages:
            if message["To"] == email and "cart" in str(message["Subject"]).lower():
                text = message.get_body(preferencelist=("plain",))
                return text.get_content() if text is not None else ""
        return None

    async def all_sent() -> bool:
        return all(cart_email(email) is not None for email in cases)

    # The development registry abandons a cart after 20 s.
    await eventually(all_sent, 120, "the four abandoned-cart emails")
    for email, (link, kept) in cases.items():
        text = cart_email(email) or ""
        assert "evil.example" not in text, email
        if kept is None:
            assert link not in text
            assert "https://demo-store.example" in text  # the store's own link instead
        else:
            assert kept in text


async def test_lists_come_a_page_at_a_time_with_a_maximum_page_size(
    services: RunningServices, smtp_server: SmtpServer
) -> None:
    payload = source_example("shopify", "orders.create__order_with_customer")
    customer_id = uuid.uuid4().int % 10**15
    email = f"pages.{customer_id}@example.com"
    payload["id"] = customer_id + 1
    payload["email"] = email
    payload["customer"].update({"id": customer_id, "email": email})
    now = datetime.now(UTC).isoformat()
    payload.update(created_at=now, processed_at=now, updated_at=now)
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Shop-Domain": "demo.myshopify.com",
        "X-Shopify-Hmac-Sha256": shopify.sign("demo-shopify-secret", body),
        "X-Shopify-Event-Id": str(uuid.uuid4()),
    }
    notifications = f"{services.notifier}/v1/stores/demo/customers/{customer_id}/notifications"
    profile = f"{services.segmenter}/v1/stores/demo/customers/{customer_id}"
    async with httpx.AsyncClient(timeout=10, headers=API) as client:
        sent = await client.post(f"{services.ingest}/webhooks/shopify", content=body, headers=headers)
        assert sent.is_success

        async def planned() -> bool:
            answer = await client.get(notifications)
            return answer.status_code == 200 and len(answer.json()) >= 2

        await eventually(planned, 60, "the order's messages planned (welcome, review request...)")
        everything = (await client.get(notifications)).json()
        first = await client.get(notifications, params={"limit": 1})
        assert len(first.json()) == 1
        assert first.json()[0] == everything[0]
        link = first.headers["Link"]
        assert link.endswith('; rel="next"')
        second = await client.get(link[1 : link.index(">")])
        assert second.json()[0] == everything[1]
        assert (await client.get(notifications, params={"offset": 100_000})).json() == []
        for bad in ({"limit": 501}, {"limit": 0}, {"offset": -1}, {"offset": 100_001}):
            refused = await client.get(notifications, params=bad)
            assert refused.status_code == 422, bad
            assert refused.json()["errors"][0]["field"] in ("limit", "offset")
        coupons = await client.get(
            f"{services.notifier}/v1/stores/demo/customers/{customer_id}/coupons", params={"limit": 501}
        )
        assert coupons.status_code == 422

        one = await client.get(profile, params={"transitions_limit": 1})
        assert one.status_code == 200
        assert len(one.json()["transitions"]) == 1
        assert "transitions_offset=1" in one.headers["Link"]
        assert (await client.get(profile, params={"transitions_limit": 501})).status_code == 422
