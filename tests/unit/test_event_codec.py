"""The canonical events' encoding was made cheaper (shared/events.py), and the segmenter reads its topic
with msgspec Structs (shared/storefront_event_structs.py): what travels on `storefront-events` and what the
segmenter makes of it must not change. The frozen references below are the contract's code as it was:
encode_event was `model_dump_json(exclude_none=True).encode()`, and decoding was one TypeAdapter of the
models with every field validator, the per-field NUL check included. The segmenter's decoder must give the
very error the reference gives, or the very values: each field's value, each amount's digits, each
instant's offset (`plain`)."""

from __future__ import annotations

import copy
import json
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin, get_type_hints

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from bench.workload import Storefront, canonical
from services.segmenter.adapters import event_decoding
from shared import events
from shared import storefront_event_structs as segmenter
from shared.events import LineItem, StorefrontEvent, decode_event, encode_event, reject_nul
from shared.examples import example_files

_REFERENCE: TypeAdapter[StorefrontEvent] = TypeAdapter(StorefrontEvent)


def reference_encode(event: StorefrontEvent) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()


def reference_decode(raw: bytes | str) -> StorefrontEvent:
    return _REFERENCE.validate_json(raw)


def _mix() -> list[StorefrontEvent]:
    store = Storefront(seed=3, run="codec")
    return canonical([*store.segment_calls(1500), *store.shopify_webhooks(500)])


MIX = _mix()
EXAMPLES = [reference_decode(Path(p).read_bytes()) for p in example_files("storefront-events")]
SEEDS: list[dict[str, Any]] = [json.loads(reference_encode(e)) for e in [*EXAMPLES, *MIX[::7]]]


def test_encoding_gives_the_very_bytes_it_gave() -> None:
    assert len({e.type for e in [*EXAMPLES, *MIX]}) >= 8
    for event in [*EXAMPLES, *MIX]:
        assert encode_event(event) == reference_encode(event)


def test_every_event_is_written_with_its_type_first() -> None:
    # The segmenter's decoder picks the class by the type: after the envelope, it read the message twice.
    for event in [*EXAMPLES, *MIX]:
        assert encode_event(event).startswith(b'{"type":"' + event.type.encode() + b'","schema_version":1,')


def _comparable(error: Any) -> dict[str, Any]:
    # The context holds exception objects, which compare by identity: their text is what anyone sees.
    return {**error, "ctx": {k: repr(v) for k, v in error.get("ctx", {}).items()}}


def plain(value: Any) -> Any:
    """A decoded event's values as comparable Python values, the same for a model and for a Struct: fields
    by name (a Struct's amount under its contract name, its tag as `type`), amounts and instants as their
    text (so 48.00 and 48, or the same instant at two offsets, differ), enums as their value."""
    if isinstance(value, BaseModel):
        names = list(type(value).model_fields)
    elif isinstance(value, msgspec.Struct):
        names = [name.removesuffix("_text") for name in value.__struct_fields__]
        names += ["type"] if isinstance(getattr(type(value), "type", None), str) else []
    else:
        return _plain_value(value)
    return {"": type(value).__name__} | {name: plain(getattr(value, name)) for name in names}


def _plain_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return ("Decimal", str(value))
    if isinstance(value, (datetime, date)):
        return (type(value).__name__, value.isoformat())
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    assert value is None or type(value) in (str, int, float, bool), type(value)
    return (type(value).__name__, value)


def outcome(decode: Any, raw: bytes | str) -> tuple[Any, ...]:
    try:
        event = decode(raw)
    except ValidationError as exc:
        return ("refused", exc.title, str(exc), [_comparable(e) for e in exc.errors()])
    return ("accepted", plain(event))


