"""A property of the segmenter's erasure, whatever the delivery order and the batching (README, "Erasure (a
`customer_erased` ..."): small histories of one customer known by up to three keys (account id u-9, an email,
a browser's anonymous id), with events before and after one erasure at E keyed by the account id (Shopify's
customers/redact), and sometimes a second customer sharing nothing, fed to a fresh store in time order and in
other orders and batchings through `FunnelProcessor` and a real PostgreSQL. After each:

1. privacy: nothing personal the customer said at or before E is left in any profile row (live or tombstone,
   its document and email column) nor in the identities table: contact details, carts' changes, product
   views, survey answers, and the email/anonymous-id look-ups heard only before E;
2. nothing accepted is lost: what was said after E (and all of the second customer's, and every order) is held
   by some live profile of the store (which id holds it may differ by delivery order, README).
3. (reported, asserted only with ERASURE_PROPERTY_STRICT=1) the same state as time order, where both leave it
   under the same customer ids.

ERASURE_PROPERTY_EXAMPLES sets the number of examples (default 150, under a minute when all pass). They are
the same examples on every run (hypothesis derandomized), so that `make test` is repeatable; a search for
new ones runs with ERASURE_PROPERTY_RANDOM=1 (and more examples)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.segmenter.adapters.tables import identities, profiles
from services.segmenter.entrypoints.processor import FunnelProcessor
from shared.storefront_event_structs import StorefrontEvent
from tests.builders import segmenter_event
from tests.integration.test_segmenter_engine import registry

pytestmark = pytest.mark.integration

E = datetime(2026, 4, 8, 9, 0, tzinfo=UTC)  # the erasure
EXAMPLES = int(os.environ.get("ERASURE_PROPERTY_EXAMPLES", "150"))
STRICT = os.environ.get("ERASURE_PROPERTY_STRICT") == "1"
RANDOM = os.environ.get("ERASURE_PROPERTY_RANDOM") == "1"

# The keys each customer may be named by. A: the erased customer; B: another sharing nothing.
KEYS: dict[str, dict[str, tuple[str, ...]]] = {
    "A": {"id": ("u-9",), "email": ("gil@x.io", "gil@new.io"), "anon": ("a-1", "a-2")},
    "B": {"id": ("u-7",), "email": ("zed@x.io",), "anon": ("a-7",)},
}
FIELD = {"id": "store_customer_id", "email": "email", "anon": "anonymous_id"}
PREFIX = {"id": "id:", "email": "email:", "anon": "anon:"}
DETAILS = ("first_name", "city", "phone")
KINDS = ("upsert", "link", "cart", "view", "order", "survey", "alias", "abandon")
PREVIOUS_KIND = {"id": "store_customer_id", "email": "email", "anon": "anonymous_id"}
# Minutes from the erasure: at or before it (<= 0) is what it forgets; ties are on purpose.
OFFSETS = (-600, -120, -30, -1, 0, 1, 30, 120, 600)


@dataclass(frozen=True)
class Spec:
    """One event of a history, apart from the store it is built for. `n` is its number, and what it says is
    named after it: city c03, first name f03, phone +4790000003, a cart's change by its event id (...:e03),
    product p03, survey s03, order o03."""

    n: int
    who: str  # "A" or "B"
    # One of KINDS, or "erase"; "link" and "alias" name two keys (an alias the second as its previous_id).
    kind: str
    keys: tuple[tuple[str, str], ...]  # (kind of key, value)
    minutes: int  # from E
    details: tuple[str, ...] = ()
    cart: str = ""  # a cart's id: its own (a snapshot), or "kk", shared (Product Added, a change)

    @property
    def at(self) -> datetime:
        return E + timedelta(minutes=self.minutes)

    @property
    def identifiers(self) -> set[str]:
        return {f"{PREFIX[k]}{v}" for k, v in self.keys}

    def details_said(self) -> dict[str, str]:
        """field -> value of the contact details it says (its email among them)."""
        said = {name: _value(name, self.n) for name in self.details}
        named = self.keys[:1] if self.kind == "alias" else self.keys  # an alias's previous id is no detail
        said |= {"email": v for k, v in named if k == "email"}  # noqa: B035 - at most one email
        return said

    def __repr__(self) -> str:
        keys = ",".join(f"{k}={v}" for k, v in self.keys)
        extra = f" +{'/'.join(self.details)}" if self.details else ""
        extra += f" cart {self.cart}" if self.cart else ""
        return f"#{self.n:02d} {self.who} {self.kind}({keys}){extra} at E{self.minutes:+d}m"


def _value(name: str, n: int) -> str:
    return f"+47900000{n:02d}" if name == "phone" else f"{name[0]}{n:02d}"


def build(spec: Spec, store: str) -> StorefrontEvent:
    keys = spec.keys[:1] if spec.kind == "alias" else spec.keys
    who: dict[str, Any] = {FIELD[k]: v for k, v in keys}
    who |= {name: _value(name, spec.n) for name in spec.details}
    event_id = f"{store}:e{spec.n:02d}"
    payload: dict[str, Any] | None = None
    kind = {
        "upsert": "customer_upserted",
        "link": "customer_upserted",
        "cart": "cart_updated",
        "abandon": "cart_abandoned",
        "alias": "identity_linked",
        "view": "product_viewed",
        "order": "order_placed",
        "survey": "survey_answered",
        "erase": "customer_erased",
    }[spec.kind]
    if spec.kind == "alias":
        kind_of, previous = spec.keys[1]
        payload = {"previous_id": previous, "previous_kind": PREVIOUS_KIND[kind_of]}
    elif spec.kind in ("cart", "abandon"):
        payload = {
            "cart_id": spec.cart,
            "action": "added" if spec.cart == "kk" else "snapshot",
            "currency": "EUR",
            "total": "30.00",
            "line_items": [{"product_id": "p7", "price": "30"}],
        }
    elif spec.kind == "view":
        payload = {"product": {"product_id": f"p{spec.n:02d}"}}
    elif spec.kind == "order":
        payload = {
            "order_id": f"o{spec.n:02d}",
            "total": "10.00",
            "currency": "EUR",
            "line_items": [{"product_id": "op", "price": "10.00"}],
        }
    elif spec.kind == "survey":
        answers = [{"statement_id": "action.recommend", "score": 5}]
        payload = {"survey_id": f"s{spec.n:02d}", "answers": answers, "csat": 4}
    return segmenter_event(store, kind, spec.at, who, payload, event_id=event_id)


# -- histories ---------------------------------------------------------------------------------------------


@st.composite
def _key_set(draw: st.DrawFn, who: str, at_least: int) -> tuple[tuple[str, str], ...]:
    kinds = draw(
        st.lists(st.sampled_from(("id", "email", "anon")), min_size=at_least, max_size=3, unique=True)
    )
    return tuple((k, draw(st.sampled_from(KEYS[who][k]))) for k in sorted(kinds))


@st.composite
def _spec(draw: st.DrawFn, n: int, who: str) -> Spec:
    kind = draw(st.sampled_from(KINDS))
    keys = draw(_key_set(who, 2 if kind == "link" else 1))
    if kind == "alias":
        keys = tuple(draw(st.permutations(draw(_key_set(who, 2)))))[:2]
    details: tuple[str, ...] = ()
    if kind in ("upsert", "order") or (kind == "link" and draw(st.booleans())):
        details = tuple(sorted(draw(st.sets(st.sampled_from(DETAILS), min_size=kind == "upsert"))))
    cart = draw(st.sampled_from((f"k{n:02d}", "kk"))) if kind in ("cart", "abandon") else ""
    return Spec(n, who, kind, keys, draw(st.sampled_from(OFFSETS)), details, cart)


@st.composite
def histories(draw: st.DrawFn) -> list[Spec]:
    """The events in the order they were drawn (numbered 1...), the erasure (#00) among them."""
    count = draw(st.integers(1, 9))
    others = draw(st.integers(0, 2)) if draw(st.booleans()) else 0
    specs = [draw(_spec(n + 1, "A")) for n in range(count)]
    specs += [draw(_spec(count + n + 1, "B")) for n in range(others)]
    return [Spec(0, "A", "erase", (("id", "u-9"),), 0), *specs]


def happening(specs: Sequence[Spec]) -> list[Spec]:
    """In time order; at the erasure's instant what was said then comes first (it is forgotten)."""
    return sorted(specs, key=lambda s: (s.at, s.kind == "erase", s.n))


def deliveries(specs: Sequence[Spec], shuffled: list[int], cuts: list[int]) -> dict[str, list[list[Spec]]]:
    """Delivery name -> its batches."""
    timed = happening(specs)
    erasure = next(s for s in specs if s.kind == "erase")
    rest = [s for s in timed if s is not erasure]
    mixed = [timed[i] for i in shuffled]
    batches: list[list[Spec]] = []
    start = 0
    for cut in sorted({*cuts, len(mixed)}):
        if cut > start:
            batches.append(mixed[start:cut])
            start = cut
    return {
        "time order, one by one": [[s] for s in timed],
        "time order, one batch": [timed],
        "erasure last, one by one": [[s] for s in [*rest, erasure]],
        "erasure last, one batch": [[*rest, erasure]],
        "erasure first, one by one": [[s] for s in [erasure, *rest]],
        "reversed, one by one": [[s] for s in reversed(timed)],
        "shuffled, batches": batches,
    }


# -- what each event says, and what must be gone or held -----------------------------------------------------


def _closure(start: set[str], specs: Sequence[Spec]) -> set[str]:
    """`start` and every identifier that events among `specs` link to it, directly or not."""
    found = set(start)
    grew = True
    while grew:
        grew = False
        for s in specs:
            if s.identifiers & found and not s.identifiers <= found:
                found |= s.identifiers
                grew = True
    return found


def reach(specs: Sequence[Spec]) -> set[str]:
    """The identifiers whose data said before the erasure it must reach, whatever the order: those events
    before it link to the account u-9, and those that events before it link to an identifier named with u-9
    after it (a login since: that profile merges into the erased customer, bringing only what it heard since).
    Not what events since link to u-9 through a look-up the erasure forgot (an email or anonymous id heard
    before it: the README's "no email or anonymous id from before the erasure finds them again")."""
    before = [s for s in specs if s.who == "A" and s.minutes <= 0 and s.kind != "erase"]
    found = _closure({"id:u-9"}, before)
    for s in specs:
        if s.who == "A" and s.minutes > 0 and "id:u-9" in s.identifiers:
            found |= _closure(s.identifiers, before)
    return found


def erasable(s: Spec, reached: set[str]) -> bool:
    """Said by the erased customer at or before the erasure."""
    return s.who == "A" and s.minutes <= 0 and s.kind != "erase" and bool(s.identifiers & reached)


@dataclass(frozen=True)
class Said:
    spec: Spec
    what: str  # a contact field, or "cart", "view", "survey", "order"
    token: str

    def __repr__(self) -> str:
        return f"{self.what} {self.token!r} (#{self.spec.n:02d} at E{self.spec.minutes:+d}m)"


def statements(specs: Sequence[Spec]) -> list[Said]:
    said = []
    for s in specs:
        said += [Said(s, name, value) for name, value in s.details_said().items()]
        if s.kind in ("cart", "abandon"):
            said.append(Said(s, "cart", f"e{s.n:02d}"))  # the change it made, by its event id
        elif s.kind == "view":
            said.append(Said(s, "view", f"p{s.n:02d}"))
        elif s.kind == "survey":
            said.append(Said(s, "survey", f"s{s.n:02d}"))
        elif s.kind == "order":
            said.append(Said(s, "order", f"o{s.n:02d}"))
    return said


@dataclass
class Stored:
    rows: dict[str, tuple[str | None, str | None, dict[str, Any]]]  # customer -> merged_into, email, facts
    identities: dict[str, str]

    def live(self) -> list[str]:
        return [c for c, (merged_into, _, _) in self.rows.items() if merged_into is None]

    def holds(self, customer_id: str, said: Said) -> bool:
        _, email, facts = self.rows[customer_id]
        if said.what == "email":
            return said.token in (email, facts.get("email"))
        if said.what in DETAILS:
            return facts.get(said.what) == said.token
        if said.what == "cart":
            return any(
                ch.get("event_id", "").endswith(f":{said.token}")
                for cart in facts.get("carts") or ()
                for ch in cart.get("changes") or ()
            )
        if said.what == "view":
            return any(v["product_id"] == said.token for v in facts.get("viewed") or ())
        if said.what == "survey":
            return (facts.get("survey") or {}).get("survey_id") == said.token
        assert said.what == "order"
        return any(o["order_id"] == said.token for o in facts.get("orders") or ())

    def where(self, said: Said) -> list[str]:
        return [c for c in self.rows if self.holds(c, said)]

    def look_up(self, identifier: str) -> list[str]:
        """Where a look-up is kept: its identities row, and the profile documents that list it."""
        found = [f"identities -> {self.identities[identifier]}"] if identifier in self.identities else []
        found += [
            f"{c}.identifiers" for c, (_, _, f) in self.rows.items() if identifier in f.get("identifiers", ())
        ]
        return found


async def stored(engine: AsyncEngine, store: str) -> Stored:
    async with engine.connect() as conn:
        found = await conn.execute(
            select(profiles.c.customer_id, profiles.c.merged_into, profiles.c.email, profiles.c.facts).where(
                profiles.c.store_id == store
            )
        )
        rows = {r.customer_id: (r.merged_into, r.email, r.facts) for r in found.all()}
        found = await conn.execute(
            select(identities.c.identifier, identities.c.customer_id).where(identities.c.store_id == store)
        )
        return Stored(rows, {r.identifier: r.customer_id for r in found.all()})


def _personal_before(specs: Sequence[Spec], reached: set[str] | None) -> tuple[list[Said], list[str]]:
    """What the erased customer said at or before the erasure (of the events `reached` reaches; all of the
    customer's when None), apart from what was also said since (an email given again), and the look-ups
    heard only before it."""
    said = statements(specs)
    in_reach = (
        (lambda s: erasable(s, reached))
        if reached is not None
        else (lambda s: s.who == "A" and s.minutes <= 0 and s.kind != "erase")
    )
    again = {(x.what, x.token) for x in said if not in_reach(x.spec)}
    personal = [x for x in said if in_reach(x.spec) and x.what != "order" and (x.what, x.token) not in again]
    heard_since = {i for s in specs if not in_reach(s) for i in s.identifiers}
    heard = {i for s in specs if in_reach(s) for i in s.identifiers}
    look_ups = sorted(i for i in heard - heard_since if i.startswith(("email:", "anon:")))
    return personal, look_ups


def privacy_left(specs: Sequence[Spec], state: Stored) -> list[str]:
    """Invariant 1: where something the erased customer said at or before E is still stored."""
    personal, look_ups = _personal_before(specs, reach(specs))
    left = [f"{x} in profile {', '.join(state.where(x))}" for x in personal if state.where(x)]
    left += [f"look-up {i} in {', '.join(state.look_up(i))}" for i in look_ups if state.look_up(i)]
    return left


def left_unlike(specs: Sequence[Spec], state: Stored, reference: Stored) -> list[str]:
    """Invariant 1 against time order: what the customer said before the erasure that this store keeps and
    the store fed in time order forgot (whichever of the customer's events its links reach)."""
    personal, look_ups = _personal_before(specs, None)
    left = [
        f"{x} in profile {', '.join(state.where(x))}"
        for x in personal
        if state.where(x) and not reference.where(x)
    ]
    left += [
        f"look-up {i} in {', '.join(state.look_up(i))}"
        for i in look_ups
        if state.look_up(i) and not reference.look_up(i)
    ]
    return left


def lost(specs: Sequence[Spec], state: Stored) -> list[str]:
    """Invariant 2: what was said after E (or by anyone else, and every order) that no live profile holds,
    leaving aside what a later statement of the same kind legitimately replaces."""
    said = statements(specs)
    keepable = [x for x in said if x.spec.minutes > 0 or x.spec.who == "B" or x.what == "order"]
    live = state.live()
    orders_at = [s.at for s in specs if s.kind == "order"]
    views = sum(1 for x in keepable if x.what == "view")
    carts = sum(1 for x in keepable if x.what == "cart")
    out = []
    for x in keepable:
        if any(state.holds(c, x) for c in live):
            continue
        if x.what in (*DETAILS, "email", "survey") and any(
            y.what == x.what and y.token != x.token and y.spec.at >= x.spec.at and y.spec.who == x.spec.who
            for y in said
            if y.spec.minutes > 0 or y.spec.who == "B"
        ):
            continue  # replaced by a newer one (or a larger one at the same instant)
        if x.what == "cart" and (carts > 10 or any(at >= x.spec.at for at in orders_at)):
            continue  # closed by an order at or after it, or one too many
        if x.what == "view" and views > 10:
            continue
        out.append(f"{x} held by no live profile (where: {state.where(x) or 'nowhere'})")
    return out


def comparable(state: Stored, store: str) -> Any:
    """The live profiles' documents and the look-ups, to compare two stores fed the same history."""
    documents = {
        c: json.loads(json.dumps(f).replace(store, "<store>"))
        for c, (m, _, f) in state.rows.items()
        if m is None
    }
    return (
        {c: d | {"transitions": None, "health_seen_at": None} for c, d in documents.items()},
        sorted(state.identities.items()),
    )


@settings(
    max_examples=EXAMPLES,
    derandomize=not RANDOM,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
@given(data=st.data(), specs=histories())
async def test_an_erasure_forgets_what_was_said_before_it_and_keeps_what_came_after_in_any_order(
    engine: AsyncEngine, data: st.DataObject, specs: list[Spec]
) -> None:
    note(f"happened: {happening(specs)}")
    shuffled = data.draw(st.permutations(range(len(specs))), label="shuffled")
    cuts = data.draw(st.lists(st.integers(1, len(specs)), max_size=3), label="cuts")
    run = uuid.uuid4().hex[:8]
    failures: list[str] = []
    states: dict[str, Any] = {}
    reference: Stored | None = None
    for name, batches in deliveries(specs, list(shuffled), cuts).items():
        store = f"p{run}-{len(states)}"
        processor = FunnelProcessor(engine, registry(store))
        for batch in batches:
            await processor([build(s, store) for s in batch])
        state = await stored(engine, store)
        reference = reference or state  # the first delivery is in time order, one by one
        failures += [f"[{name}] privacy: {w}" for w in privacy_left(specs, state)]
        failures += [
            f"[{name}] privacy, unlike time order: {w}" for w in left_unlike(specs, state, reference)
        ]
        failures += [f"[{name}] lost: {w}" for w in lost(specs, state)]
        states[name] = (comparable(state, store), [[s.n for s in b] for b in batches])
    first, _ = states["time order, one by one"]
    for name, (state, batches) in states.items():
        if state != first and set(state[0]) == set(first[0]):
            message = f"[{name}] differs from time order (batches {batches}): {_difference(first, state)}"
            note(message)
            if STRICT:
                failures.append(message)
    assert failures == [], "\n".join(failures)


def _difference(a: Any, b: Any) -> str:
    (pa, ia), (pb, ib) = a, b
    out = []
    for c in sorted(set(pa) | set(pb)):
        fa, fb = pa.get(c, {}), pb.get(c, {})
        for k in sorted(set(fa) | set(fb)):
            if fa.get(k) != fb.get(k):
                out.append(f"{c}.{k}: {fa.get(k)!r} vs {fb.get(k)!r}")
    if ia != ib:
        out.append(f"identities {ia} vs {ib}")
    return "; ".join(out)
