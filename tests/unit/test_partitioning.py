"""Ingest chooses each record's partition itself: it must be the partition Kafka's default partitioner (Java's
and aiokafka's) gives the same key, or one customer's events would be split across partitions."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from bench.workload import Storefront, canonical
from shared.partitioning import KeyPartitions, default_partition, murmur2

# org.apache.kafka.common.utils.UtilsTest#testMurmur2: Java's Utils.murmur2 of these keys (signed ints).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def aiokafka_partition(key: bytes, partitions: int) -> int:
    ids = list(range(partitions))
    return int(DefaultPartitioner()(key, ids, ids))


def test_murmur2_is_javas() -> None:
    for key, java in JAVA_MURMUR2.items():
        assert murmur2(key) == java & 0xFFFFFFFF, key


def test_the_positive_hash_decides_the_partition_like_javas_to_positive() -> None:
    # Java: toPositive(murmur2(key)) % n, toPositive clearing the sign bit (not abs()).
    for key, java in JAVA_MURMUR2.items():
        for partitions in (1, 3, 6, 7, 12, 100):
            assert default_partition(key, partitions) == (java & 0x7FFFFFFF) % partitions


@given(key=st.binary(max_size=200), partitions=st.integers(min_value=1, max_value=1000))
def test_same_partition_as_aiokafkas_default_partitioner(key: bytes, partitions: int) -> None:
    assert murmur2(key) == aiokafka_murmur2(key) & 0xFFFFFFFF
    assert default_partition(key, partitions) == aiokafka_partition(key, partitions)
    assert KeyPartitions().partition(key, partitions) == aiokafka_partition(key, partitions)


def test_every_key_of_the_benchmark_mix_lands_where_it_did() -> None:
    store = Storefront(seed=5, run="partitions")
    events = canonical([*store.segment_calls(3000), *store.shopify_webhooks(1000)])
    keys = {e.partition_key.encode() for e in events}
    assert len(keys) > 500
    cache = KeyPartitions()
    for partitions in (6, 4, 6):
        for key in keys:
            expected = aiokafka_partition(key, partitions)
            assert cache.partition(key, partitions) == expected
            assert cache.partition(key, partitions) == expected  # from memory the second time


def test_the_memory_is_bounded_and_stays_right_when_emptied() -> None:
    cache = KeyPartitions(max_keys=10)
    keys = [f"demo:customer-{n}".encode() for n in range(100)]
    for _ in range(2):
        for key in keys:
            assert cache.partition(key, 6) == aiokafka_partition(key, 6)
    assert len(cache._known) <= 10
