"""The recommender's kept answers: reused while fresh, fetched again when stale, oldest dropped when full. An
empty answer is asked again (a new store's best sellers) unless the caller keeps it: the segmenter's empty
complements are kept like any other answer of theirs, and a failed ask (the segmenter away, an error, a
timeout) is never kept."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest

from services.notifier.adapters import recommendations
from services.notifier.adapters.recommendations import Kept, Recommender
from shared.settings import REPO_ROOT
from shared.stores import StoreConfig, StoreRegistry


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


async def test_an_empty_answer_is_asked_again_unless_kept_empty(clock: list[float]) -> None:
    kept: Kept[str, list[str]] = Kept(ttl=60)
    fetch = Fetcher([])
    assert await kept.get("demo", fetch) == []
    fetch.answer = ["p1"]
    assert await kept.get("demo", fetch) == ["p1"]
    assert fetch.calls == 2

    kept_empty: Kept[str, list[str]] = Kept(ttl=60)
    fetch = Fetcher([])
    assert await kept_empty.get("demo", fetch, keep_empty=True) == []
    fetch.answer = ["p1"]
    clock[0] += 59
    assert await kept_empty.get("demo", fetch, keep_empty=True) == []
    assert fetch.calls == 1
    clock[0] += 2
    assert await kept_empty.get("demo", fetch, keep_empty=True) == ["p1"]
    assert fetch.calls == 2


class Segmenter:
    """The segmenter's complements route: answers in turn, each a JSON list, a status code, or an error."""

    def __init__(self, *answers: list[str] | int | Exception) -> None:
        self.answers = list(answers)
        self.asked = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/stores/demo/products/p1/complements"
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, int):
            return httpx.Response(answer, request=request)
        return httpx.Response(200, json=[{"product_id": p} for p in answer], request=request)


def _demo() -> StoreConfig:
    store = StoreRegistry.load(REPO_ROOT / "deploy" / "stores.dev.yaml").get("demo")
    assert store is not None
    return store


def _recommender(segmenter: Segmenter) -> Recommender:
    client = httpx.AsyncClient(transport=httpx.MockTransport(segmenter))
    return Recommender(
        engine=None,  # type: ignore[arg-type]  # complements never read the database
        client=client,
        segmenter_url="http://segmenter",
        ttl=60,
        service_api_key="service-key",
    )


async def test_an_empty_complements_answer_is_kept_like_any_other(clock: list[float]) -> None:
    segmenter = Segmenter([], ["p2"])
    recommender, store = _recommender(segmenter), _demo()
    assert await recommender.complements(store, "p1") == []
    clock[0] += 59
    assert await recommender.complements(store, "p1") == []
    assert segmenter.asked == 1
    clock[0] += 2
    assert await recommender.complements(store, "p1") == ["p2"]
    assert segmenter.asked == 2


@pytest.mark.parametrize(
    "failure",
    [503, 404, httpx.ConnectError("refused"), httpx.ReadTimeout("slow")],
    ids=["server-error", "not-found", "away", "timeout"],
)
async def test_a_failed_complements_ask_is_never_kept(clock: list[float], failure: int | Exception) -> None:
    segmenter = Segmenter(failure, failure, ["p2"])
    recommender, store = _recommender(segmenter), _demo()
    assert await recommender.complements(store, "p1") == []
    assert await recommender.complements(store, "p1") == []
    assert segmenter.asked == 2
    assert await recommender.complements(store, "p1") == ["p2"]
    assert await recommender.complements(store, "p1") == ["p2"]
    assert segmenter.asked == 3


def test_the_oldest_answer_goes_first_when_full(clock: list[float]) -> None:
    kept: Kept[str, int] = Kept(ttl=60, size=2)
    kept.put("a", 1)
    kept.put("b", 2)
    kept.put("a", 3)  # refreshed: now the newest
    kept.put("c", 4)
    assert kept.lookup("b") == (False, None)
    assert kept.lookup("a") == (True, 3)
    assert kept.lookup("c") == (True, 4)