def assert_same(raw: bytes | str) -> None:
    """The segmenter's decoder against the reference; and its cheap way alone, where it answers."""
    # The segmenter reads message values: bytes (a text is sent as its UTF-8, as a producer would).
    data = raw.encode() if isinstance(raw, str) else raw
    expected = outcome(reference_decode, data)
    assert outcome(event_decoding.decode_storefront_event, data) == expected
    cheap = event_decoding.cheap_decode(data)
    if cheap is not None:
        assert ("accepted", plain(cheap)) == expected
    if expected[0] == "accepted":
        # The claim the segmenter sends from the raw message (before decoding it) is the decoded event's.
        event = event_decoding.decode_storefront_event(data)
        assert segmenter.event_key(data) == (event.event_id, event.store_id)


def test_every_event_of_the_mix_and_the_examples_decodes_the_same() -> None:
    for event in [*EXAMPLES, *MIX]:
        raw = reference_encode(event)
        assert_same(raw)
        assert decode_event(raw) == event
        assert_same(raw.decode())
        # What ingest writes is read the cheap way, or the segmenter would pay for both decoders.
        assert event_decoding.cheap_decode(raw) is not None


def _paths(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += _paths(value, (*path, i))
    return found


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


TEXT = st.text(
    alphabet=st.one_of(st.characters(codec="utf-8"), st.sampled_from(["\x00", "\\", "é", " ", "@", "-"])),
    max_size=12,
)
LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
    st.sampled_from([
        "", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "2026-02-30T00:00:00+01:00", "1999-12-31",
        "12.345", "0.5", "-1", "1e3", "USD", "usd", "en-US", "xx-", " A@B.CO ", "a@b", "anonymous_id",
        "snapshot", "added", "shop", "customer", "order_placed", "custom", "cart_abandoned", "shopify",
        "\x00", "a\x00b", "\\u0000",
    ]),
)  # fmt: skip
FIELD_NAMES = st.sampled_from([
    "type", "event_id", "store_id", "customer", "payload", "email", "anonymous_id", "store_customer_id",
    "placed_order_id", "line_items", "product_id", "price", "quantity", "total", "currency", "properties",
    "answers", "agree", "score", "scope", "schema_version", "locale", "birthday", "updated_at", "refunds",
    "refund_id", "amount", "x\x00",
])  # fmt: skip
JSON = st.recursive(
    LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(FIELD_NAMES | TEXT, inner, max_size=3),
    max_leaves=6,
)


def _mutate(doc: Any, data: st.DataObject) -> Any:
    """One change somewhere in the document: a value replaced, a key removed or added, NUL put into a text."""
    path = data.draw(st.sampled_from(_paths(doc)))
    action = data.draw(st.sampled_from(["replace", "delete", "add", "nul"]))
    if not path:
        return data.draw(JSON) if action == "replace" else doc
    parent, last = _at(doc, path[:-1]), path[-1]
    if action == "replace":
        parent[last] = data.draw(JSON)
    elif action == "delete":
        if isinstance(parent, dict):
            del parent[last]
        else:
            parent.pop(last)
    elif action == "add":
        target = parent[last]
        if isinstance(target, dict):
            target[data.draw(FIELD_NAMES | TEXT)] = data.draw(JSON)
        elif isinstance(target, list):
            target.append(data.draw(JSON))
    elif isinstance(parent[last], str):
        at = data.draw(st.integers(min_value=0, max_value=len(parent[last])))
        parent[last] = parent[last][:at] + "\x00" + parent[last][at:]
    return doc


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_changed_event_gets_the_same_verdict_and_the_same_event(data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(SEEDS)))
    for _ in range(data.draw(st.integers(min_value=0, max_value=3))):
        doc = _mutate(doc, data)
    text = json.dumps(doc, ensure_ascii=data.draw(st.booleans()))
    assert_same(text.encode())
    assert_same(text)


@settings(max_examples=300, deadline=None)
@given(
    seed=st.sampled_from(SEEDS),
    cut=st.integers(min_value=0, max_value=2000),
    inserted=st.sampled_from([b"\\u0000", b"\x00", b"\\\\u0000", b'"', b"\\", b"}", b"\xff", b""]),
)
def test_broken_or_raw_nul_bytes_get_the_same_verdict(
    seed: dict[str, Any], cut: int, inserted: bytes
) -> None:
    raw = json.dumps(seed).encode()
    cut %= len(raw) + 1
    assert_same(raw[:cut] + inserted + raw[cut:])
    assert_same(raw[:cut])


