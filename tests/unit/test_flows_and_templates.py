from __future__ import annotations

from datetime import timedelta

from services.notifier.adapters.templates import TemplateRenderer
from services.notifier.domain.flows import WELCOME, PlannedMessage, Skipped, plan
from shared.examples import example_files
from shared.funnel import LoyaltyStage
from shared.funnel_events import StageChangedEvent, decode_funnel_event


def _stage_changed(**profile_changes: object) -> StageChangedEvent:
    [path] = [p for p in example_files("funnel-events") if p.stem == "stage_changed"]
    event = decode_funnel_event(path.read_bytes())
    assert isinstance(event, StageChangedEvent)
    return event.model_copy(update={"profile": event.profile.model_copy(update=profile_changes)})


def test_first_time_stage_plans_one_welcome_message() -> None:
    event = _stage_changed()
    [item] = plan(event, event.occurred_at + timedelta(seconds=1))
    assert isinstance(item, PlannedMessage)
    assert item.flow == WELCOME
    assert item.trigger_event_id == event.event_id


def test_welcome_is_transactional_so_it_ignores_marketing_consent() -> None:
    event = _stage_changed(accepts_marketing=False)
    [item] = plan(event, event.occurred_at)
    assert isinstance(item, PlannedMessage)


def test_old_trigger_from_a_backfill_is_skipped() -> None:
    event = _stage_changed()
    [item] = plan(event, event.occurred_at + WELCOME.max_trigger_age + timedelta(seconds=1))
    assert isinstance(item, Skipped)
    assert item.reason == "trigger_too_old"


def test_customer_without_email_is_skipped() -> None:
    event = _stage_changed(email=None)
    [item] = plan(event, event.occurred_at)
    assert isinstance(item, Skipped)
    assert item.reason == "no_email"


def test_other_stage_changes_plan_nothing_yet() -> None:
    event = _stage_changed()
    repeat = event.model_copy(
        update={"payload": event.payload.model_copy(update={"to_stage": LoyaltyStage.REPEAT})}
    )
    assert plan(repeat, repeat.occurred_at) == []


def test_every_funnel_example_can_be_planned() -> None:
    for path in example_files("funnel-events"):
        event = decode_funnel_event(path.read_bytes())
        for item in plan(event, event.occurred_at):
            assert item.store_id == event.store_id


def test_welcome_renders_name_city_and_escapes_html() -> None:
    rendered = TemplateRenderer().render(
        "welcome",
        "en-CA",
        {"customer": {"first_name": "Zoë <script>", "city": "Ottawa"}, "store": {"name": "Demo Store"}},
    )
    assert rendered.subject == "Thank you for your order, Zoë <script>!"
    assert "Hi Zoë <script>," in rendered.text
    assert "Ottawa" in rendered.text
    assert "Zoë &lt;script&gt;" in rendered.html
    assert "<script>" not in rendered.html


def test_welcome_without_name_or_city_never_renders_blank_or_none() -> None:
    rendered = TemplateRenderer().render(
        "welcome", "de-DE", {"customer": {}, "store": {"name": "Demo Store"}}
    )
    assert rendered.subject == "Thank you for your order!"
    assert rendered.text.startswith("Hi there,")
    for part in (rendered.subject, rendered.text, rendered.html):
        assert "None" not in part
        assert ", ," not in part
        assert "to ." not in part
