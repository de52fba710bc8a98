"""pipeline/output/partitioner.py gives every key the partition aiokafka's (Kafka's) default partitioner gives."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner as AiokafkaPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from pipeline.output.partitioner import DefaultPartitioner, murmur2


@given(st.binary(max_size=300))
def test_murmur2_equals_aiokafkas(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key)


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=64))
def test_same_partition_as_aiokafka(key: bytes, partitions: int) -> None:
    all_partitions = list(range(partitions))
    assert DefaultPartitioner()(key, all_partitions, all_partitions) == AiokafkaPartitioner()(
        key, all_partitions, all_partitions
    )


def test_known_values() -> None:
    # From Kafka's own test suite (UtilsTest.testMurmur2), as signed ints there.
    assert murmur2(b"21") & 0xFFFFFFFF == -973932308 & 0xFFFFFFFF
    assert murmur2(b"foobar") & 0xFFFFFFFF == -790332482 & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") & 0xFFFFFFFF == -985981536 & 0xFFFFFFFF


def test_no_key_picks_an_available_partition() -> None:
    assert DefaultPartitioner()(None, [0, 1, 2], [2]) == 2
