"""`jobreg migrate`: moves a registry's stored layout to this code's, step by step, in bounded, resumable calls.

Each step rebuilds what its layout added from data every listed job already has (or rewrites
what it changed), a bounded range of handles per call, and stores its cursor with the work, so
a killed run resumes where it stopped. The last call bumps the version only once every handle
assigned so far is done, in the same atomic step (lua/migrate_finish.lua). While a step runs,
the API and workers of the new version refuse the store (naming the migration and its
progress); the old version's API keeps answering from the indexes it knows, which an index step
leaves as they are (5 -> 6 rewrites the records, which the old version cannot read: stop its
API too). See the README, Upgrading.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import msgspec
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from registry.errors import LayoutMismatch
from registry.keys import Keys
from registry.lua import source
from registry.store import indexes, layout, record, sortidx
from registry.store.indexes import LAYOUT, ZONE_SIZE

# Handles per call: a 16 KiB read of the uuid array and a BITFIELD per digit; at 1M jobs on the
# busy 2-core machine a call took 0.9 ms p50, 1.0 ms p90 (4096 per call took 6-8 ms: too long a
# pause for ingest and queries).
DEFAULT_BATCH = 1024


class Step(msgspec.Struct, frozen=True):
    """One layout change: ``script`` (registry/store/lua/<script>.lua) rebuilds a range of handles."""

    source: int
    target: int
    what: str
    script: str

    def index_keys(self, keys: Keys) -> list[str]:
        """The keys the step writes besides the seq, uuids and progress keys every step script takes."""
        if self.script == "migrate_idhex":
            return list(keys.id_hex.values())
        if self.script == "migrate_zone":
            field = "updated_at"
            return [keys.column(field), keys.zone_max(field), keys.zone_min(field)]
        raise AssertionError(f"no keys for {self.script}")

    def extra_args(self) -> list[int]:
        """What the step script takes after the first handle and the batch size."""
        return [ZONE_SIZE] if self.script == "migrate_zone" else []


# migrate_records is driven from Python (the codec lives in registry/store/record.py, once): it
# reads a range of records, re-encodes them here and writes them back with a compare-and-set.
STEPS = {
    4: Step(4, 5, "the bitmaps of each id's first hex digit", "migrate_idhex"),
    5: Step(5, 6, "job records re-encoded in the compact state codec", "migrate_records"),
    6: Step(6, 7, "the six sort sets rebuilt as bucketed sort indexes", "migrate_sortidx"),
    7: Step(7, 8, "the zone map of updated_at, from its value column", "migrate_zone"),
}
# migrate_sortidx is driven from Python too (registry/store/sortidx.py's Builder writes what
# lua/sortlib.lua reads): no script of its own; see _build_sort_indexes.

# (step, jobs done, jobs to do): called after every bounded call.
Progress = Callable[[Step, int, int], None]


class Outcome(msgspec.Struct, frozen=True):
    source: int
    target: int
    steps: tuple[Step, ...]


async def migrate(
    redis: aioredis.Redis, keys: Keys, batch: int = DEFAULT_BATCH, progress: Progress | None = None
) -> Outcome:
    """Run every step from the stored layout to LAYOUT; raises LayoutMismatch for a layout no step starts from."""
    state = await layout.read(redis, keys)
    source_version, done = state.version, []
    if state.version > LAYOUT:
        raise LayoutMismatch(state.refusal() or "")
    while state.version < LAYOUT:
        step = STEPS.get(state.version)
        if step is None:
            raise LayoutMismatch(
                f"the store holds layout {state.version}, which no migration starts from: "
                f"rebuild it from the events stream instead (see CONTRIBUTING.md, Changing the stored layout)"
            )
        await run_step(redis, keys, step, batch, progress)
        done.append(step)
        state = await layout.read(redis, keys)
    return Outcome(source_version, state.version, tuple(done))


async def run_step(redis: aioredis.Redis, keys: Keys, step: Step, batch: int, progress: Progress | None) -> None:
    """Rebuild ``step``'s indexes for handles 1..seq from its stored cursor, then bump the version."""
    to, cursor = await redis.hmget(keys.migration, ["to", "next"])  # type: ignore[misc]
    if to is not None and int(to) != step.target:
        await redis.delete(keys.migration)  # a cursor of some other step: start this one afresh
    # Marks the migration as under way: the new version's API and workers name it when they refuse.
    await redis.hset(keys.migration, mapping={"from": step.source, "to": step.target})  # type: ignore[misc]
    finish = redis.register_script(source("registry.store", "migrate_finish"))
    if step.script == "migrate_sortidx":
        await _build_sort_indexes(redis, keys, step, progress)
        while not await finish(keys=[keys.seq, keys.migration, keys.layout], args=[step.target]):
            await redis.hset(keys.migration, "next", str(int(await redis.get(keys.seq) or 0) + 1))  # type: ignore[misc]
        return
    rebuild = redis.register_script(source("registry.store", step.script))
    next_handle = int(cursor or 1) if to is not None and int(to) == step.target else 1
    while True:
        if step.script == "migrate_records":
            next_handle, seq = await _rewrite_records(redis, keys, rebuild, next_handle, batch)
        else:
            step_keys = [keys.seq, keys.uuids, keys.migration, *step.index_keys(keys)]
            next_handle, seq = (
                int(x) for x in await rebuild(keys=step_keys, args=[next_handle, batch, *step.extra_args()])
            )
        if progress is not None:
            progress(step, next_handle - 1, seq)
        # Workers may have listed jobs meanwhile; the finish checks again, atomically with the bump.
        if next_handle > seq and await finish(keys=[keys.seq, keys.migration, keys.layout], args=[step.target]):
            return


