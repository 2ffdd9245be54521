"""The recommender's kept answers: reused while fresh, fetched again when stale, oldest dropped when full,
and an empty answer never kept (a new store's first minutes, or the segmenter away)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from services.notifier.adapters import recommendations
from services.notifier.adapters.recommendations import Kept


class Fetcher:
    def __init__(self, answer: list[str]) -> None:
        self.answer = answer
        self.calls = 0

    async def __call__(self) -> list[str]:
        self.calls += 1
        return list(self.answer)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(recommendations, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


async def test_an_answer_is_reused_while_fresh_and_fetched_again_when_stale(clock: list[float]) -> None:
    kept: Kept[str, list[str]] = Kept(ttl=60)
    fetch = Fetcher(["p1"])
    assert await kept.get("demo", fetch) == ["p1"]
    clock[0] += 59
    fetch.answer = ["p2"]
    assert await kept.get("demo", fetch) == ["p1"]
    assert fetch.calls == 1
    clock[0] += 2
    assert await kept.get("demo", fetch) == ["p2"]
    assert fetch.calls == 2


async def test_an_empty_answer_is_asked_again(clock: list[float]) -> None:
    kept: Kept[str, list[str]] = Kept(ttl=60)
    fetch = Fetcher([])
    assert await kept.get("demo", fetch) == []
    fetch.answer = ["p1"]
    assert await kept.get("demo", fetch) == ["p1"]
    assert fetch.calls == 2


def test_the_oldest_answer_goes_first_when_full(clock: list[float]) -> None:
    kept: Kept[str, int] = Kept(ttl=60, size=2)
    kept.put("a", 1)
    kept.put("b", 2)
    kept.put("a", 3)  # refreshed: now the newest
    kept.put("c", 4)
    assert kept.lookup("b") == (False, None)
    assert kept.lookup("a") == (True, 3)
    assert kept.lookup("c") == (True, 4)
