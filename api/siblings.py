"""What the processes of one `jobreg api` share: a slot each for its per-process metrics, summed on a scrape.

A scrape reaches one process of several (they share the listening socket), yet the watch
connections, watch events and query latencies it reports must be the API's, not a random
process's. Each process writes its own samples into its slot of an anonymous shared mapping
(made by the supervisor before it forks) every ``PUBLISH_S`` and on each scrape; the scraped
process sums every slot, so siblings' figures are at most that old.
"""

from __future__ import annotations

import asyncio
import mmap
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import msgspec
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

#: Bytes per process: a few dozen families of a handful of labelled samples fit many times over.
SLOT_BYTES = 1 << 16
PUBLISH_S = 0.5
_HEAD = struct.Struct("<QI")  # sequence (odd while being written), payload length


class _Family(msgspec.Struct, array_like=True):
    name: str
    documentation: str
    type: str
    unit: str
    samples: list[tuple[str, dict[str, str], float]]


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[_Family]).decode


class Slots:
    """One slot per process in memory shared across fork; a sequence number guards torn reads."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self.memory = mmap.mmap(-1, processes * SLOT_BYTES)  # anonymous and MAP_SHARED: survives fork

    def write(self, index: int, payload: bytes) -> None:
        if _HEAD.size + len(payload) > SLOT_BYTES:
            raise ValueError(f"metrics of one API process exceed {SLOT_BYTES} bytes")
        base = index * SLOT_BYTES
        seq = _HEAD.unpack_from(self.memory, base)[0]
        _HEAD.pack_into(self.memory, base, seq + 1, 0)
        self.memory[base + _HEAD.size : base + _HEAD.size + len(payload)] = payload
        _HEAD.pack_into(self.memory, base, seq + 2, len(payload))

    def read(self, index: int) -> bytes:
        base = index * SLOT_BYTES
        for _ in range(100):
            seq, length = _HEAD.unpack_from(self.memory, base)
            payload = self.memory[base + _HEAD.size : base + _HEAD.size + length]
            if seq % 2 == 0 and _HEAD.unpack_from(self.memory, base)[0] == seq:
                return payload
        return b""  # a writer kept it busy: leave that process out of this one scrape


@dataclass(frozen=True)
class Sibling:
    """This process's place among the API's processes."""

    slots: Slots
    index: int


def _families(collectors: Iterable[Collector]) -> list[_Family]:
    return [
        _Family(m.name, m.documentation, m.type, m.unit, [(s.name, dict(s.labels), s.value) for s in m.samples])
        for c in collectors
        for m in c.collect()
    ]


class Summed(Collector):
    """This process's collectors, summed with its siblings' last published samples (or alone, without siblings)."""

    def __init__(self, local: Iterable[Collector], sibling: Sibling | None) -> None:
        self.local, self.sibling = list(local), sibling

    def publish(self) -> None:
        if self.sibling is not None:
            self.sibling.slots.write(self.sibling.index, _encode(_families(self.local)))

    async def publish_forever(self) -> None:
        while True:
            self.publish()
            await asyncio.sleep(PUBLISH_S)

    def collect(self) -> Iterator[Metric]:
        if self.sibling is None:
            for c in self.local:
                yield from c.collect()
            return
        self.publish()
        merged: dict[str, _Family] = {}
        totals: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
        slots = self.sibling.slots
        for index in range(slots.processes):
            payload = slots.read(index)
            for family in _decode(payload) if payload else []:
                merged.setdefault(family.name, family)
                for name, labels, value in family.samples:
                    key = (family.name, name, tuple(sorted(labels.items())))
                    totals[key] = totals.get(key, 0.0) + value
        for family in merged.values():
            metric = Metric(family.name, family.documentation, family.type, family.unit)
            seen = set()
            for name, labels, _ in family.samples:
                key = (family.name, name, tuple(sorted(labels.items())))
                if key not in seen:
                    seen.add(key)
                    metric.add_sample(name, labels, totals[key])
            # Samples only some siblings have (an endpoint another process served) count too.
            for key, value in totals.items():
                if key[0] == family.name and key not in seen:
                    seen.add(key)
                    metric.add_sample(key[1], dict(key[2]), value)
            yield metric
