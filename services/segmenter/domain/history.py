"""A customer's funnel history as a function of their facts, whatever order the facts arrived in. Pure.

Stage and health transitions are not appended as events arrive: they are derived from the dated facts
(orders, refunds, survey answers, referrals, and health timers that fired), each dated by the fact that
earned it and citing its event. A late, older order therefore lands where it belongs: it may promote the
customer at the time of the order that completed the window, or erase an "at risk" that never really was.
Delivered in any order, the same facts give the same history, stage and health.

The one thing that is not a fact about the customer is time passing after their last order: health moves to
at risk, then lapsed, when its timers fire. `health_seen_at` (the latest such move reached) bounds that
trailing part; every other move is derived from the orders alone.
"""

from __future__ import annotations

from bisect import insort
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Final, Literal

from services.segmenter.domain import health
from services.segmenter.domain.figures import counted as counted_orders
from services.segmenter.domain.figures import order_counts
from services.segmenter.domain.profile import OrderFact, Profile, Transition
from services.segmenter.domain.records import Record
from services.segmenter.domain.stages import earned
from services.segmenter.domain.struct_functions import replace
from services.segmenter.domain.vocabulary import (
    ACTIVE,
    AT_RISK,
    HEALTH_OF,
    LAPSED,
    LEVEL_RANK,
    NO_LEVEL,
    PROSPECT,
    STAGE_OF,
    VALUE,
)
from shared.funnel import Health, SurveyLevel
from shared.funnel_rules import FunnelRules, HealthRule

HEALTH_TIMER: Final = "health"


def timer_cause(store_id: str, customer_id: str, due_at: datetime) -> str:
    """What a health move earned by time passing cites: the firing of the health timer at that time."""
    return f"timer:{store_id}:{customer_id}:{HEALTH_TIMER}:{due_at.isoformat()}"


# At one instant: orders first, then what they make possible (a survey answer given with the order), and a
# refund last (a refund cannot precede its order). One `Final` each, which compiled code reads as a
# constant (names unpacked from range(4) were each a look-up in the module's dict, several a point).
_ORDER: Final = 0
_SURVEY: Final = 1
_REFERRAL: Final = 2
_REFUND: Final = 3


# A point of the stage history: (when, kind, cause, the order, the survey level). A plain tuple, which the
# compiled code builds and reads natively: a named tuple's class was an interpreted `__new__` call to build
# (about 2,000 instructions a point) and a descriptor to read each field through; a frozen dataclass's
# __init__ was five object.__setattr__ calls. Sorted by its first three fields (C's itemgetter).
_Point = tuple[datetime, int, str, OrderFact | None, SurveyLevel]

_POINT_ORDER: Final = itemgetter(0, 1, 2)


def _points(profile: Profile) -> list[_Point]:
    points: list[_Point] = []
    for o in profile.orders:
        points.append((o.placed_at, _ORDER, o.event_id, o, NO_LEVEL))
        # An order that still counts (nearly every one) has no refund point: the compiled rule says so, and
        # only the others ask the interpreted property, for each order of each derivation.
        if order_counts(o):
            continue
        stop = o.stopped_counting
        if stop is not None:
            points.append((max(stop.at, o.placed_at), _REFUND, stop.event_id, o, NO_LEVEL))
    for at, event_id, level in profile.survey_levels:
        points.append((at, _SURVEY, event_id, None, level))
    for m in profile.referred:
        points.append((m.at, _REFERRAL, m.event_id, None, NO_LEVEL))
    points.sort(key=_POINT_ORDER)
    return points


def stage_history(profile: Profile, rules: FunnelRules) -> list[Transition]:
    """The stage's moves, in their points' time order. A list, not a generator: its caller takes them all,
    and a compiled generator's object and calls cost more than the list."""
    steps: list[Transition] = []
    placed: list[datetime] = []
    level, referrals = NO_LEVEL, 0
    current = PROSPECT
    for at, kind, event_id, order, point_level in _points(profile):
        if kind == _ORDER:
            assert order is not None
            insort(placed, order.placed_at)
        elif kind == _REFUND:
            assert order is not None
            placed.remove(order.placed_at)
        elif kind == _SURVEY:
            if LEVEL_RANK[point_level] > LEVEL_RANK[level]:  # max by rank, the first of equals
                level = point_level
        else:
            referrals += 1
        stage, reason = earned(placed, level, referrals, rules)
        if stage is not current:  # members, one object each: a pointer compared, not a str's compare
            steps.append(_transition("stage", VALUE[current], VALUE[stage], reason, at, event_id))
            current = stage
    return steps


def _transition(
    dimension: Literal["stage", "health"], before: str, after: str, reason: str, at: datetime, cause: str
) -> Transition:
    return Transition(
        dimension=dimension,
        from_value=before,
        to_value=after,
        reason=reason,
        occurred_at=at,
        event_id=cause,
    )


# The thresholds and reasons of a health rule for one median gap, by (median gap, rule): every order of every
# derivation asks for them, nearly always for the same few (no gap yet, one store's rule). Holds the rule, so
# its id cannot be reused meanwhile; small, and emptied when full.
_MovesMemo = tuple[HealthRule, tuple[tuple[timedelta, Health, str], tuple[timedelta, Health, str]]]
_MOVES_MEMO_SIZE: Final = 256
_moves_of: Final[dict[tuple[float | None, int], _MovesMemo]] = {}