@given(payload=JSON)
def test_anything_at_all_gets_the_same_verdict(payload: Any) -> None:
    assert_same(json.dumps(payload).encode())


@pytest.mark.parametrize(
    ("where", "field"),
    [
        (("event_id",), "event_id"),
        (("customer", "first_name"), "first_name"),
        (("payload", "line_items", 0, "title"), "title"),
    ],
)
def test_nul_anywhere_is_still_refused_naming_the_field(where: tuple[Any, ...], field: str) -> None:
    doc = json.loads(Path(example_files("storefront-events")[0]).read_bytes())
    order = next(s for s in SEEDS if s["type"] == "order_placed" and s["payload"]["line_items"])
    doc = copy.deepcopy(order)
    parent = _at(doc, where[:-1])
    parent[where[-1]] = "bad\x00value"
    raw = json.dumps(doc).encode()
    assert b"\\u0000" in raw
    with pytest.raises(ValidationError) as refused:
        decode_event(raw)
    assert refused.value.errors()[0]["loc"][-1] == field
    assert "NUL" in refused.value.errors()[0]["msg"]
    assert_same(raw)


@pytest.mark.parametrize(
    "where", [("event_id",), ("customer", "first_name"), ("payload", "line_items", 0, "title")]
)
@pytest.mark.parametrize("raw_nul", ["\x00", "a\x00", "\x00\\u0000"])
def test_a_raw_nul_byte_in_a_text_gets_the_same_verdict(where: tuple[Any, ...], raw_nul: str) -> None:
    # The cheap way searches only for the escape `\\u`: JSON refuses a raw NUL anywhere, so msgspec refuses
    # it and the contract's decoder gives its verdict.
    order = next(s for s in SEEDS if s["type"] == "order_placed" and s["payload"]["line_items"])
    doc = copy.deepcopy(order)
    _at(doc, where[:-1])[where[-1]] = "raw"
    raw = json.dumps(doc).encode().replace(b'"raw"', b'"' + raw_nul.encode() + b'"')
    assert b"\x00" in raw
    for text in (raw, raw.decode()):
        assert_same(text)
        with pytest.raises(ValidationError):
            decode_event(text)


def test_a_custom_property_key_with_nul_is_refused() -> None:
    custom = next(s for s in SEEDS if s["type"] == "custom")
    doc = copy.deepcopy(custom)
    doc["payload"]["properties"] = {"ok": 1, "k\x00": "v"}
    assert_same(json.dumps(doc).encode())
    with pytest.raises(ValidationError):
        decode_event(json.dumps(doc).encode())


def test_the_models_refuse_nul_when_built_directly() -> None:
    with pytest.raises(ValidationError, match="NUL"):
        LineItem(product_id="p\x00")


JSONISH = st.recursive(
    st.one_of(st.none(), st.integers(), TEXT), lambda inner: st.lists(inner) | st.dictionaries(TEXT, inner)
)


@given(value=JSONISH | st.tuples(TEXT, TEXT))
def test_the_inlined_nul_check_agrees_with_reject_nul(value: Any) -> None:
    def verdict(check: Any) -> str:
        try:
            check(value)
        except ValueError as exc:
            return str(exc)
        return "ok"

    assert verdict(lambda v: events._Model._no_nul(v)) == verdict(reject_nul)


