"""What becomes of a dead sender's claim: at most one message per lane has an unknown fate."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.notifier.domain import delivery
from services.notifier.domain.delivery import Unsettled


def test_lanes_are_filled_round_robin_in_claim_order() -> None:
    assert delivery.lanes(5, 2) == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]
    assert delivery.lanes(3, 0) == [(0, 0), (0, 1), (0, 2)]


def test_the_first_unsettled_message_of_each_lane_is_the_one_of_unknown_fate() -> None:
    plan = delivery.settle(
        [
            Unsettled(id=7, lane=0, position=2, marketing=False, resent_before=False),
            Unsettled(id=5, lane=0, position=1, marketing=False, resent_before=False),  # on the connection
            Unsettled(id=6, lane=1, position=1, marketing=True, resent_before=False),  # on the connection
            Unsettled(id=8, lane=1, position=2, marketing=False, resent_before=False),
            Unsettled(id=9, lane=2, position=0, marketing=False, resent_before=True),  # resent already
        ]
    )
    assert plan.resend == [5]
    assert sorted(plan.uncertain) == [6, 9]
    assert sorted(plan.requeue) == [7, 8]


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 50), st.booleans(), st.booleans()),
        unique_by=lambda t: (t[0], t[1]),
        max_size=40,
    )
)
def test_every_message_is_settled_once_and_at_most_one_per_lane_is_of_unknown_fate(
    spec: list[tuple[int, int, bool, bool]],
) -> None:
    messages = [
        Unsettled(i, lane, pos, marketing, resent) for i, (lane, pos, marketing, resent) in enumerate(spec)
    ]
    plan = delivery.settle(messages)
    unknown = plan.resend + plan.uncertain
    assert sorted(unknown + plan.requeue) == list(range(len(messages)))
    assert len(unknown) == len({m.lane for m in messages})
    by_id = {m.id: m for m in messages}
    assert all(not by_id[i].marketing and not by_id[i].resent_before for i in plan.resend)


def test_the_message_id_is_the_same_for_the_same_key_and_carries_no_customer_id() -> None:
    one = delivery.message_id("demo", "email:ines@example.com", "welcome", "evt-1", "shop.example")
    assert one == delivery.message_id("demo", "email:ines@example.com", "welcome", "evt-1", "shop.example")
    assert one != delivery.message_id("demo", "email:ines@example.com", "welcome", "evt-2", "shop.example")
    assert one.startswith("<welcome.")
    assert one.endswith("@shop.example>")
    assert "ines" not in one
