"""The ingress router of a partitioned registry: re-publishes each entry of `<prefix>:events` to its job's
partition stream, then acknowledges it.

Producers keep publishing to the contract's stream; with P > 1 the workers read it as a group (this
consumer) and XADD every valid entry, fields untouched, to ``{<tag>}:events`` of the partition its
job id hashes to, where that partition's consumers apply it. The re-publication and the
acknowledgement are in two slots, so they are two steps: a crash between them re-publishes the
entry when it is delivered again (reclaim), and the projection absorbs the duplicate (an
``event_id`` already folded changes nothing). Invalid entries are dead-lettered here, exactly as a
registry of one partition does (same reason, ``source_id`` the entry's id in `<prefix>:events`).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import cast

import redis.asyncio as aioredis

from registry.errors import InvalidEvent
from registry.keys import Keys
from registry.route import Route
from registry.settings import Settings
from registry.store import resp
from registry.wire.events import decode_event
from workers.consumer import Consumer, Entry


class Router(Consumer):
    """A member of the workers' group on the ingress stream; its ``process`` routes instead of applying.

    Everything else (the read loop, its backlog, read-ahead and back-off, dead-lettering, reclaim
    and housekeeping) is the consumer's: ``redis`` serves the ingress stream, ``route`` the partitions.
    """

    adopts_legacy = False  # a registry of several partitions never had the pre-cluster key names

    def __init__(
        self, redis: aioredis.Redis, settings: Settings, route: Route, dead: aioredis.Redis | None = None
    ) -> None:
        """``redis`` serves `<prefix>:events` (and the router's bookkeeping in its slot), ``dead`` the
        dead-letter stream (by default the same client)."""
        super().__init__(redis, settings, Keys(settings.prefix).routing(), dead)
        self.route = route
        self.routed = 0  # entries re-published to a partition stream (redeliveries included)

    async def process(self, entries: Sequence[Entry]) -> int:
        """Dead-letter invalid entries, re-publish valid ones to their partitions, acknowledge; return entries handled.

        Raises (acknowledging nothing further) only when Redis fails; the entries then stay pending.
        """
        self.consumed += len(entries)
        partitions = self.route.partitions
        done: list[bytes] = []
        invalid: list[tuple[bytes, Mapping[bytes, bytes], str]] = []
        by_partition: dict[int, list[tuple[bytes, dict[bytes, bytes]]]] = defaultdict(list)
        for entry_id, fields in entries:
            if not fields:  # deleted from the stream while pending: nothing left to route
                done.append(entry_id)
                continue
            try:
                event = decode_event(cast(Mapping[bytes | str, bytes | str], fields))
            except InvalidEvent as exc:
                invalid.append((entry_id, fields, exc.reason))
                continue
            by_partition[partitions.of(event.job_id)].append((entry_id, fields))
        moved = await self.dead_letter(invalid)
        await asyncio.gather(*(self._publish(i, items) for i, items in by_partition.items()))
        routed = [entry_id for items in by_partition.values() for entry_id, _ in items]
        self.routed += len(routed)
        # Only now: an entry acknowledged before its re-publication would be lost with a crash between.
        await self._ack(done + routed, dead={"invalid": moved})
        return len(invalid) + len(done) + len(routed)

    async def _publish(self, i: int, items: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """XADD the entries, in stream order, to partition ``i``'s stream (one pipeline, one round trip)."""
        # Packed by hand (registry/store/resp.py): redis-py's pipeline packed an entry's fields at about
        # twice the cost, and the router re-publishes every entry.
        head = (b"XADD", self.route.partitions.keys[i].events.encode(), b"*")
        packed = b"".join([resp.pack_command(*head, *chain.from_iterable(fields.items())) for _, fields in items])
        await resp.run_packed(self.route.client(i), packed, len(items))
