"""A batch's (store, id) keys are put in the order its statements lock their rows in by
`repository.in_lock_order`, which compares the ids alone when the keys are of one store: the order must be
`sorted`'s exactly, whatever the stores, or two writers could lock the same rows in different orders."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.segmenter.adapters.repository import in_lock_order

# Few store ids and short ids, so that equal stores, equal prefixes and mixed stores all come up; any text,
# so that the comparison is of code points, not of one alphabet.
_STORES = st.sampled_from(["demo", "demo2", "a", ""])
_IDS = st.text(max_size=6)


@given(st.lists(st.tuples(_STORES, _IDS), max_size=60))
def test_the_order_is_sorted_order(keys: list[tuple[str, str]]) -> None:
    assert in_lock_order(keys) == sorted(keys)


@given(st.lists(_IDS, max_size=60))
def test_one_stores_keys_come_back_sorted_by_id(ids: list[str]) -> None:
    # Each key built on its own store string, as a batch's decoded events and rows have them.
    keys = [("".join(["de", "mo"]), i) for i in ids]
    ordered = in_lock_order(iter(keys))
    assert ordered == sorted(keys)
    assert [i for _, i in ordered] == sorted(ids)