# The segmenter's cheap way reads emails, language tags and amounts only as ingest writes them, checked with
# patterns (storefront_event_structs._CANONICAL_*, MoneyText); any other spelling must still get the full
# check's verdict and value. Values near the patterns' edges: case, spaces, `_`, non-ASCII letters that fold
# to ASCII (the Kelvin sign, dotless i), a trailing newline (which Python's `$` would let through), long runs.
NEAR_CHARS = st.sampled_from(
    [*"aZz09.-_@+!#'`~{|}%/=?^&* \t\n", "\u212a", "\u0131", "é", "ß", "\u00a0", "x", "X", "-x-", ".."]
)
NEAR = st.one_of(
    st.lists(NEAR_CHARS, max_size=12).map("".join),
    st.builds(
        lambda local, domain, around: around[0] + local + "@" + domain + around[1],
        st.lists(NEAR_CHARS, min_size=1, max_size=8).map("".join),
        st.lists(st.sampled_from(["a", "Z", "0", "-", ".", "é", "co", "\u212a"]), min_size=1, max_size=8).map(
            "".join
        ),
        st.sampled_from([("", ""), (" ", ""), ("", "\n"), ("", " ")]),
    ),
    st.builds(
        lambda parts, sep, end: sep.join(parts) + end,
        st.lists(
            st.sampled_from([
                "en", "EN", "pt", "BR", "zh", "Hant", "TW", "x", "X", "a1b2c", "1234", "419", "i", "\u212a",
                "abcdefghi", "q", "y", "qq",
            ]),
            min_size=1, max_size=5,
        ),
        st.sampled_from(["-", "_", "--"]),
        st.sampled_from(["", "\n", " "]),
    ),
    st.builds(
        lambda sign, whole, dot, fraction, end: f"{sign}{whole}{dot}{fraction}{end}",
        st.sampled_from(["", "-", "+", " "]),
        st.text(alphabet="0123456789", min_size=0, max_size=15),
        st.sampled_from(["", ".", ","]),
        st.text(alphabet="0123456789", min_size=0, max_size=4),
        st.sampled_from(["", "\n", "e2", "E-1", " "]),
    ),
)  # fmt: skip
FAST_CHECKED: list[tuple[Any, ...]] = [
    ("customer", "email"),
    ("customer", "locale"),
    ("payload", "total"),
    ("payload", "line_items", 0, "price"),
    ("payload", "product", "price"),
]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), value=NEAR)
def test_an_email_locale_or_amount_spelt_any_way_gets_the_same_verdict_and_value(
    data: st.DataObject, value: str
) -> None:
    where = data.draw(st.sampled_from(FAST_CHECKED))
    doc = copy.deepcopy(data.draw(st.sampled_from([s for s in SEEDS if _has(s, where[:-1])])))
    _at(doc, where[:-1])[where[-1]] = value
    assert_same(json.dumps(doc, ensure_ascii=data.draw(st.booleans())).encode())


def _has(doc: Any, path: tuple[Any, ...]) -> bool:
    try:
        _at(doc, path)
    except (KeyError, IndexError, TypeError):
        return False
    return True


@pytest.mark.parametrize("where", [(), ("customer",), ("payload",), ("payload", "line_items", 0)])
def test_a_key_the_contract_does_not_know_is_left_to_its_decoder_and_ignored(where: tuple[Any, ...]) -> None:
    # The contract's models ignore a key they do not know; the cheap way leaves such a message to them, so
    # that what msgspec accepts nests no deeper than its classes do (test_deep_nesting_gets_the_same_verdict).
    order = next(s for s in SEEDS if s["type"] == "order_placed" and s["payload"]["line_items"])
    doc = copy.deepcopy(order)
    _at(doc, where)["extension"] = {"any": ["value"]}
    raw = json.dumps(doc).encode()
    assert event_decoding.cheap_decode(raw) is None
    assert_same(raw)
    as_sent = event_decoding.decode_storefront_event(json.dumps(order).encode())
    assert plain(event_decoding.decode_storefront_event(raw)) == plain(as_sent)


def test_what_ingest_writes_takes_the_segmenters_cheap_way() -> None:
    # Not behaviour but cost: an event the cheap way refuses is decoded twice.
    for event in [*EXAMPLES, *MIX]:
        assert event_decoding.cheap_decode(encode_event(event)) is not None


