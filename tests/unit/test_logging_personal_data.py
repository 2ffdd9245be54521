"""No personal data in log lines: customer ids become refs, addresses and quoted values leave free text."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest
import structlog
from pydantic import BaseModel, ValidationError

from shared.logging import configure_logging, customer_ref, get_logger, redact_text


@pytest.fixture(autouse=True)
def _default_logging_afterwards() -> Iterator[None]:
    # configure_logging binds structlog to this test's captured stdout, which is closed once the test ends:
    # a later test whose code logs would fail writing to it.
    yield
    structlog.reset_defaults()


class _Signup(BaseModel):
    age: int


# Tracebacks quote source lines, so the personal values come from here, as they would from a request.
_FORM = {"age": "Camille Durand <camille@example.fr>"}
_DB_ERROR = "invalid input for query argument $2: 'María Ortega' (expected str)"


def _lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_a_guest_id_and_an_smtp_reply_are_logged_without_the_address(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("notifier-test")
    guest = "email:camille.durand@example.fr"
    get_logger("t").warning(
        "message_failed",
        message_id=7,
        customer_id=guest,
        error="550 5.1.1 <camille.durand@example.fr>: Recipient address rejected: User unknown",
    )
    [line] = _lines(capsys.readouterr().out)
    assert "camille" not in json.dumps(line)
    assert line["customer_ref"] == customer_ref(guest)
    assert "customer_id" not in line
    assert line["error"] == "550 5.1.1 <[email]>: Recipient address rejected: User unknown"


def test_the_same_customer_gives_the_same_ref_and_another_a_different_one() -> None:
    assert customer_ref("email:a@example.com") == customer_ref("email:a@example.com")
    assert customer_ref("email:a@example.com") != customer_ref("email:b@example.com")
    assert customer_ref("42").startswith("c_")
    assert len(customer_ref("42")) == 18


def test_a_traceback_loses_the_values_it_quotes(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("segmenter-test")
    try:
        _Signup.model_validate(_FORM)
    except ValidationError:
        get_logger("t").exception("batch_failed")
    try:
        raise ValueError(_DB_ERROR)
    except ValueError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    lines = _lines(capsys.readouterr().out)
    assert len(lines) == 2
    text = json.dumps(lines)
    assert "Traceback" in text
    for personal in ("Camille", "camille@", "María", "Ortega"):
        assert personal not in text


def test_redact_text_leaves_ordinary_messages_alone() -> None:
    assert redact_text("kafka broker 127.0.0.1:9092 unreachable") == "kafka broker 127.0.0.1:9092 unreachable"


async def test_a_platform_call_does_not_log_its_url_and_the_coupon_code_in_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("notifier-test")
    # httpx's own transport for tests: the request line is logged by the client, whatever carries it.
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=[]))
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(
            "https://shop.example/wp-json/wc/v3/coupons", params={"code": "WELCOME-7KQ2X9"}
        )
    assert response.status_code == 200
    logging.getLogger("httpx").warning("a warning still shows")
    lines = _lines(capsys.readouterr().out)
    assert [line["event"] for line in lines] == ["a warning still shows"]
    assert "WELCOME-7KQ2X9" not in json.dumps(lines)
