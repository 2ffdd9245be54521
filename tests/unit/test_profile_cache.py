"""The segmenter's cache of the profiles it wrote: trusted only while the row's xmin is its writer's."""

from __future__ import annotations

from services.segmenter.adapters.profile_cache import ProfileCache, xmin_of
from services.segmenter.domain.profile import Profile

KEY = ("s", "c1")
P = Profile(store_id="s", customer_id="c1", email="a@example.com")


def test_a_row_still_holding_our_copy_is_served_from_memory() -> None:
    cache = ProfileCache(10)
    cache.remember(KEY, 1_000, P)
    assert cache.versions([KEY, ("s", "other")]) == ["1000", None]
    assert cache.hit(KEY, "1000", 1_001) is P


def test_a_row_written_since_by_anyone_else_is_read_again() -> None:
    cache = ProfileCache(10)
    cache.remember(KEY, 1_000, P)
    assert cache.hit(KEY, "1002", 1_003) is None
    assert cache.hit(("s", "never"), "1000", 1_003) is None


def test_xmin_is_the_low_32_bits_of_the_writer() -> None:
    assert xmin_of(2**32 + 7) == "7"
    cache = ProfileCache(10)
    cache.remember(KEY, 2**32 + 7, P)
    assert cache.versions([KEY]) == ["7"]
    assert cache.hit(KEY, "7", 2**32 + 8) is P


def test_an_entry_is_not_trusted_once_the_counter_could_have_wrapped_onto_its_xmin() -> None:
    cache = ProfileCache(10)
    cache.remember(KEY, 1_000, P)
    assert cache.hit(KEY, "1000", 1_000 + 2**31 - 1) is P
    assert cache.hit(KEY, "1000", 1_000 + 2**31) is None


def test_a_counter_that_goes_back_forgets_everything() -> None:
    cache = ProfileCache(10)
    cache.remember(KEY, 1_000, P)
    assert cache.hit(KEY, "1000", 5_000) is P
    assert cache.hit(KEY, "1000", 1_500) is None  # another database (a restore) behind the same address
    assert len(cache) == 0


def test_the_least_recently_remembered_go_first() -> None:
    cache = ProfileCache(2)
    for n in range(3):
        cache.remember(("s", f"c{n}"), 10 + n, P)
    assert cache.versions([("s", "c0"), ("s", "c1"), ("s", "c2")]) == [None, "11", "12"]
