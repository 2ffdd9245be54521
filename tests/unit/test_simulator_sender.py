"""The simulator's sender (pace, retries, lanes) against a fake ingest, and its command line."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from deploy.simulator.cli import app, parse_end
from deploy.simulator.http_plan import HttpRequest, RequestPlan
from deploy.simulator.sender import Pace, Sender, SendFailed, retry_after


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _request(lane: int, n: int, calls: int = 1) -> HttpRequest:
    return HttpRequest(
        lane, "/v1/batch", (("X-N", str(n)),), b"{}", "segment batch", calls=calls, events=calls
    )


def _client(handler: httpx.MockTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url="http://ingest.test", transport=handler)


async def test_the_pace_spreads_calls_over_time() -> None:
    clock = FakeClock()
    pace = Pace(10, clock=clock, sleep=clock.sleep)
    for calls in (5, 5, 10):
        await pace.wait(calls)
    # 5 calls at once, the next 5 after 0.5 s, the next 10 after another 0.5 s.
    assert clock.slept == pytest.approx([0.5, 0.5])


async def test_no_pace_never_waits() -> None:
    clock = FakeClock()
    pace = Pace(0, clock=clock, sleep=clock.sleep)
    await pace.wait(1_000_000)
    assert clock.slept == []


async def test_lanes_keep_their_order_and_everything_is_sent_once() -> None:
    seen: list[tuple[int, int]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        n = int(request.headers["X-N"])
        seen.append((n // 100, n))
        return httpx.Response(200, json={"success": True})

    plan = RequestPlan(
        lanes=tuple(tuple(_request(lane, lane * 100 + i) for i in range(5)) for lane in range(3))
    )
    sent: list[HttpRequest] = []
    async with _client(httpx.MockTransport(handle)) as client:
        stats = await Sender(client, Pace(0), on_sent=sent.append).send_plan(plan)
    assert stats.requests == len(sent) == 15
    for lane in range(3):
        assert [n for ln, n in seen if ln == lane] == [lane * 100 + i for i in range(5)]


async def test_429_and_503_are_retried_after_retry_after() -> None:
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "2"}),
            httpx.Response(503, headers={"Retry-After": "1"}),
            httpx.Response(200, json={"success": True}),
        ]
    )
    clock = FakeClock()
    async with _client(httpx.MockTransport(lambda _: next(answers))) as client:
        sender = Sender(client, Pace(0), sleep=clock.sleep)
        await sender.send(_request(0, 1))
    assert clock.slept == [2.0, 1.0]
    assert sender.stats.retries == 2
    assert sender.stats.by_status == {429: 1, 503: 1, 200: 1}


async def test_connection_errors_are_retried_with_backoff() -> None:
    calls = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200)

    clock = FakeClock()
    async with _client(httpx.MockTransport(handle)) as client:
        await Sender(client, Pace(0), sleep=clock.sleep).send(_request(0, 1))
    assert clock.slept == [0.5, 1.0]


async def test_a_refused_payload_stops_the_run_with_ingests_reason() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.headers["X-N"] == "7":
            return httpx.Response(422, json={"error": "invalid_event", "detail": "batch[3].userId: required"})
        return httpx.Response(200)

    plan = RequestPlan(lanes=((_request(0, 1), _request(0, 7), _request(0, 8)), (_request(1, 2),)))
    async with _client(httpx.MockTransport(handle)) as client:
        with pytest.raises(SendFailed, match=r"HTTP 422 .*batch\[3\]\.userId"):
            await Sender(client, Pace(0)).send_plan(plan)


def test_retry_after_is_bounded() -> None:
    assert retry_after(httpx.Response(429, headers={"Retry-After": "3600"}), 0) == 30.0
    assert retry_after(httpx.Response(429, headers={"Retry-After": "soon"}), 2) == 2.0
    assert retry_after(httpx.Response(503), 0) == 0.5


def test_end_accepts_iso_dates_in_utc() -> None:
    assert parse_end("2026-11-23T12:00:00+01:00").isoformat() == "2026-11-23T11:00:00+00:00"
    assert parse_end("2026-11-23").isoformat() == "2026-11-23T00:00:00+00:00"
    assert parse_end(None).tzinfo is not None


def test_the_cli_writes_the_requests_as_json_lines(tmp_path: Path) -> None:
    out = tmp_path / "requests.jsonl"
    args = [
        "--customers",
        "12",
        "--days",
        "30",
        "--seed",
        "9",
        "--end",
        "2026-11-23T12:00:00Z",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines
    assert {line["path"] for line in lines} <= {"/v1/batch", "/webhooks/shopify"}
    assert all(line["method"] == "POST" and isinstance(line["body"], dict) for line in lines)
    again = tmp_path / "again.jsonl"
    assert CliRunner().invoke(app, [*args[:-1], str(again)]).exit_code == 0
    assert again.read_text() == out.read_text()


def test_the_cli_names_an_unknown_store() -> None:
    result = CliRunner().invoke(app, ["--store", "nope", "--dry-run", "--customers", "1"])
    assert result.exit_code == 2
    assert "nope" in result.output
