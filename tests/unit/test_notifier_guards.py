"""Consent, exits, frequency cap and quiet hours at send time, with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.notifier.domain.guards import (
    Candidate,
    Defer,
    Recipient,
    Send,
    Skip,
    capped_until,
    check,
    quiet_hours_end,
)
from shared.notifier_rules import FrequencyCap, QuietHours

NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
CAP = FrequencyCap()
QUIET = QuietHours()


def message(*, marketing: bool = True, exit_on_order: bool = False, **changes: datetime) -> Candidate:
    return Candidate(
        marketing=marketing,
        exit_on_order=exit_on_order,
        trigger_at=changes.get("trigger_at", NOON - timedelta(hours=1)),
        send_before=changes.get("send_before", NOON + timedelta(days=3)),
    )


def recipient(**changes: object) -> Recipient:
    base: dict[str, object] = {
        "has_address": True,
        "accepts_marketing": True,
        "unsubscribed": False,
        "suppressed": False,
        "last_order_at": None,
        "timezone": "UTC",
    }
    return Recipient(**(base | changes))  # type: ignore[arg-type]


def verdict(m: Candidate, r: Recipient, recent: list[datetime] | None = None, now: datetime = NOON) -> object:
    return check(m, r, recent or [], cap=CAP, quiet=QUIET, store_timezone="UTC", now=now)


def test_consent_applies_to_marketing_only() -> None:
    assert verdict(message(), recipient(accepts_marketing=None)) == Skip("no_marketing_consent")
    assert verdict(message(), recipient(unsubscribed=True)) == Skip("unsubscribed")
    assert verdict(message(marketing=False), recipient(accepts_marketing=False, unsubscribed=True)) == Send()


def test_an_order_after_the_trigger_exits_the_flow() -> None:
    ordered = recipient(last_order_at=NOON - timedelta(minutes=5))
    assert verdict(message(exit_on_order=True), ordered) == Skip("exited_ordered")
    assert verdict(message(exit_on_order=False), ordered) == Send()
    earlier = recipient(last_order_at=NOON - timedelta(hours=2))  # before the trigger: still relevant
    assert verdict(message(exit_on_order=True), earlier) == Send()


def test_suppressed_or_erased_addresses_and_expired_messages_are_skipped() -> None:
    assert verdict(message(marketing=False), recipient(suppressed=True)) == Skip("suppressed")
    assert verdict(message(marketing=False), recipient(has_address=False)) == Skip("no_address")
    late = message(marketing=False, send_before=NOON - timedelta(seconds=1))
    assert verdict(late, recipient()) == Skip("expired")


def test_at_most_one_marketing_email_per_16_hours() -> None:
    sent = NOON - timedelta(hours=10)
    assert verdict(message(), recipient(), [sent]) == Defer(sent + timedelta(hours=16), "frequency_cap")
    assert verdict(message(), recipient(), [NOON - timedelta(hours=16)]) == Send()
    assert verdict(message(marketing=False), recipient(), [sent]) == Send()


def test_at_most_three_per_seven_days_and_a_capped_message_past_its_window_is_dropped() -> None:
    sends = [NOON - timedelta(days=6), NOON - timedelta(days=4), NOON - timedelta(days=2)]
    assert capped_until(sends, CAP, NOON) == NOON + timedelta(days=1)
    assert verdict(message(), recipient(), sends) == Defer(NOON + timedelta(days=1), "frequency_cap")
    short = message(send_before=NOON + timedelta(hours=6))
    assert verdict(short, recipient(), sends) == Skip("frequency_capped")


def test_quiet_hours_defer_to_the_morning_in_the_customers_time_zone() -> None:
    # 22:30 in Tokyo is 13:30 UTC: quiet there, so the message waits for 08:00 Tokyo time (23:00 UTC).
    now = datetime(2026, 11, 23, 13, 30, tzinfo=UTC)
    assert verdict(message(), recipient(timezone="Asia/Tokyo"), now=now) == Defer(
        datetime(2026, 11, 23, 23, 0, tzinfo=UTC), "quiet_hours"
    )
    assert verdict(message(), recipient(timezone="Europe/London"), now=now) == Send()
    assert verdict(message(marketing=False), recipient(timezone="Asia/Tokyo"), now=now) == Send()


def test_quiet_hours_across_midnight_and_daylight_saving() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # 02:30 local on the night clocks go forward (29 March 2026): the night ends at 08:00 CEST = 06:00 UTC.
    at = datetime(2026, 3, 29, 2, 30, tzinfo=UTC)
    assert quiet_hours_end(at, QUIET, berlin) == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)
    afternoon = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)
    assert quiet_hours_end(afternoon, QUIET, berlin) == afternoon
    lunch = QuietHours(start=time(12, 0), end=time(14, 0))
    assert quiet_hours_end(afternoon, lunch, ZoneInfo("UTC")) == datetime(2026, 3, 29, 14, 0, tzinfo=UTC)
    assert quiet_hours_end(afternoon, None, berlin) == afternoon


def test_an_unknown_time_zone_falls_back_to_the_stores() -> None:
    now = datetime(2026, 11, 23, 22, 0, tzinfo=UTC)
    result = check(
        message(), recipient(timezone="Mars/Olympus"), [], cap=CAP, quiet=QUIET, store_timezone="UTC", now=now
    )
    assert result == Defer(datetime(2026, 11, 24, 8, 0, tzinfo=UTC), "quiet_hours")
