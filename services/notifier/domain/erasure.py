"""What a customer's erasure leaves the notifier of what the customer said after it.

The segmenter's erasure forgets what was said up to it and keeps what was said after it, so that an erasure
it reads after what the customer did since (a cart by their browser's anonymous id or their email, keyed to
another partition than the account's `customers/redact`) ends as one it read first. Its `customer_erased`
carries the profile as it left it: any contact detail in that snapshot was given after the erasure. The
notifier forgets the rest as always, then takes those up again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.events import CONTACT_FIELDS
from shared.funnel_events import CustomerErasedFunnelEvent


@dataclass(frozen=True, slots=True)
class KeptAfterErasure:
    """Details the customer gave after asking at `since` to be forgotten. A message planned after `since`
    to one of `addresses` was planned for what the customer said since: it keeps its address and content."""

    since: datetime
    addresses: tuple[str, ...]


def kept_after(erasure: CustomerErasedFunnelEvent) -> KeptAfterErasure | None:
    """What the customer said after the erasure, if anything: None for an erasure that kept no details (as
    every erasure that reaches us before what the customer said since does, and each notice for an id merged
    into an erased customer, whose snapshot is empty)."""
    snapshot = erasure.profile
    if all(getattr(snapshot, name) is None for name in CONTACT_FIELDS):
        return None
    addresses = tuple(a for a in (snapshot.email, snapshot.phone) if a is not None)
    return KeptAfterErasure(since=erasure.occurred_at, addresses=addresses)
