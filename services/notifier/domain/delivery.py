"""What is known of a message's delivery, and what to do when a crash leaves it unknown.

A sender claims a batch of due messages and sends them in lanes, at most one lane per SMTP connection. A lane
sends its messages one at a time, in order, and records each outcome (a commit right after the server's
answer) before it starts the next. So when a sender dies, in each lane:
- every message before the first one still in `sending` has its outcome recorded;
- that first one may have been on the connection, and the server may have accepted it: its fate is unknown;
- every message after it was never started: it simply goes back to the queue.
At most one message per lane, hence per connection, has an unknown fate, not the whole claim.

A claim is the sender's while its lease runs (renewed as it works); one whose lease ran out belongs to a
sender that is gone or cut off, and any sender may settle it. Every message carries a Message-ID derived from
its unique key, so a copy sent twice is recognisable as the same message. A transactional message of unknown
fate (a welcome, a support alert) is sent once more: the customer is waiting for it, and a duplicate with the
same Message-ID is the lesser harm. A marketing one is skipped as `uncertain`: a missed promotion is the
lesser harm. A transactional message whose fate is unknown a second time is not sent a third time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

UNCERTAIN = "uncertain"


def lanes(count: int, lane_count: int) -> list[tuple[int, int]]:
    """(lane, position in the lane) for each of `count` messages in claim order: round robin, so the first
    messages of the claim (transactional ones come first) start at once, one per lane."""
    width = max(1, lane_count)
    return [(i % width, i // width) for i in range(count)]


@dataclass(frozen=True)
class Unsettled:
    """A message still in `sending` in a claim whose lease ran out."""

    id: int
    lane: int
    position: int
    marketing: bool
    resent_before: bool


@dataclass(frozen=True)
class Settlement:
    resend: list[int] = field(default_factory=list)  # transactional, fate unknown: same Message-ID again
    uncertain: list[int] = field(default_factory=list)  # fate unknown and not sent again
    requeue: list[int] = field(default_factory=list)  # never started: back to the queue as if unclaimed


def settle(unsettled: Iterable[Unsettled]) -> Settlement:
    """Decide, for the messages a dead sender left in `sending`, which were maybe on a connection."""
    first_in_lane: dict[int, Unsettled] = {}
    rest: list[Unsettled] = []
    for message in sorted(unsettled, key=lambda m: (m.lane, m.position, m.id)):
        if message.lane in first_in_lane:
            rest.append(message)
        else:
            first_in_lane[message.lane] = message
    outcome = Settlement(requeue=[m.id for m in rest])
    for message in first_in_lane.values():
        if message.marketing or message.resent_before:
            outcome.uncertain.append(message.id)
        else:
            outcome.resend.append(message.id)
    return outcome


def message_id(store_id: str, customer_id: str, flow: str, trigger_event_id: str, domain: str) -> str:
    """The RFC 5322 Message-ID of the message with this unique key: the same on every copy. A hash, so the
    header carries no customer id (guest ids hold an email address)."""
    key = "\x1f".join((store_id, customer_id, flow, trigger_event_id)).encode()
    digest = hashlib.sha256(key).hexdigest()[:40]
    return f"<{flow.replace('_', '-')}.{digest}@{domain or 'loyalty-funnel.invalid'}>"