EDGES = [
    "a@b.co", "A@b.co", "a@B.co", " a@b.co", "a@b.co\n", "a@b.co ", "é@b.co", "a@é.co", "a@b", "a@b.c-",
    "a@-b.co", "a_b@b_c.co", "a..b@b.co", "\u212a@b.co", "a@\u212a.co", "a\u0131@b.co", f"{'a' * 64}@b.co",
    f"{'a' * 65}@b.co", f"a@{'b' * 63}.co", f"a@{'b' * 64}.co", "", " ",
    "en", "EN", "en-US", "en_US", "en-us\n", " en", "\u212aa", "en-\u212a\u212a", "x-abc", "X-ABC",
    "i-klingon",
    "en-a-bbb-x-a-ccc", f"en-{'-'.join(['abcde'] * 6)}", f"en-{'-'.join(['abcde'] * 5)}", "a" * 9, "e",
    "0", "0.0", "00", "01", "1.", ".5", "1.234", "12.30", "-0", "+1", "1e2", "1E+1", "NaN", "Infinity", " 1",
    "1\n", "123456789012", "1234567890123", "123456789012.34", "123456789012.345", "99999999999999",
    "1234567890.12", "0.00", "٣",
]  # fmt: skip


@pytest.mark.parametrize("where", FAST_CHECKED)
def test_edge_spellings_of_an_email_locale_or_amount_get_the_same_verdict_and_value(
    where: tuple[Any, ...],
) -> None:
    seed = next(s for s in SEEDS if _has(s, where[:-1]))
    for value in EDGES:
        doc = copy.deepcopy(seed)
        _at(doc, where[:-1])[where[-1]] = value
        assert_same(json.dumps(doc).encode())
        assert_same(json.dumps(doc, ensure_ascii=False).encode())


# The patterns are checked after msgspec has read a message (storefront_event_structs._Spelling), each field
# that must match one naming it in its annotation. Found by those annotations: a field that gains one is
# tested here without a change to this test, and one the cheap way forgets to check fails it.
def _spelling_of(hint: Any) -> Any:
    if get_origin(hint) is Annotated:
        found = [m for m in hint.__metadata__ if isinstance(m, segmenter._Spelling)]
        if found:
            return found[0]
    for arg in get_args(hint):
        spelling = _spelling_of(arg)
        if spelling is not None:
            return spelling
    return None


def _spelt_fields() -> set[tuple[str, str]]:
    return {
        (cls.__name__, name)
        for cls in segmenter._STRUCT_OF.values()
        for name, hint in get_type_hints(cls, include_extras=True).items()
        if _spelling_of(hint) is not None
    }


def _spelt_places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[str, str, tuple[Any, ...], Any]]:
    """(class, field, JSON path, spelling) of each spelt value a decoded event holds."""
    found = []
    hints = get_type_hints(type(value), include_extras=True)
    for name, key in zip(value.__struct_fields__, value.__struct_encode_fields__, strict=True):
        held = getattr(value, name)
        spelling = _spelling_of(hints[name])
        if spelling is not None and held is not None:
            found.append((type(value).__name__, name, (*path, key), spelling))
        elif isinstance(held, msgspec.Struct):
            found += _spelt_places(held, (*path, key))
        elif isinstance(held, tuple):
            for i, item in enumerate(held):
                if isinstance(item, msgspec.Struct):
                    found += _spelt_places(item, (*path, key, i))
    return found


# Each spelt value of the seeds the cheap way takes (all but a few examples spelt otherwise on purpose).
SPELT = [
    (cls, field, path, spelling, seed)
    for seed, event in [(s, event_decoding.cheap_decode(json.dumps(s).encode())) for s in SEEDS]
    if event is not None
    for cls, field, path, spelling in _spelt_places(event)
]
# A value of each spelling, and values near them (EDGES has emails, language tags and amounts).
SPELT_VALUES = [
    *EDGES, "demo", "Demo", "demo\n", "de mo", "-demo", "_demo", "a-b_c", "d\u212amo", "USD", "usd", "US",
    "USDD", "U\u212aD", "EUR\n", "199.00", "pt-BR", "not one spelling",
]  # fmt: skip


