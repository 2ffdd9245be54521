"""What an attacker sends to the public endpoints of the running services, and what must come back.

Each probe goes over HTTP to the services started as processes (tests/e2e/conftest.py), with no store key
where an attacker has none."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.devstack.ports import free_ports
from deploy.devstack.process import ManagedProcess
from shared.settings import REPO_ROOT
from tests.e2e.conftest import RunningServices

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


@pytest.fixture(scope="module")
def strict_ingest(services: RunningServices, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second ingest instance, as an operator would run it with a tight per-client limit."""
    run_dir: Path = tmp_path_factory.mktemp("strict-ingest")
    [port] = free_ports(1)
    process = ManagedProcess("strict-ingest", run_dir / "ingest.pid", run_dir / "ingest.log")
    env = {
        **services.env,
        "INGEST_PORT": str(port),
        "RATE_LIMIT_PER_CLIENT_PER_SECOND": "0.5",
        "RATE_LIMIT_PER_CLIENT_BURST": "5",
    }
    process.start(
        [sys.executable, "-m", "services.ingest", "serve"], env=env, cwd=REPO_ROOT, die_with_parent=True
    )
    try:
        process.wait_for_http(f"http://127.0.0.1:{port}/readyz", timeout=90)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop(timeout=15)


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
