"""Test helper: a registry of P partitions behind a Route (issue 14), written and queried partition
by partition through ``route.call`` with today's Projection and Executor, and the reference answers
of each partition."""

from __future__ import annotations

import random
from collections.abc import Sequence

import redis.asyncio as aioredis

from registry.domain.model import Event
from registry.keys import Keys
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.route import Route
from registry.settings import Settings, load_settings
from registry.store import record
from registry.store.projection import Projection
from tests.harness import decode_all
from tests.query_params import parse_params
from tests.reference import Params, Reference, make_traffic, random_query

Answer = tuple[int, list[str]]


def settings_for(prefix: str) -> Settings:
    return load_settings({}, redis_url="redis://unused", prefix=prefix)


def by_partition(route: Route, events: Sequence[Event]) -> list[list[Event]]:
    """``events`` split by their job's partition, in order."""
    out: list[list[Event]] = [[] for _ in range(route.partitions.count)]
    for event in events:
        out[route.partitions.of(event.job_id)].append(event)
    return out


async def apply(route: Route, i: int, events: Sequence[Event]) -> None:
    """Apply ``events`` (all of partition ``i``) through the route, the way a partition's worker would."""
    keys = route.partitions.keys[i]

    async def run(client: aioredis.Redis) -> None:
        await Projection(client, keys, set_to_bitmap_threshold=20, chunk=7).apply(events)

    await route.call(i, run)


async def apply_all(route: Route, traffic: Sequence[dict[str, str]], batch: int = 61) -> None:
    for i, events in enumerate(by_partition(route, decode_all(traffic))):
        for start in range(0, len(events), batch):
            await apply(route, i, events[start : start + batch])


class Asker:
    """Runs queries on one partition through the route with an Executor per client, as the API
    would hold them (built on the partition's first call on a client: its scripts load there)."""

    def __init__(self, route: Route, i: int, settings: Settings) -> None:
        self.route, self.i, self.settings = route, i, settings
        self.keys = route.partitions.keys[i]
        self.executors: dict[int, Executor] = {}

    def executor(self, client: aioredis.Redis) -> Executor:
        ex = self.executors.get(id(client))
        if ex is None:
            ex = self.executors[id(client)] = Executor(client, self.keys, self.settings)
        return ex

    async def ask(self, query: Params) -> Answer:
        async def run(client: aioredis.Redis) -> Answer:
            page = await self.executor(client).run(plan(parse_params(query), self.keys))
            return page.total, page.job_ids

        return await self.route.call(self.i, run)


def workload(seed: int, jobs: int, n_queries: int) -> tuple[list[dict[str, str]], Reference, list[Params]]:
    rng = random.Random(seed)
    traffic = make_traffic(rng, jobs)
    ref = Reference()
    for e in traffic:
        ref.add(e)
    return traffic, ref, [random_query(rng, ref) for _ in range(n_queries)]


def partition_refs(route: Route, traffic: Sequence[dict[str, str]]) -> list[Reference]:
    """The reference fold of each partition's share of ``traffic``."""
    refs = [Reference() for _ in range(route.partitions.count)]
    for entry in traffic:
        job_id = entry.get("job_id", "")
        try:
            i = route.partitions.of(job_id)
        except (UnicodeEncodeError, ValueError):
            continue
        refs[i].add(entry)
    return refs


async def reference_answers(route: Route, i: int, ref: Reference, queries: Sequence[Params]) -> list[Answer]:
    """The reference's answers for partition ``i`` (creation_order: the handles the partition issued)."""
    keys: Keys = route.partitions.keys[i]
    ids = list(ref.jobs())
    handles = await route.call(i, lambda client: record.handles(client, keys, ids))
    orders = {j: h for j, h in zip(ids, handles, strict=True) if h}
    return [ref.query(q, orders) for q in queries]