def test_every_field_that_must_match_a_pattern_is_checked_where_an_event_holds_it() -> None:
    assert {(cls, field) for cls, field, *_ in SPELT} == _spelt_fields()
    for _, _, path, _, seed in SPELT:
        doc = copy.deepcopy(seed)
        _at(doc, path[:-1])[path[-1]] = "not one spelling"
        raw = json.dumps(doc).encode()
        assert event_decoding.cheap_decode(raw) is None, path
        assert_same(raw)


def test_each_field_spelt_any_way_gets_the_same_verdict_and_value() -> None:
    # Each pattern sees first every value it admits: a value seen by one must not be taken for another's.
    for spelling in {id(s): s for *_, s, _ in SPELT}.values():
        for value in SPELT_VALUES:
            if value not in spelling.seen:
                spelling.admits(value)
    first: dict[tuple[str, str], tuple[tuple[Any, ...], Any]] = {}
    for cls, field, path, _, seed in SPELT:
        first.setdefault((cls, field), (path, seed))
    for path, seed in first.values():
        for value in SPELT_VALUES:
            doc = copy.deepcopy(seed)
            _at(doc, path[:-1])[path[-1]] = value
            assert_same(json.dumps(doc).encode())
            assert_same(json.dumps(doc, ensure_ascii=False).encode())


def test_the_values_seen_to_match_a_pattern_stay_bounded() -> None:
    spelling = segmenter._Spelling(r"^[0-9]+\Z")
    for n in range(2 * segmenter._SEEN_SIZE + 10):
        assert spelling.admits(str(n))
        assert len(spelling.seen) <= segmenter._SEEN_SIZE
    assert str(n) in spelling.seen
    assert not spelling.admits("12a")
    assert "12a" not in spelling.seen


@pytest.mark.parametrize(
    "customer",
    [
        {},
        {"store_customer_id": ""},
        {"email": "  ", "first_name": "Ann"},
        {"email": None, "anonymous_id": None},
        {"placed_order_id": "1001"},
        {"anonymous_id": "a"},
        {"email": " A@B.CO "},
        {"email": "a@b.co"},
        {"store_customer_id": "", "email": ""},
    ],
)
def test_a_customer_without_an_identifier_is_still_refused_naming_it(customer: dict[str, Any]) -> None:
    for seed in SEEDS[:: len(SEEDS) // 10]:
        doc = {**seed, "customer": customer}
        assert_same(json.dumps(doc).encode())


# Instants spelt every way either decoder might read: msgspec rounds a fraction of a second beyond six digits
# where pydantic truncates it (the cheap way leaves those to the contract), and both take `t`, a space, `z`
# and offsets with or without a colon.
INSTANT = st.builds(
    lambda day, sep, clock, fraction, zone: f"{day}{sep}{clock}{fraction}{zone}",
    st.sampled_from(["2026-01-05", "0001-01-01", "9999-12-31", "2024-02-29", "2023-02-29", "2026-1-05"]),
    st.sampled_from(["T", "t", " ", "_"]),
    st.sampled_from(["10:00:00", "23:59:59", "10:00", "24:00:00", "10:00:60", "9:00:00"]),
    st.one_of(st.just(""), st.text(alphabet="0123456789", min_size=0, max_size=12).map(lambda d: "." + d)),
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+0000", "+02:00", "-23:59", "+24:00", "", " Z", "+02"]),
)
INSTANT_AT: list[tuple[Any, ...]] = [
    ("occurred_at",),
    ("received_at",),
    ("customer", "updated_at"),
    ("customer", "consent_at"),
    ("payload", "created_at"),
]


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), value=INSTANT)
def test_an_instant_spelt_any_way_gets_the_same_verdict_and_value(data: st.DataObject, value: str) -> None:
    where = data.draw(st.sampled_from(INSTANT_AT))
    doc = copy.deepcopy(data.draw(st.sampled_from([s for s in SEEDS if _has(s, where[:-1])])))
    _at(doc, where[:-1])[where[-1]] = value
    assert_same(json.dumps(doc).encode())


