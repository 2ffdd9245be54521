"""How `make chaos` judges a run: lost events, duplicate messages by Message-ID, the fault schedule."""

from __future__ import annotations

from deploy.chaos.verdict import (
    UNKNOWN_FLOW,
    Email,
    Fault,
    Findings,
    duplicate_messages,
    fault_times,
    flow_of,
    lost_events,
)


def test_an_acknowledged_event_without_a_processed_record_is_lost_once() -> None:
    acknowledged = ["shopify:1", "segment:a", "shopify:1", "shopify:2", "segment:b"]
    assert lost_events(acknowledged, {"shopify:1", "segment:b"}) == ["segment:a", "shopify:2"]
    assert lost_events(acknowledged, {"shopify:1", "shopify:2", "segment:a", "segment:b"}) == []


def test_the_flow_comes_from_the_utm_campaign_of_the_links() -> None:
    body = "See https://shop.example/?utm_source=loyalty-funnel&utm_medium=email&utm_campaign=win_back ."
    assert flow_of(body) == "win_back"
    assert flow_of("no links here") == UNKNOWN_FLOW


def test_one_message_per_key_is_no_duplicate() -> None:
    emails = [
        Email("ines@example.com", "<a@shop>", "welcome"),
        Email("ines@example.com", "<b@shop>", "review_request"),
        Email("ines@example.com", "<c@shop>", "review_request"),  # two orders, two keys
    ]
    handed = {("ines@example.com", "welcome"): 1, ("ines@example.com", "review_request"): 2}
    assert duplicate_messages(emails, handed) == {}


def test_a_key_sent_twice_under_two_message_ids_is_a_duplicate() -> None:
    emails = [
        Email("Ines@Example.com", "<a@shop>", "welcome"),
        Email("ines@example.com", "<z@shop>", "welcome"),
    ]
    assert duplicate_messages(emails, {("ines@example.com", "welcome"): 1}) == {
        ("ines@example.com", "welcome"): 1
    }


def test_a_resend_under_the_same_message_id_is_not_a_duplicate() -> None:
    # An unknown-fate transactional message is resent once with the Message-ID derived from its key.
    emails = [Email("ines@example.com", "<key-1@shop>", "welcome")] * 2
    assert duplicate_messages(emails, {("ines@example.com", "welcome"): 1}) == {}


def test_a_message_the_notifier_has_no_key_for_counts() -> None:
    emails = [Email("leon@example.com", "<a@shop>", "vip")]
    assert duplicate_messages(emails, {}) == {("leon@example.com", "vip"): 1}


def test_messages_of_an_unknown_flow_count_against_the_recipients_keys() -> None:
    handed = {("ines@example.com", "welcome"): 1, ("ines@example.com", "vip"): 1}
    one_each = [Email("ines@example.com", "<a@shop>", "welcome"), Email("ines@example.com", "<b@shop>", "?")]
    assert duplicate_messages(one_each, handed) == {}
    too_many = [*one_each, Email("ines@example.com", "<c@shop>", "?")]
    assert duplicate_messages(too_many, handed) == {("ines@example.com", "?"): 1}


def test_faults_are_spread_over_the_run_away_from_its_edges() -> None:
    assert fault_times(180, 5) == [30.0, 60.0, 90.0, 120.0, 150.0]
    assert fault_times(180, 0) == []


def _findings(**changes: object) -> Findings:
    base: dict[str, object] = {
        "acknowledged_requests": 100,
        "acknowledged_events": 250,
        "lost": [],
        "duplicate_transitions": 0,
        "duplicate_messages": {},
        "dead_letters": {"storefront-events.dlq": 0},
        "faults": [Fault("ingest", 30, 8.5, 1)],
    }
    return Findings(**(base | changes))  # type: ignore[arg-type]


def test_a_clean_run_has_no_problems() -> None:
    assert _findings().problems() == []


def test_each_kind_of_damage_is_a_problem() -> None:
    assert _findings(lost=["shopify:1"]).problems() == ["1 acknowledged events lost"]
    assert _findings(duplicate_transitions=2).problems() == ["2 duplicate transitions"]
    assert _findings(duplicate_messages={("a@x", "welcome"): 1}).problems() == ["1 duplicate messages"]
    assert _findings(dead_letters={"funnel-events.dlq": 3}).problems() == ["3 dead letters"]
    assert _findings(acknowledged_events=0).problems() == [
        "nothing was acknowledged: the load never got through"
    ]
    assert _findings(faults=[Fault("postgres", 150, None)]).problems() == [
        "not ready within 120 s after killing postgres"
    ]
    assert _findings(settled=False).problems() == ["the pipeline did not catch up with what was acknowledged"]
