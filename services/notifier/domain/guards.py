"""Right before a message goes out: may it go now, later, or not at all? A pure function of the facts.

Checked at send time, not when the message was planned, because a delayed message waits days: the customer
may have ordered (the flow exits), unsubscribed, bounced, or just had another email.
- Consent: marketing messages need an explicit opt-in and no unsubscription; transactional ones always go.
- Exits: a flow with `exit_on_order` stops when the customer ordered after its trigger.
- Frequency cap (marketing only): at least `min_gap` between two marketing messages, at most `per_week` in
  any 7 days. A capped message waits for its turn, unless that comes after its send-by time.
- Quiet hours (marketing only) in the customer's own time zone defer the message to the end of the night.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.notifier.domain.flows import SUPPORT_CHANNEL
from services.notifier.domain.messages import KnownCustomer, Message
from shared.notifier_rules import Channel, FrequencyCap, QuietHours

WEEK = timedelta(days=7)


@dataclass(frozen=True)
class Candidate:
    marketing: bool
    exit_on_order: bool
    trigger_at: datetime
    send_before: datetime


@dataclass(frozen=True)
class Recipient:
    has_address: bool
    accepts_marketing: bool | None
    unsubscribed: bool
    suppressed: bool
    last_order_at: datetime | None
    timezone: str | None


@dataclass(frozen=True)
class Send:
    pass


@dataclass(frozen=True)
class Defer:
    until: datetime
    reason: str


@dataclass(frozen=True)
class Skip:
    reason: str


Verdict = Send | Defer | Skip


def check(
    message: Candidate,
    recipient: Recipient,
    recent_marketing: Sequence[datetime],
    *,
    cap: FrequencyCap,
    quiet: QuietHours | None,
    store_timezone: str,
    now: datetime,
) -> Verdict:
    """`recent_marketing`: when this customer's marketing messages of the last 7 days went out."""
    if not recipient.has_address:
        return Skip("no_address")
    if recipient.suppressed:
        return Skip("suppressed")
    if message.exit_on_order and recipient.last_order_at and recipient.last_order_at > message.trigger_at:
        return Skip("exited_ordered")
    if message.marketing:
        if recipient.unsubscribed:
            return Skip("unsubscribed")
        if recipient.accepts_marketing is not True:
            return Skip("no_marketing_consent")
    if now > message.send_before:
        return Skip("expired")
    if not message.marketing:
        return Send()
    at = capped_until(recent_marketing, cap, now)
    reason = "frequency_cap" if at > now else ""
    after_quiet = quiet_hours_end(at, quiet, _zone(recipient.timezone, store_timezone))
    if after_quiet > at:
        at, reason = after_quiet, reason or "quiet_hours"
    if at <= now:
        return Send()
    if at > message.send_before:
        return Skip("frequency_capped" if reason == "frequency_cap" else "expired")
    return Defer(at, reason)


def capped_until(recent: Sequence[datetime], cap: FrequencyCap, now: datetime) -> datetime:
    """The earliest moment from `now` at which one more marketing message keeps within the cap."""
    window = sorted(t for t in recent if t > now - WEEK)
    earliest = now
    if window:
        earliest = max(earliest, window[-1] + cap.min_gap)
    if len(window) >= cap.per_week:
        # The oldest sends leave the 7-day window one by one; we need one slot free.
        earliest = max(earliest, window[len(window) - cap.per_week] + WEEK)
    return earliest


def quiet_hours_end(at: datetime, quiet: QuietHours | None, zone: ZoneInfo) -> datetime:
    """`at` itself when outside quiet hours, otherwise the moment they end (local time, DST-aware)."""
    if quiet is None or quiet.start == quiet.end:
        return at
    local = at.astimezone(zone)
    if not _is_quiet(local.time(), quiet):
        return at
    end_day = local.date() if local.time() < quiet.end else local.date() + timedelta(days=1)
    end = datetime.combine(end_day, quiet.end, tzinfo=zone)
    return end.astimezone(at.tzinfo)


def _is_quiet(t: time, quiet: QuietHours) -> bool:
    if quiet.start < quiet.end:  # e.g. 13:00-14:00
        return quiet.start <= t < quiet.end
    return t >= quiet.start or t < quiet.end  # across midnight, e.g. 21:00-08:00


def _zone(customer_tz: str | None, store_tz: str) -> ZoneInfo:
    for name in (customer_tz, store_tz):
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def recipient(message: Message, customer: KnownCustomer) -> Recipient:
    """The facts about the message's recipient the guards judge; its address depends on the channel."""
    if message.channel == SUPPORT_CHANNEL:
        address: object = True  # the store's support team, whose webhook was checked at planning
    elif message.channel == Channel.WEBHOOK.value:
        address = customer.phone
    else:
        address = customer.email
    return Recipient(
        has_address=bool(address),
        accepts_marketing=customer.accepts_marketing,
        unsubscribed=customer.unsubscribed_at is not None,
        suppressed=customer.suppressed_at is not None and message.channel == Channel.EMAIL.value,
        last_order_at=customer.last_order_at,
        timezone=customer.profile.get("timezone"),
    )
