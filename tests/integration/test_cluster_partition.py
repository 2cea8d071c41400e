"""registry/partition.py against a real 3-master cluster: its slots are Redis's, its ranges redis-cli's."""

from __future__ import annotations

import random
import uuid
from collections import Counter

import pytest

from registry import partition
from registry.keys import Keys
from tests.cluster import LocalCluster, three_masters

cluster = pytest.fixture(scope="module", name="cluster")(three_masters)


def test_slots_and_ranges_agree_with_the_cluster(cluster: LocalCluster) -> None:
    ranges = sorted(r for rs in cluster.master_slots().values() for r in rs)
    assert ranges == partition.even_ranges(3)
    with cluster.nodes[0].client() as c:
        for p in (16, 48):
            for t in partition.tags("jobreg", p):
                # Every key of a partition hashes by its tag: a key as the Keys class spells them.
                assert int(c.execute_command("CLUSTER", "KEYSLOT", Keys(t).seq)) == partition.tag_slot(t)
        rng = random.Random(9)
        for _ in range(200):
            job_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            assert int(c.execute_command("CLUSTER", "KEYSLOT", job_id)) == partition.crc16(job_id.encode()) % 16384


@pytest.mark.parametrize(("p", "want"), [(48, [16, 16, 16]), (16, [5, 5, 6]), (24, [8, 8, 8])])
def test_partitions_spread_over_the_masters(cluster: LocalCluster, p: int, want: list[int]) -> None:
    per_master = Counter(cluster.node_of(Keys(t).seq).port for t in partition.tags("jobreg", p))
    assert sorted(per_master.values()) == want
