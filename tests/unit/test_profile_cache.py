"""The segmenter's cache of the profiles it wrote: trusted only while the row's xmin is its writer's."""

from __future__ import annotations

from services.segmenter.adapters.profile_cache import ProfileCache, xmin_of
from services.segmenter.domain.profile import Profile

KEY = ("s", "c1")
P = Profile(store_id="s", customer_id="c1", email="a@example.com")
SERVER = "2026-11-30 07:00:00+00"


def cache_with(xid: int) -> ProfileCache:
    cache = ProfileCache(10)
    cache.remember([P], xid, SERVER)
    return cache


def test_a_row_still_holding_our_copy_is_served_from_memory() -> None:
    cache = cache_with(1_000)
    assert cache.versions([KEY, ("s", "other")]) == ["1000", None]
    assert cache.hit(KEY, "1000", 1_001, SERVER) is P


def test_a_row_written_since_by_anyone_else_is_read_again() -> None:
    cache = cache_with(1_000)
    assert cache.hit(KEY, "1002", 1_003, SERVER) is None
    assert cache.hit(("s", "never"), "1000", 1_003, SERVER) is None


def test_xmin_is_the_low_32_bits_of_the_writer() -> None:
    assert xmin_of(2**32 + 7) == "7"
    cache = cache_with(2**32 + 7)
    assert cache.versions([KEY]) == ["7"]
    assert cache.hit(KEY, "7", 2**32 + 8, SERVER) is P


def test_a_statement_that_began_before_our_writer_had_its_id_does_not_trust_it() -> None:
    # A transaction older than ours (the timer worker's, say) sees our row only after our commit.
    assert cache_with(1_000).hit(KEY, "1000", 1_000, SERVER) is None


def test_an_entry_is_not_trusted_once_the_counter_could_have_wrapped_onto_its_xmin() -> None:
    cache = cache_with(1_000)
    assert cache.hit(KEY, "1000", 1_000 + 2**31 - 1, SERVER) is P
    assert cache.hit(KEY, "1000", 1_000 + 2**31, SERVER) is None


def test_another_server_forgets_everything() -> None:
    cache = cache_with(1_000)
    assert cache.hit(KEY, "1000", 5_000, "2026-12-01 00:00:00+00") is None  # a restored copy, say
    assert len(cache) == 0
    assert cache.hit(KEY, "1000", 5_000, SERVER) is None


def test_the_least_recently_remembered_go_first() -> None:
    cache = ProfileCache(2)
    for n in range(3):
        cache.remember([Profile(store_id="s", customer_id=f"c{n}")], 10 + n, SERVER)
    assert cache.versions([("s", "c0"), ("s", "c1"), ("s", "c2")]) == [None, "11", "12"]


def test_a_batch_remembered_at_once_keeps_its_most_recent_and_refreshes_those_held() -> None:
    cache = ProfileCache(3)
    cache.remember([Profile(store_id="s", customer_id=c) for c in ("c0", "c1")], 10, SERVER)
    # c0 again, then three new ones: c0 is now more recent than c1, and only the last three are kept.
    again = [Profile(store_id="s", customer_id=c) for c in ("c0", "c2", "c3")]
    cache.remember(again, 11, SERVER)
    assert cache.versions([("s", c) for c in ("c0", "c1", "c2", "c3")]) == ["11", None, "11", "11"]
    cache.remember([Profile(store_id="s", customer_id="c4")], 12, SERVER)
    assert cache.versions([("s", c) for c in ("c0", "c2", "c3", "c4")]) == [None, "11", "11", "12"]
