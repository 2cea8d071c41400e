"""registry/partition.py: the job -> partition function (with its test vector) and the partitions' hash tags."""

from __future__ import annotations

import binascii
import random
import uuid
from collections import Counter
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from registry import partition
from registry.keys import Keys

# The documented test vector: (id, P) -> partition, with the id's CRC16. Any implementation, in any
# language, must give these (the CRC is the one Redis Cluster hashes keys with).
VECTOR = [
    ("3fa85f64-5717-4562-b3fc-2c963f66afa6", 0xDD24, {1: 0, 16: 4, 48: 20}),
    ("00000000-0000-0000-0000-000000000000", 0xE884, {1: 0, 16: 4, 48: 4}),
    ("ffffffff-ffff-ffff-ffff-ffffffffffff", 0xE8B7, {1: 0, 16: 7, 48: 7}),
]
NODE_COUNTS = (1, 2, 3, 4, 6, 8, 16)


@pytest.mark.parametrize(("job_id", "crc", "by_p"), VECTOR)
def test_the_documented_vector(job_id: str, crc: int, by_p: dict[int, int]) -> None:
    assert partition.crc16(job_id.encode()) == crc
    for p, want in by_p.items():
        assert partition.partition_of(job_id, p) == want
        assert partition.partition_of(job_id.upper(), p) == want  # the canonical form is lowercase


def test_the_module_docstring_states_the_vector() -> None:
    doc = partition.__doc__ or ""
    assert '``partition("3fa85f64-5717-4562-b3fc-2c963f66afa6")`` is 4 for P = 16 and 20 for P = 48' in doc
    assert "0xdd24" in doc


@given(st.binary(max_size=64))
def test_crc16_is_xmodem(data: bytes) -> None:
    assert partition.crc16(data) == binascii.crc_hqx(data, 0)


def test_jobs_spread_over_partitions() -> None:
    rng = random.Random(3)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(96_000)]
    for p in (16, 48):
        counts = Counter(partition.partition_of(i, p) for i in ids).values()
        mean = len(ids) / p
        assert len(counts) == p
        # Over five standard deviations (sqrt(mean)) from the mean either way would be a bad hash.
        assert all(abs(c - mean) < 0.12 * mean for c in counts), sorted(counts)


def test_one_partition_keeps_todays_tag() -> None:
    assert partition.tags("jobreg", 1) == ["jobreg"]
    assert partition.tag_slot("jobreg") == key_slot(Keys("jobreg").seq.encode())  # redis-py's own CRC


@pytest.mark.parametrize("prefix", ["jobreg", "t1", "a:b"])
@pytest.mark.parametrize("p", [2, 16, 24, 48])
def test_each_tag_lands_in_the_middle_of_its_slice(prefix: str, p: int) -> None:
    tags = partition.tags(prefix, p)
    assert len(set(tags)) == p
    assert len({partition.tag_slot(t) for t in tags}) == p
    for i, t in enumerate(tags):
        first, last = partition.slice_of(i, p)
        lo, hi = partition.target(i, p)
        assert first < lo <= partition.tag_slot(t) <= hi < last
        assert t.startswith(f"{prefix}:{i}:") and "{" not in t and "}" not in t


@pytest.mark.parametrize("p", [16, 24, 48])
@pytest.mark.parametrize("nodes", [*NODE_COUNTS, 5, 7, 12])
def test_partitions_spread_evenly_over_any_node_count(p: int, nodes: int) -> None:
    ranges = partition.even_ranges(nodes)
    per_node = Counter(
        next(k for k, (first, last) in enumerate(ranges) if first <= partition.tag_slot(t) <= last)
        for t in partition.tags("jobreg", p)
    )
    counts = [per_node[k] for k in range(nodes)]
    if p % nodes == 0:
        assert counts == [p // nodes] * nodes
    else:
        assert max(counts) - min(counts) <= 1, counts


@pytest.mark.parametrize("nodes", range(1, 17))
def test_even_ranges_cover_every_slot_once(nodes: int) -> None:
    ranges = partition.even_ranges(nodes)
    assert ranges[0][0] == 0 and ranges[-1][1] == partition.SLOTS - 1
    assert all(a[1] + 1 == b[0] for a, b in pairwise(ranges))
    sizes = [last - first + 1 for first, last in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_tags_are_deterministic_and_checked() -> None:
    assert partition.tag.__wrapped__("jobreg", 16, 3) == partition.tags("jobreg", 16)[3]
    with pytest.raises(ValueError):
        partition.tag("jobreg", 16, 16)
    with pytest.raises(ValueError):
        partition.partition_of("3fa85f64-5717-4562-b3fc-2c963f66afa6", 0)


def test_partitions_name_each_partitions_keys_under_its_own_tag() -> None:
    one = partition.Partitions("jobreg", 1)
    assert [k.seq for k in one.keys] == ["{jobreg}:seq"]  # one partition: the keys as they always were
    assert one.of("3fa85f64-5717-4562-b3fc-2c963f66afa6") == 0
    many = partition.Partitions("jobreg", 16)
    assert len(many.keys) == 16
    assert many.keys[4].tag == "jobreg:4:128"
    assert many.keys_of("3FA85F64-5717-4562-B3FC-2C963F66AFA6").job("x") == "{jobreg:4:128}:job:x"
    assert len({partition.tag_slot(k.tag) for k in many.keys}) == 16


def test_one_node_serves_every_partition_from_its_client() -> None:
    import redis.asyncio as aioredis

    from registry.route import OneNode, each

    client = aioredis.Redis()
    route = OneNode(client, partition.Partitions("jobreg", 4))
    assert [c is client for c, _ in each(route)] == [True] * 4
    assert [k.tag for _, k in each(route)] == partition.tags("jobreg", 4)
