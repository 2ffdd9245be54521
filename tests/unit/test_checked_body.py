"""What a route knows of a raw body (`Checked.body`): whether any string of it can hold NUL (the escape
`\\u0000`) or a lone surrogate (`\\ud...`/`\\uD...`). Finding the escapes in one pass must find exactly what
searching the whole body for each escape finds, whatever the body and however many backslashes it has."""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st

from services.ingest.sources.base import NOTHING_CHECKED, Checked

# Many backslashes (bodies past 2,000 of them were once searched another way).
MANY = 2_000


def searched(body: bytes) -> Checked:
    """The body searched for each escape: what Checked.body answered before."""
    if b"\x00" in body:
        return NOTHING_CHECKED
    return Checked(
        nul_free=b"\\u0000" not in body,
        surrogate_free=b"\\ud" not in body and b"\\uD" not in body,
    )


ESCAPES = [b"\\", b"\\\\", b"\\u0000", b"\\u00", b"\\ud83d", b"\\uDE00", b"\\u00e9", b"\\n"]
PIECES = st.sampled_from([*ESCAPES, b"u0000", b"ud", b"a", b'"'])
BODIES = st.lists(PIECES | st.binary(max_size=4), max_size=40).map(b"".join)


@given(body=BODIES)
@example(body=b"\\" * (MANY + 5) + b"\\u0000")
@example(body=b"\\" * (MANY - 1) + b"\\ud800")
@example(body=b'{"a": "\\\\u0000"}')
@example(body=b"\\u000")
def test_the_escapes_found_are_what_the_searches_find(body: bytes) -> None:
    assert Checked.body(body) == searched(body)


@given(value=st.recursive(st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c), max_leaves=8))
def test_json_bodies_are_checked_as_searched(value: object) -> None:
    for ensure_ascii in (True, False):
        try:
            body = json.dumps(value, ensure_ascii=ensure_ascii).encode()
        except UnicodeEncodeError:  # a lone surrogate written raw: not UTF-8, never a body
            continue
        assert Checked.body(body) == searched(body)