# Amounts as JSON numbers: pydantic reads them through a float (48.00 becomes 48), msgspec keeps the digits.
AMOUNT = st.one_of(
    st.integers(min_value=-5, max_value=10**15),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1, max_value=1e15),
    st.decimals(min_value=0, max_value=10**13, places=3).map(lambda d: float(d)),
    st.sampled_from(["1e2", "48.00", "0.10", "-0", "1_0", " 1", "NaN"]),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), value=AMOUNT, spacing=st.sampled_from([(",", ":"), (", ", ": "), (" , ", " : ")]))
def test_an_amount_as_a_number_or_any_string_gets_the_same_verdict_and_value(
    data: st.DataObject, value: Any, spacing: tuple[str, str]
) -> None:
    where = data.draw(st.sampled_from(FAST_CHECKED[2:]))
    doc = copy.deepcopy(data.draw(st.sampled_from([s for s in SEEDS if _has(s, where[:-1])])))
    _at(doc, where[:-1])[where[-1]] = value
    assert_same(json.dumps(doc, separators=spacing).encode())


def test_an_amount_written_as_a_number_is_read_as_the_contract_reads_it() -> None:
    order = next(s for s in SEEDS if s["type"] == "order_placed")
    raw = json.dumps({**order, "payload": {**order["payload"], "total": 48.00}}).encode()
    assert b'"total": 48.0' in raw
    assert event_decoding.cheap_decode(raw) is None
    event = event_decoding.decode_storefront_event(raw)
    assert str(event.payload.total) == str(decode_event(raw).payload.total) == "48"  # type: ignore[union-attr]
    assert_same(raw)


@pytest.mark.parametrize("depth", [1, 60, 127, 150, 196, 197, 198, 200, 201, 250, 1_000, 5_000])
@pytest.mark.parametrize("where", ["properties", "unknown field", "unknown field first"])
def test_deep_nesting_gets_the_same_verdict(depth: int, where: str) -> None:
    # pydantic's parser refuses nesting deeper than 200 levels; msgspec reads deeper (a custom event's
    # properties hold any JSON, and msgspec skips a value before the tag it looks for, whatever it holds),
    # and raises RecursionError near Python's own limit, which no consumer expects.
    seed = next(s for s in SEEDS if s["type"] == ("custom" if where == "properties" else "order_placed"))
    doc = copy.deepcopy(seed)
    if where == "properties":
        doc["payload"]["properties"] = {"deep": "NESTED"}
    elif where == "unknown field":
        doc["extension"] = "NESTED"
    else:
        doc = {"extension": "NESTED", **doc}
    # Spliced in as text: Python's own json module recurses too.
    raw = json.dumps(doc).encode().replace(b'"NESTED"', b"[" * depth + b"]" * depth)
    assert_same(raw)


@pytest.mark.parametrize(
    "extra",
    [
        ("before", b'"type": "custom", '),
        ("after", b', "type": "custom"'),
        ("after", b', "customer": {"anonymous_id": "someone-else"}'),
        ("after", b', "payload": {"name": "x"}'),
        ("after", b', "schema_version": 2'),
    ],
)
def test_a_key_said_twice_gets_the_same_verdict(extra: tuple[str, bytes]) -> None:
    # JSON leaves a repeated key to the reader: pydantic takes the last; the tag and the fields must not be
    # read otherwise by the cheap way.
    where, text = extra
    raw = reference_encode(next(e for e in MIX if e.type == "order_placed"))
    assert_same(raw.replace(b"{", b"{" + text, 1) if where == "before" else raw[:-1] + text + b"}")