def _health_moves(
    last: datetime, median_days: float | None, rules: FunnelRules
) -> list[tuple[datetime, Health, str]]:
    """When health would move after an order at `last` if no order followed."""
    rule = rules.health
    key = (median_days, id(rule))
    held = _moves_of.get(key)
    if held is None or held[0] is not rule:
        at_risk_after, lapsed_after = health.thresholds(median_days, rule)
        held = _moves_of[key] = (
            rule,
            (
                (at_risk_after, AT_RISK, f"no order for {at_risk_after.days} days"),
                (lapsed_after, LAPSED, f"no order for {lapsed_after.days} days"),
            ),
        )
        if len(_moves_of) > _MOVES_MEMO_SIZE:
            _moves_of.clear()
    return [(last + after, to, reason) for after, to, reason in held[1]]


def _median_days(gaps: list[float]) -> float | None:
    """As Profile.median_days_between_orders computes it, of gaps kept sorted."""
    if not gaps:
        return None
    n = len(gaps)
    middle = gaps[n // 2] if n % 2 else (gaps[n // 2 - 1] + gaps[n // 2]) / 2
    return round(middle, 2)


# A Struct, not a frozen dataclass: one is made on every derivation (see identity.Resolution).
class HealthHistory(Record, frozen=True):
    transitions: tuple[Transition, ...]
    seen_at: datetime | None  # the latest move earned by time passing after the last order
    next_check: datetime | None  # when the next such move is due (the health timer)


def health_history(profile: Profile, rules: FunnelRules, seen_at: datetime | None) -> HealthHistory:
    """Health from the counted orders: between two orders, every move the gap earned; after the last one,
    the moves whose time has come (`seen_at`: the latest health timer fired)."""
    counted = counted_orders(profile.orders)  # Profile.counted_orders, without its interpreted property
    out: list[Transition] = []
    current = ACTIVE
    gaps: list[float] = []  # between the orders so far, sorted: their median is the customer's rhythm then
    for i, order in enumerate(counted):
        if i:
            insort(gaps, (order.placed_at - counted[i - 1].placed_at).total_seconds() / 86400)
        if current is not ACTIVE:
            out.append(
                _transition(
                    "health", VALUE[current], "active", "ordered again", order.placed_at, order.event_id
                )
            )
            current = ACTIVE
        following = counted[i + 1].placed_at if i + 1 < len(counted) else None
        moves = _health_moves(order.placed_at, _median_days(gaps), rules)
        for at, to, reason in moves:
            reached = at < following if following is not None else seen_at is not None and at <= seen_at
            if not reached:
                break
            cause = timer_cause(profile.store_id, profile.customer_id, at)
            out.append(_transition("health", VALUE[current], VALUE[to], reason, at, cause))
            current = to
        if following is None:
            trailing = [at for at, _, _ in moves]
            reached_at = [at for at in trailing if seen_at is not None and at <= seen_at]
            due = [at for at in trailing if seen_at is None or at > seen_at]
            return HealthHistory(
                tuple(out),
                reached_at[-1] if reached_at else None,
                None if profile.erased else (due[0] if due else None),
            )
    return HealthHistory(tuple(out), None, None)


def history(profile: Profile, rules: FunnelRules) -> Profile:
    """The profile with its history, stage, health and health horizon derived from its facts."""
    return derive(profile, rules)[0]


def derive(profile: Profile, rules: FunnelRules) -> tuple[Profile, datetime | None]:
    """`history`, and when the health timer is next due."""
    if not (profile.orders or profile.survey_levels or profile.referred):
        # No dated fact (a merge of two browsing profiles, mostly): no step, as the two histories below give
        # for no points and no orders, without building them.
        empty = replace(profile, transitions=(), stage=PROSPECT, health=ACTIVE, health_seen_at=None)
        return empty, None
    stages = stage_history(profile, rules)
    healths = health_history(profile, rules, profile.health_seen_at)
    moves = healths.transitions
    # The stage history comes out in its points' time order, so alone (no health move: most profiles) it is
    # already what the stable sort would give.
    merged = (
        tuple(sorted((*stages, *moves), key=lambda t: (t.occurred_at, t.dimension != "stage")))
        if moves
        else tuple(stages)
    )
    derived = replace(
        profile,
        transitions=merged,
        stage=STAGE_OF[stages[-1].to_value] if stages else PROSPECT,
        health=HEALTH_OF[moves[-1].to_value] if moves else ACTIVE,
        health_seen_at=healths.seen_at,
    )
    return derived, healths.next_check


def next_health_check(profile: Profile, rules: FunnelRules) -> datetime | None:
    return health_history(profile, rules, profile.health_seen_at).next_check


def occurrences(transitions: tuple[Transition, ...]) -> list[tuple[str, str, int]]:
    """Each transition's identity regardless of its date: (dimension, to, how many times reached so far).

    A late fact may move a transition in time ("loyal" earned by another order); it is still the same step
    for whoever acted on it, so it is not announced again."""
    seen: dict[tuple[str, str], int] = {}
    keys: list[tuple[str, str, int]] = []
    for t in transitions:
        n = seen.get((t.dimension, t.to_value), 0) + 1
        seen[(t.dimension, t.to_value)] = n
        keys.append((t.dimension, t.to_value, n))
    return keys
