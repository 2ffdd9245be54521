"""See before you send, through the running services: previews for sample and real customers in any
language, test sends through the real SMTP path (marked, recorded nowhere, no real coupon), and the exit
status of `reload`."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.notifier.domain.samples import EMAIL_FLOWS
from tests.e2e.conftest import RunningServices
from tests.e2e.test_notifier_flows import _order, _signed
from tests.fixtures.stack import SmtpServer
from tests.notifier_cli import run_reload
from tests.polling import eventually

pytestmark = pytest.mark.e2e

API = {"Authorization": "Bearer demo-api-key"}
LOCALES = ("en", "id-ID", "ms-MY", "tr-TR", "de-DE", "fr-FR", "es-ES")


async def test_every_flow_previews_in_every_language_for_a_sample_customer(services: RunningServices) -> None:
    base = f"{services.notifier}/v1/stores/demo/flows"
    async with httpx.AsyncClient(timeout=30, headers=API) as client:
        for flow in EMAIL_FLOWS:
            for locale in LOCALES:
                answer = await client.get(
                    f"{base}/{flow}/preview", params={"locale": locale, "stage": "loyal"}
                )
                assert answer.status_code == 200, (flow, locale, answer.text)
                preview = answer.json()
                assert preview["locale"] == locale.split("-")[0]
                assert preview["customer"] == "sample"
                assert "Alex" in preview["text"]
                assert "{{" not in preview["html"]
                assert "None" not in preview["text"]
        vip = (
            await client.get(f"{base}/vip/preview", params={"locale": "id-ID", "stage": "advocate"})
        ).json()
        assert vip["subject"] == "Alex, selamat datang di lingkaran VIP kami"
        assert vip["coupon_code"] == "VIP-SAMPLE"
        assert "diskon 20%" in vip["text"]  # the advocates' rate of the vip coupon
        assert 'style="' in vip["html"]  # CSS inlined
        assert 'alt="Demo Store coffee roasters"' in vip["html"]
        welcome = (await client.get(f"{base}/welcome/preview", params={"draft": "true"})).json()
        assert welcome["subject"].startswith(
            "Thank you for your order, Alex! Your coffee"
        )  # the demo's own file

        assert (await client.get(f"{base}/nope/preview")).status_code == 422
        bad_locale = await client.get(f"{base}/vip/preview", params={"locale": "x<y"})
        assert bad_locale.status_code == 422
        assert bad_locale.json()["errors"][0]["field"] == "locale"
        assert (
            await client.get(f"{base}/vip/preview", params={"customer_id": "nobody-here"})
        ).status_code == 404
        wrong_key = await client.get(f"{base}/vip/preview", headers={"Authorization": "Bearer nope"})
        assert wrong_key.status_code == 401


async def test_a_real_customers_preview_plans_and_issues_nothing(services: RunningServices) -> None:
    customer_id = uuid.uuid4().int % 10**15
    email = f"aiko.{customer_id}@example.com"
    notifications = f"{services.notifier}/v1/stores/demo/customers/{customer_id}/notifications"
    preview_url = f"{services.notifier}/v1/stores/demo/flows/review_request/preview"
    async with httpx.AsyncClient(timeout=30, headers=API) as client:
        body, headers = _signed("orders/create", _order(customer_id, email, customer_id + 5, []))
        assert (
            await client.post(f"{services.ingest}/webhooks/shopify", content=body, headers=headers)
        ).is_success

        async def planned() -> bool:
            # The order's funnel events (its stage change and the order itself) reach the notifier one by
            # one: wait until all the messages they plan exist, so only a preview could add another.
            answer = await client.get(preview_url, params={"customer_id": str(customer_id)})
            listed = await client.get(notifications)
            if answer.status_code != 200 or listed.status_code != 200:
                return False
            return {"welcome", "review_request", "follow_up"} <= {m["flow"] for m in listed.json()}

        await eventually(planned, 120, "the order's messages planned")
        # Their status may move on meanwhile, but a preview adds none and issues no coupon.
        before = {(m["id"], m["flow"]) for m in (await client.get(notifications)).json()}
        preview = (
            await client.get(preview_url, params={"customer_id": str(customer_id), "locale": "fr"})
        ).json()
        assert preview["customer"] == str(customer_id)
        assert preview["subject"].startswith("Aiko, que pensez-vous de")
        assert "Bonjour Aiko," in preview["text"]
        coupons = await client.get(f"{services.notifier}/v1/stores/demo/customers/{customer_id}/coupons")
        assert not [c for c in coupons.json() if c["code"].endswith("SAMPLE")]
        assert {(m["id"], m["flow"]) for m in (await client.get(notifications)).json()} == before


async def test_test_send_reaches_the_smtp_server_marked_and_recorded_nowhere(
    services: RunningServices, smtp_server: SmtpServer
) -> None:
    url = f"{services.notifier}/v1/stores/demo/flows/abandoned_cart/test-send"
    async with httpx.AsyncClient(timeout=30, headers=API) as client:
        refused = await client.post(url, json={"to": "someone@example.com"})
        assert refused.status_code == 403
        assert refused.json()["errors"][0]["field"] == "to"
        sent = await client.post(
            url, json={"to": "Marketing@demo-store.example", "stage": "repeat", "locale": "de-DE"}
        )
        assert sent.status_code == 200, sent.text
        answer = sent.json()
    assert answer["subject"].startswith("[TEST] Alex, Ihr Warenkorb wartet auf Sie")

    async def arrived() -> bool:
        return any(m["Subject"] == answer["subject"] for m in smtp_server.messages)

    await eventually(arrived, 30, "the test email at the SMTP server")
    [mail] = [m for m in smtp_server.messages if m["Subject"] == answer["subject"]]
    assert mail["X-LoyaltyFunnel-Test"] == "true"
    assert mail["Message-ID"] == answer["message_id"]
    assert mail["Reply-To"] == "help@demo-store.example"
    plain = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert "Hallo Alex," in plain.get_content()
    assert "CART-SAMPLE" in plain.get_content()  # never issued, and shorter than any real code
    assert "CART-SAMPLE" in html.get_content()

    # Nothing of it in the notifier's tables: no message row (so nothing in /flows), no coupon.
    engine = create_async_engine(services.env["DATABASE_URL"])
    try:
        async with engine.connect() as conn:
            messages = await conn.scalar(
                text("SELECT count(*) FROM notifier.messages WHERE subject LIKE '[TEST]%'")
            )
            coupons = await conn.scalar(
                text("SELECT count(*) FROM notifier.coupons WHERE code LIKE '%SAMPLE'")
            )
    finally:
        await engine.dispose()
    assert (messages, coupons) == (0, 0)


def _with_broken_template(stores_file: Path, directory: Path) -> Path:
    """The running services' registry, but the demo store's templates have a syntax error on line 1."""
    broken = directory / "templates"
    (broken / "welcome" / "en").mkdir(parents=True)
    (broken / "welcome" / "en" / "subject.liquid").write_text("Hello {{ customer.first_name }\n")
    document = yaml.safe_load(stores_file.read_text())
    document["stores"]["demo"]["templates_dir"] = str(broken)
    path = directory / "stores.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


async def test_reload_command_signals_the_running_notifier_and_refuses_a_broken_registry(
    services: RunningServices, tmp_path: Path
) -> None:
    done = await asyncio.to_thread(run_reload, services.env, wait_seconds=60)
    assert done.returncode == 0, done.stderr
    assert "reloaded" in done.stderr

    broken_registry = _with_broken_template(Path(services.env["STORES_FILE"]), tmp_path)
    refused = await asyncio.to_thread(
        run_reload, {**services.env, "STORES_FILE": str(broken_registry)}, wait_seconds=60
    )
    assert refused.returncode == 1
    assert "demo/welcome/en/subject.liquid:1" in refused.stderr
    assert "keeps its registry and templates" in refused.stderr
    # The running notifier still renders with what it had.
    async with httpx.AsyncClient(timeout=30, headers=API) as client:
        answer = await client.get(f"{services.notifier}/v1/stores/demo/flows/welcome/preview")
    assert answer.status_code == 200
    assert answer.json()["subject"].startswith("Thank you for your order, Alex!")
