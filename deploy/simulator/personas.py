"""The kinds of shoppers a store has, and when each kind orders. Pure: every draw comes from the given rng.

Order times are planned backwards from the shopper's most recent order (the anchor), so each persona's
shape holds whatever the span: loyalists keep a rhythm up to the end, churners stopped long ago, repeaters
ordered twice. A share of shoppers are "shopping right now": their latest activity falls in the last hours
of the history, so the notifier (which ignores triggers older than a flow's maximum age, as it must for a
backfill) has fresh first orders, second orders, abandoned carts and surveys to act on.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from enum import StrEnum


class Persona(StrEnum):
    BROWSER = "browser"  # signs up, browses, may leave carts; never buys
    ONE_OFF = "one_off"  # buys once
    REPEATER = "repeater"  # buys twice
    LOYALIST = "loyalist"  # buys on a rhythm, answers the loyalty survey, refers friends
    CHURNER = "churner"  # bought once or twice long ago, then went quiet


WEIGHTS: dict[Persona, int] = {
    Persona.BROWSER: 35,
    Persona.ONE_OFF: 30,
    Persona.REPEATER: 15,
    Persona.LOYALIST: 10,
    Persona.CHURNER: 10,
}

# Shoppers whose latest activity is within RECENT_WINDOW of the end (a fresh order, cart, survey...).
RECENT_SHARE = 0.06
RECENT_WINDOW = timedelta(hours=6)
# Nothing is planned in the very last minutes: the end is "now", and requests take a moment to send.
LAST_GAP = timedelta(minutes=2)
# A churner's last order is at least this old: past the default at-risk threshold (90 days).
CHURN_QUIET = timedelta(days=100)
# Some churners are slipping away right now: their one order turns 90 days old (the default rules'
# at-risk threshold) in the last day and a half, so a demo shows fresh win-back messages.
SLIPPING_SHARE = 0.25
AT_RISK_AFTER = timedelta(days=90)


def pick_persona(rng: random.Random) -> Persona:
    personas = list(WEIGHTS)
    return rng.choices(personas, weights=[WEIGHTS[p] for p in personas], k=1)[0]


def _between(rng: random.Random, earliest: datetime, latest: datetime) -> datetime:
    if latest <= earliest:
        return earliest
    return earliest + (latest - earliest) * rng.random()


def anchor(rng: random.Random, start: datetime, end: datetime, *, recent: bool) -> datetime:
    """The shopper's most recent key moment (last order, or last visit for a browser)."""
    latest = end - LAST_GAP
    if recent:
        return _between(rng, max(start, end - RECENT_WINDOW), latest)
    return _between(rng, start, latest)


def _days(rng: random.Random, low: float, high: float) -> timedelta:
    return timedelta(days=rng.uniform(low, high))


def order_times(
    persona: Persona, rng: random.Random, start: datetime, end: datetime, *, recent: bool
) -> list[datetime]:
    """When the shopper orders, oldest first; empty for a browser. Every time is within [start, end]."""
    if persona == Persona.BROWSER:
        return []
    if persona == Persona.ONE_OFF:
        return [anchor(rng, start, end, recent=recent)]
    if persona == Persona.REPEATER:
        gap = _days(rng, 12, 120)
        second = anchor(rng, min(start + gap, end - LAST_GAP), end, recent=recent)
        return [max(start, second - gap), second]
    if persona == Persona.LOYALIST:
        return _rhythm(rng, start, end, recent=recent)
    return _churned(rng, start, end)


def _rhythm(rng: random.Random, start: datetime, end: datetime, *, recent: bool) -> list[datetime]:
    # Three orders at least (the default "loyal" threshold), up to eight, at a personal rhythm that fits
    # the span; the last one recent enough that the loyalist is still active.
    count = rng.choices(range(3, 9), weights=(6, 5, 4, 3, 2, 1), k=1)[0]
    rhythm = _days(rng, 14, 45)
    span = end - LAST_GAP - start
    if rhythm * (count - 1) > span * 0.9:
        rhythm = span * 0.9 / (count - 1)
    last = anchor(rng, max(start + rhythm * (count - 1), end - rhythm), end, recent=recent)
    times = []
    for i in range(count - 1, 0, -1):
        jitter = rng.uniform(-0.25, 0.25) * rhythm
        times.append(max(start, last - rhythm * i + jitter))
    times.append(last)
    return sorted(times)


def _churned(rng: random.Random, start: datetime, end: datetime) -> list[datetime]:
    if rng.random() < SLIPPING_SHARE and end - start > AT_RISK_AFTER + timedelta(days=2):
        return [end - AT_RISK_AFTER - timedelta(hours=rng.uniform(1, 36))]
    # The last order is over CHURN_QUIET ago when the span allows it; a short span leaves them merely quiet.
    latest = max(start, end - CHURN_QUIET)
    last = _between(rng, start, latest)
    if rng.random() < 0.5:
        return [last]
    # A gap of at most 45 days keeps their own rhythm (2 x the gap) within the store's 90-day threshold.
    return [max(start, last - _days(rng, 15, 45)), last]
