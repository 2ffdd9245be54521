"""Contact facts (email, consent, name, address) change only when the incoming fact is newer than the one
held, by the source's own timestamp: a replay or a late delivery changes nothing, and a withdrawn consent
wins over an older (or simultaneous) grant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.ingest.sources import shopify
from services.segmenter.domain.funnel import decide
from services.segmenter.domain.profile import Profile
from shared.funnel_rules import FunnelRules
from shared.storefront_event_structs import StorefrontEvent
from tests.builders import segmenter_event

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
RULES = FunnelRules()
_seq = iter(range(10**6))


def upsert(at: datetime, **customer: Any) -> StorefrontEvent:
    return segmenter_event(
        "demo", "customer_upserted", at, {"store_customer_id": "c1", **customer}, event_id=f"u{next(_seq)}"
    )


def feed(*events: StorefrontEvent, profile: Profile | None = None) -> Profile:
    for event in events:
        profile = decide(profile, event, RULES, "c1").profile
    assert profile is not None
    return profile


def test_a_late_older_grant_does_not_undo_a_withdrawal() -> None:
    withdrawn = feed(upsert(NOW - timedelta(hours=1), accepts_marketing=False))
    late = decide(withdrawn, upsert(NOW - timedelta(hours=2), accepts_marketing=True), RULES, "c1")
    assert late.profile.accepts_marketing is False
    assert late.funnel_events == []  # nothing reaches the notifier either
    assert late.profile.contact_at["accepts_marketing"] == NOW - timedelta(hours=1)


def test_a_newer_grant_does_change_the_consent() -> None:
    withdrawn = feed(upsert(NOW - timedelta(hours=2), accepts_marketing=False))
    granted = decide(withdrawn, upsert(NOW - timedelta(hours=1), accepts_marketing=True), RULES, "c1")
    assert granted.profile.accepts_marketing is True
    [updated] = granted.funnel_events
    assert updated.profile.accepts_marketing is True
    assert updated.profile.consent_at == NOW - timedelta(hours=1)


def test_at_the_same_instant_the_withdrawal_wins_in_either_order() -> None:
    grant, withdrawal = upsert(NOW, accepts_marketing=True), upsert(NOW, accepts_marketing=False)
    assert feed(grant, withdrawal).accepts_marketing is False
    assert feed(withdrawal, grant).accepts_marketing is False


def test_a_replay_changes_nothing() -> None:
    event = upsert(NOW, accepts_marketing=True, first_name="Ann", city="Lyon")
    once = feed(event)
    again = decide(once, event, RULES, "c1")
    assert again.profile is once
    assert again.funnel_events == []


def test_each_field_keeps_its_newest_value_whatever_the_order() -> None:
    old = upsert(NOW - timedelta(days=2), first_name="Anne", city="Paris", email="old@example.com")
    new = upsert(NOW - timedelta(days=1), first_name="Ann", email="new@example.com")
    for events in ((old, new), (new, old)):
        p = feed(*events)
        # The city was only ever said by the older event: it is still the newest word on the city.
        assert (p.first_name, p.email, p.city) == ("Ann", "new@example.com", "Paris")


def test_the_source_timestamps_of_the_details_and_of_the_consent_are_used() -> None:
    """Shopify's order webhook may come long after the customer changed their details; the customer's own
    `updated_at` and the consent's `consent_updated_at` date the facts, not the order."""
    p = feed(upsert(NOW, accepts_marketing=False, first_name="Ann"))
    late = upsert(
        NOW + timedelta(hours=1),  # the event is newer...
        accepts_marketing=True,
        first_name="Anne",
        updated_at=(NOW - timedelta(days=1)).isoformat(),  # ...but its facts were said before
        consent_at=(NOW - timedelta(days=3)).isoformat(),
    )
    after = feed(late, profile=p)
    assert (after.accepts_marketing, after.first_name) == (False, "Ann")


def test_details_said_before_an_erasure_never_come_back() -> None:
    p = feed(upsert(NOW - timedelta(days=1), email="ann@example.com", accepts_marketing=True))
    erased = decide(
        p, segmenter_event("demo", "customer_erased", NOW, {"store_customer_id": "c1"}), RULES, "c1"
    ).profile
    late = feed(upsert(NOW - timedelta(hours=1), email="ann@example.com", first_name="Ann"), profile=erased)
    assert (late.email, late.first_name, late.erased) == (None, None, True)
    assert "email:ann@example.com" not in late.identifiers
    back = feed(upsert(NOW + timedelta(days=1), email="ann@example.com"), profile=late)
    assert (back.email, back.erased) == ("ann@example.com", False)


def test_shopify_dates_consent_by_consent_updated_at_and_details_by_updated_at() -> None:
    payload = {
        "id": 7,
        "email": "ann@example.com",
        "updated_at": "2026-03-01T10:00:00Z",
        "email_marketing_consent": {"state": "unsubscribed", "consent_updated_at": "2026-02-27T09:00:00Z"},
    }
    event = shopify.to_canonical("customers/update", payload, store_id="demo", event_id="x1", received_at=NOW)
    assert event is not None
    assert event.customer.updated_at == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert event.customer.consent_at == datetime(2026, 2, 27, 9, tzinfo=UTC)
    legacy = shopify.to_canonical(
        "customers/update",
        {"id": 7, "accepts_marketing": True, "accepts_marketing_updated_at": "2026-01-01T00:00:00Z"},
        store_id="demo",
        event_id="x2",
        received_at=NOW,
    )
    assert legacy is not None
    assert legacy.customer.consent_at == datetime(2026, 1, 1, tzinfo=UTC)