async def _rewrite_records(
    redis: aioredis.Redis, keys: Keys, write: AsyncScript, first: int, batch: int
) -> tuple[int, int]:
    """Re-encode the records of handles ``first`` .. ``first + batch - 1`` (those not compact yet).

    Returns (next handle, seq). Records of jobs not listed yet have no handle: they keep their
    older encoding, which the codec still reads, until their next write.
    """
    seq = int(await redis.get(keys.seq) or 0)
    last = min(seq, first + batch - 1)
    record_keys: list[str] = []
    args: list[str | bytes | int] = [max(first, last + 1)]
    if last >= first:
        raw = await redis.getrange(keys.uuids, first * 16, last * 16 + 15)
        ids = [str(uuid.UUID(bytes=raw[i : i + 16])) for i in range(0, len(raw) - 15, 16)]
        pipe = redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(keys.job(job_id), [record.VERSION, record.STATE])
        for job_id, (version, state) in zip(ids, await pipe.execute(), strict=True):
            if version is not None and state and not record.is_compact(state):
                record_keys.append(keys.job(job_id))
                args += [version, record.encode_state(record.decode_state(state, job_id))]
    await write(keys=[keys.migration, *record_keys], args=args)
    return max(first, last + 1), seq


async def _build_sort_indexes(redis: aioredis.Redis, keys: Keys, step: Step, progress: Progress | None) -> None:
    """Layout 6 -> 7: bulk-build each field's sort index from its sorted set, a page per call, then drop the set.

    Each call writes one whole page of the index (registry/store/sortidx.py, Builder) and the
    progress (field, rank read, the builder's ids) in one MULTI, so a killed run resumes at the next
    page; a field's sorted set is unlinked (freed in the background) once its index is complete.
    The sorted sets must not change meanwhile: stop the old version's workers (and its API, which
    reads them) for this step.
    """
    sizes = [int(await redis.zcard(keys.sort_set_v6(f))) for f in indexes.SORT_FIELDS]
    raw = await redis.hmget(keys.migration, ["field", "rank", "ids", "pages"])  # type: ignore[misc]
    field_at, rank, ids, pages = (int(x or 0) for x in raw)
    per_page = sortidx.FILL * sortidx.FILL
    for i, field in enumerate(indexes.SORT_FIELDS):
        if i < field_at:
            continue
        source_key, base = keys.sort_set_v6(field), keys.sort(field)
        builder = sortidx.Builder(base, ids, pages) if i == field_at else sortidx.Builder(base)
        start = rank if i == field_at else 0
        while True:
            rows = await redis.zrange(source_key, start, start + per_page - 1, withscores=True)
            if not rows:
                break
            pipe = redis.pipeline(transaction=True)
            for cmd in builder.page([(bytes(m), int(s)) for m, s in rows]):
                pipe.execute_command(*cmd)
            start += len(rows)
            progress_fields = {"field": i, "rank": start, "ids": builder.next_id, "pages": builder.pages}
            pipe.hset(keys.migration, mapping=progress_fields)
            await pipe.execute()
            if progress is not None:
                progress(step, sum(sizes[:i]) + start, sum(sizes))
        pipe = redis.pipeline(transaction=True)
        pipe.unlink(source_key)
        pipe.hset(keys.migration, mapping={"field": i + 1, "rank": 0, "ids": 0, "pages": 0})
        await pipe.execute()
