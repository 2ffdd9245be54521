"""Merges applied in one statement per table must move rows as applying them one by one would."""

from __future__ import annotations

from services.segmenter.adapters.repository import final_owners


def test_a_chain_of_merges_moves_earlier_rows_on_with_their_new_owner() -> None:
    # a into b, then b into c: what a had went to b, and goes on to c with b's own rows.
    assert final_owners([("s", "a", "b"), ("s", "b", "c")]) == {("s", "a"): "c", ("s", "b"): "c"}


def test_a_merge_into_a_customer_absorbed_earlier_leaves_the_earlier_move_alone() -> None:
    # b into c first; then a into b: a's rows go to b (as the one-by-one updates did), b's stay with c.
    assert final_owners([("s", "b", "c"), ("s", "a", "b")]) == {("s", "b"): "c", ("s", "a"): "b"}


def test_stores_do_not_mix() -> None:
    assert final_owners([("s1", "a", "b"), ("s2", "b", "c")]) == {("s1", "a"): "b", ("s2", "b"): "c"}
