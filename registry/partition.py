"""Partitions for Redis Cluster (issue 14): which partition holds a job, and each partition's hash tag.

A registry is split into a fixed number P of partitions. Partition ``i`` keeps all its keys under
one hash tag, chosen so that its Redis Cluster slot lies near the middle of the i-th of P equal
slices of the 16,384 slots. The ranges ``redis-cli --cluster create`` (or a rebalance) gives N
masters are N equal consecutive slices, so when N divides P each master serves exactly P/N
partitions, and otherwise P/N rounded down or up. A job's partition is a stable function of its id
that any language computes with the CRC16 every Redis Cluster client already has:

    partition(id) = crc16(lowercase canonical id, ASCII) mod P

Test vector: ``partition("3fa85f64-5717-4562-b3fc-2c963f66afa6")`` is 4 for P = 16 and 20 for P = 48
(its CRC16 is 0xdd24); more in tests/unit/test_partition.py. With P = 1 (a standalone Redis) everything stays
under today's single tag ``{<prefix>}``. Pure functions and values, no I/O; not wired into the store yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from registry.keys import Keys

SLOTS = 16384  # Redis Cluster hash slots
# A tag's slot is searched within SLOTS / P / (2 * _MARGIN) of its slice's middle: far enough from
# the slice's edges that a node range cut by redis-cli's rounding (a slot or two) cannot move it.
_MARGIN = 4


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_TABLE = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), the checksum Redis Cluster hashes keys with."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def tag_slot(tag: str) -> int:
    """The slot of every key whose hash tag is ``{tag}`` (what CLUSTER KEYSLOT answers for them)."""
    return crc16(tag.encode()) % SLOTS


def partition_of(job_id: str, partitions: int) -> int:
    """The partition (0 .. partitions - 1) holding the job ``job_id`` (a uuid, any case)."""
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    return crc16(job_id.lower().encode("ascii")) % partitions


def slice_of(i: int, partitions: int) -> tuple[int, int]:
    """Partition ``i``'s slice of the slots: [first, last], the i-th of ``partitions`` equal parts."""
    return i * SLOTS // partitions, (i + 1) * SLOTS // partitions - 1


@cache
def tag(prefix: str, partitions: int, i: int) -> str:
    """Partition ``i``'s hash tag: ``<prefix>:<i>:<n>`` with the smallest n >= 0 whose slot is within
    the middle of the i-th slice (``target``); just ``<prefix>`` when there is one partition.

    Deterministic, so any process (in any language) derives the same tags from the prefix and P.
    """
    if not 0 <= i < partitions:
        raise ValueError(f"partition {i} is not in 0 .. {partitions - 1}")
    if partitions == 1:
        return prefix
    lo, hi = target(i, partitions)
    n = 0
    while not lo <= tag_slot(f"{prefix}:{i}:{n}") <= hi:
        n += 1
    return f"{prefix}:{i}:{n}"


def target(i: int, partitions: int) -> tuple[int, int]:
    """The slots partition ``i``'s tag may hash to, [lo, hi]: the middle of its slice, 1/_MARGIN of it wide."""
    first, last = slice_of(i, partitions)
    middle, reach = (first + last) // 2, max(0, (last - first + 1) // (2 * _MARGIN))
    return middle - reach, middle + reach


def tags(prefix: str, partitions: int) -> list[str]:
    """Every partition's hash tag, in partition order."""
    return [tag(prefix, partitions, i) for i in range(partitions)]


def even_ranges(nodes: int) -> list[tuple[int, int]]:
    """The slot ranges, [first, last], that ``redis-cli --cluster create`` gives ``nodes`` masters
    (its own arithmetic: consecutive slices of 16384 / nodes slots, rounded half up, as C lround)."""
    per_node, first, cursor, out = SLOTS / nodes, 0, 0.0, []
    for k in range(nodes):
        last = SLOTS - 1 if k == nodes - 1 else max(first, min(SLOTS - 1, int(cursor + per_node - 1 + 0.5)))
        out.append((first, last))
        first, cursor = last + 1, cursor + per_node
    return out


@dataclass(frozen=True)
class Partitions:
    """A registry's P partitions: each one's hash tag and key names, and which one holds a job.

    ``Partitions(prefix, 1)`` is the registry as it always was (one tag, ``{<prefix>}``).
    """

    prefix: str = "jobreg"
    count: int = 1
    keys: tuple[Keys, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("partitions must be at least 1")
        object.__setattr__(self, "keys", tuple(Keys(self.prefix, t) for t in tags(self.prefix, self.count)))

    def of(self, job_id: str) -> int:
        """The partition holding ``job_id``."""
        return 0 if self.count == 1 else partition_of(job_id, self.count)

    def keys_of(self, job_id: str) -> Keys:
        """Key names of the partition holding ``job_id``."""
        return self.keys[self.of(job_id)]
