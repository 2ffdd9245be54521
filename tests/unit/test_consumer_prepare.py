"""Preparing the next batch (shared/consumer.py, `prepare`, `unprepare` and `announce`): while a full
batch is handled, the next one is read, decoded whole, and its valid values handed to `prepare`, which the
segmenter uses to send that batch's claim ahead. `handle` must then get exactly the values prepared (the
same objects, in the same order), and `unprepare` must say so whenever it will not: a rebalance cut the
batch, or the consumer stops. With `announce`, the batch's raw values come first, before any is decoded
(the segmenter sends the claim of their ids from them). The batches handled, dead letters and commits stay
those of a pipeline without."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from shared.events import StorefrontEvent
from tests.unit.test_consumer_decode_ahead import TOPIC, VALUES, Run, consume, good


@dataclass
class Hooks:
    """What the pipeline told its handler, in order: ("prepare", ids), ("unprepare", None), ("handle", ids);
    and the value objects of each call to `prepare` and `handle`, to compare by identity."""

    calls: list[tuple[str, object]] = field(default_factory=list)
    prepared: list[list[StorefrontEvent]] = field(default_factory=list)
    handled: list[list[StorefrontEvent]] = field(default_factory=list)

    def prepare(self, values: Sequence[StorefrontEvent]) -> None:
        self.calls.append(("prepare", [v.event_id for v in values]))
        self.prepared.append(list(values))

    async def unprepare(self) -> None:
        self.calls.append(("unprepare", None))

    def announce(self, raws: Sequence[bytes | None]) -> None:
        self.calls.append(("announce", list(raws)))

    def handle(self, values: Sequence[StorefrontEvent]) -> None:
        self.calls.append(("handle", [v.event_id for v in values]))
        self.handled.append(list(values))


def same_objects(a: Sequence[object], b: Sequence[object]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


async def run(
    values: dict[tuple[str, int], list[bytes | None]],
    *,
    max_records: int,
    revoke_after_first: TopicPartition | None = None,
    announce: bool = False,
) -> tuple[Hooks, Run]:
    hooks = Hooks()
    done = await consume(
        values,
        max_records=max_records,
        decode_ahead=1,  # with `prepare`, the whole batch is decoded ahead all the same
        revoke_after_first=revoke_after_first,
        prepare=hooks.prepare,
        unprepare=hooks.unprepare,
        announce=hooks.announce if announce else None,
        handled=hooks.handle,
    )
    return hooks, done


async def test_each_batch_read_ahead_is_prepared_whole_and_handled_as_prepared() -> None:
    hooks, done = await run(VALUES, max_records=3)
    # Batches of 3 in partition order: (a, bad, b), (c, None, d), (e, {}, f), (g). Each but the first was
    # read while the one before it was handled (that one was full), and prepared with its valid values only.
    assert hooks.calls == [
        ("prepare", ["c", "d"]),
        ("handle", ["a", "b"]),
        ("prepare", ["e", "f"]),
        ("handle", ["c", "d"]),
        ("prepare", ["g"]),
        ("handle", ["e", "f"]),
        ("handle", ["g"]),
        ("unprepare", None),  # the consumer stops: nothing prepared is left to keep
    ]
    # Each batch after the first is handled with the very objects prepared for it.
    assert [same_objects(h, p) for h, p in zip(hooks.handled[1:], hooks.prepared, strict=True)] == [True] * 3
    plain = await consume(VALUES, max_records=3, decode_ahead=0)
    assert done.journal == plain.journal
    assert done.committed == plain.committed


async def test_a_batch_a_rebalance_cut_is_unprepared_before_the_rest_is_handled() -> None:
    values: dict[tuple[str, int], list[bytes | None]] = {
        (TOPIC, 0): [good("a"), good("b"), good("x")],
        (TOPIC, 1): [good("c"), good("d")],
    }
    hooks, done = await run(values, max_records=2, revoke_after_first=TopicPartition(TOPIC, 1))
    # (x, c) were prepared while (a, b) was handled; then partition 1 went to another member: what was
    # prepared will not be handled as it was (its claim is rolled back), and x alone is handled.
    assert hooks.calls[:4] == [
        ("prepare", ["x", "c"]),
        ("handle", ["a", "b"]),
        ("unprepare", None),
        ("handle", ["x"]),
    ]
    assert done.committed == {TopicPartition(TOPIC, 0): 3}


async def test_a_batch_with_no_valid_value_is_not_prepared() -> None:
    values: dict[tuple[str, int], list[bytes | None]] = {
        (TOPIC, 0): [good("a"), good("b"), b"not json", None, good("c")],
    }
    hooks, done = await run(values, max_records=2)
    assert [c for c in hooks.calls if c[0] != "unprepare"] == [
        ("handle", ["a", "b"]),
        ("prepare", ["c"]),
        ("handle", ["c"]),
    ]
    assert [e for e in done.journal if e[0] == "dlq"] == [("dlq", 2), ("dlq", 3)]
    assert done.committed == {TopicPartition(TOPIC, 0): 5}


async def test_a_batch_read_ahead_is_announced_raw_before_it_is_decoded_and_prepared() -> None:
    hooks, done = await run(VALUES, max_records=3, announce=True)
    # Each batch read ahead: first its records' raw values, all of them (the invalid and the empty too), in
    # the order its decoded values are prepared and handled; then its valid values, prepared.
    flat = [value for tp in sorted(VALUES) for value in VALUES[tp]]
    second, third, fourth = flat[3:6], flat[6:9], flat[9:]
    assert hooks.calls[:3] == [("announce", second), ("prepare", ["c", "d"]), ("handle", ["a", "b"])]
    assert [c for c in hooks.calls if c[0] == "announce"] == [
        ("announce", second),
        ("announce", third),
        ("announce", fourth),
    ]
    # The rest is as without announcing.
    plain, without = await run(VALUES, max_records=3)
    assert [c for c in hooks.calls if c[0] != "announce"] == plain.calls
    assert [same_objects(h, p) for h, p in zip(hooks.handled[1:], hooks.prepared, strict=True)] == [True] * 3
    assert done.journal == without.journal
    assert done.committed == without.committed
