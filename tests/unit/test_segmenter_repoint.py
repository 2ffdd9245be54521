"""Merges applied in one statement per table must move rows as applying them one by one would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.segmenter.adapters.repository import final_owners


def test_a_chain_of_merges_moves_earlier_rows_on_with_their_new_owner() -> None:
    # a into b, then b into c: what a had went to b, and goes on to c with b's own rows.
    assert final_owners([("s", "a", "b"), ("s", "b", "c")]) == {("s", "a"): "c", ("s", "b"): "c"}


def test_a_merge_into_a_customer_absorbed_earlier_leaves_the_earlier_move_alone() -> None:
    # b into c first; then a into b: a's rows go to b (as the one-by-one updates did), b's stay with c.
    assert final_owners([("s", "b", "c"), ("s", "a", "b")]) == {("s", "b"): "c", ("s", "a"): "b"}


def test_stores_do_not_mix() -> None:
    assert final_owners([("s1", "a", "b"), ("s2", "b", "c")]) == {("s1", "a"): "b", ("s2", "b"): "c"}


def _one_by_one(merges: list[tuple[str, str, str]]) -> dict[tuple[str, str], str]:
    """The merges applied one after another, as the updates of each would move the rows: every key whose
    rows a customer holds moves on when that customer is absorbed."""
    owner: dict[tuple[str, str], str] = {}
    for store_id, absorbed, survivor in merges:
        for key, current in owner.items():
            if key[0] == store_id and current == absorbed:
                owner[key] = survivor
        owner[(store_id, absorbed)] = survivor
    return owner


_IDS = st.sampled_from("abcdef")


@given(st.lists(st.tuples(st.sampled_from(["s1", "s2"]), _IDS, _IDS), max_size=30))
def test_final_owners_are_those_of_the_merges_applied_one_by_one(merges: list[tuple[str, str, str]]) -> None:
    # Chains, cycles, a customer absorbed twice or into itself: the same owners, in the same order.
    assert list(final_owners(merges).items()) == list(_one_by_one(merges).items())
