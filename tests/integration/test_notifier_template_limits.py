"""A store's template that uses more than a render's CPU for one customer's data holds up neither that
store's other mail nor anyone else's: that one message fails as a template error, and the others go out.
Before, the render ran to its end on the sender's event loop, however long that took (seconds here)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.adapters import template_limits
from services.notifier.adapters.templates import TEMPLATES_DIR
from tests.builders import funnel_event
from tests.fixtures.stack import SmtpServer
from tests.integration.notifier_harness import Clock, Notifier, dev_store

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)
FIRST_ORDER = {"from_stage": "prospect", "to_stage": "first_time", "reason": "test"}
# Slow for one first name only: the sample customer (Alex) that validates the templates renders at once.
SLOW_FOR_ONE = (
    "{% if customer.first_name == 'Slow' %}" + "{% for i in (1..10000) %}{% endfor %}" * 1000 + "{% endif %}"
)


async def test_a_render_past_its_cpu_deadline_fails_that_message_and_holds_up_no_other(
    engine: AsyncEngine,
    smtp_server: SmtpServer,
    store_id: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(template_limits, "RENDER_SECONDS", 0.2)
    top = tmp_path / "_partials" / "html_top.liquid"
    top.parent.mkdir(parents=True)
    top.write_text(SLOW_FOR_ONE + (TEMPLATES_DIR / "_partials" / "html_top.liquid").read_text())
    store = dev_store(store_id).model_copy(update={"templates_dir": tmp_path})
    notifier = Notifier(engine, store, Clock(T0), smtp_server.host, smtp_server.port)
    try:
        slow, quick = f"slow-{store_id}", f"quick-{store_id}"
        await notifier.plan(
            [
                funnel_event("stage_changed", store_id, slow, T0, FIRST_ORDER, first_name="Slow"),
                funnel_event("stage_changed", store_id, quick, T0, FIRST_ORDER, first_name="Quinn"),
            ]
        )
        await notifier.send()
        rows = {r.customer_id: r for r in await notifier.rows()}
        assert rows[quick].status == "sent"
        assert [m["To"] for m in smtp_server.messages if m["To"].endswith(f"-{store_id}@example.com")] == [
            f"{quick}@example.com"
        ]
        assert rows[slow].status == "failed"
        assert rows[slow].last_error == "template error: RenderTimeLimitError"
    finally:
        await notifier.http.aclose()
