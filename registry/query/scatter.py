"""The scatter executor (issue 14): a query over every partition of a Route, answered as one registry would.

With one partition it is today's Executor, through the same calls (``plan``, ``seek.list_page``). With
P > 1 every partition answers its part concurrently (its own Executor on ``route.client(i)`` with its
keys): totals and counts are sums; pages merge by (order value, id), a total order that is the same
in every partition (registry/query/merge.py); creation_order is handle * P + i. A page at a small
offset merges each partition's first offset + limit rows; a deeper one finds the order value at the
offset by rank search over per-partition counts (registry/query/ranksearch.py) and reads ``limit``
rows (plus the tie group's share before the target) per partition from there. A page token resumes
each partition after the cursor's row (value, id), ties skipped by id. An id filter or lookup asks
only the partitions holding those ids; partitions without matches are skipped after the first counts.
What each partition counts and reads is registry/query/partitioned.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import msgspec

from registry.domain.model import Job, JobDetail
from registry.live.changes import ORIGIN
from registry.live.merged import format_vector
from registry.query import seek as seeking
from registry.query.blockpage import block_page, blockwise
from registry.query.execute.counts import zero_counts
from registry.query.executor import Executor, Listing
from registry.query.merge import SortKey, Value, key_of, merge, renumber, row_value, sort_key, value_key
from registry.query.page_call import reply_position
from registry.query.partitioned import (
    NULL_ID,
    Partitioned,
    Queue,
    Row,
    below,
    by_rank,
    exact,
    last_change,
    row_counts,
    searchable,
    uuid_text,
)
from registry.query.planner import Plan, plan
from registry.query.ranksearch import Found, rank_search
from registry.query.seek import RANGED, Seek
from registry.query.spec import Counts, JobQuery, OrderBy

_J = TypeVar("_J", bound=Job)
# Up to this offset + limit a page merges each partition's first offset + limit rows; deeper, the
# rank search (a few rounds of P probes and P counts) is cheaper than reading and rendering P times
# that many rows (docs/scaling.md "Queries across partitions", measured there).
TOP_MERGE_MAX = 1000


class Scatter(Partitioned):
    """Runs job queries over a Route's partitions; with one partition, exactly today's Executor."""

    def plans(self, query: JobQuery) -> dict[int, Plan]:
        """Each partition's plan of ``query``, for the partitions that can hold a match (an id filter
        names its partitions; a plan known empty asks nothing)."""
        count, keys = self.partitions.count, self.partitions.keys
        if query.ids is None or count == 1:
            targets = {i: query for i in range(count)}
        else:
            ids: dict[int, list[str]] = {}
            for job_id in query.ids:
                ids.setdefault(self.partitions.of(job_id), []).append(job_id)
            targets = {i: msgspec.structs.replace(query, ids=tuple(v)) for i, v in ids.items()}
        plans = {i: plan(q, keys[i]) for i, q in targets.items()}
        return {i: p for i, p in plans.items() if not p.empty}

    async def list_page(self, query: JobQuery, seek: Seek | None) -> tuple[Listing, int, bool]:
        """GET /api/v2/jobs' page (at the query's offset, or after ``seek``), its start and whether rows follow."""
        if self.partitions.count == 1:
            return await seeking.list_page(self.executor(0), plan(query, self.partitions.keys[0]), seek)
        plans = self.plans(query)
        # Every partition's change log position first, so a watch from it misses nothing the page lacks.
        version = await self._version() if plans else None
        if seek is not None:
            page = await self._after(query, plans, seek)
            page.version = version
            more = len(page.jobs) > query.limit
            return msgspec.structs.replace(page, jobs=page.jobs[: query.limit]), seek.served, more
        page = await self._at_offset(query, plans)
        page.version = version
        return page, query.offset, query.offset + len(page.jobs) < page.total

    async def _version(self) -> str:
        """The vector of every partition's change log position (a merged watch's resume id)."""
        calls = [(i, last_change) for i in range(self.partitions.count)]
        replies = await self._each(calls)
        return format_vector([reply_position(r[0][0]) if r else ORIGIN for r in replies])

    async def counts(self, query: JobQuery) -> Counts:
        """Exact counts by status and origin of the jobs ``query``'s filters match, summed over partitions."""
        if self.partitions.count == 1:
            return await self.executor(0).counts(plan(query, self.partitions.keys[0]))
        plans = self.plans(query)
        parts = await asyncio.gather(*(self.executor(i).counts(p) for i, p in plans.items()))
        total = zero_counts()
        for c in parts:
            total.total += c.total
            for name, n in c.by_status.items():
                total.by_status[name] = total.by_status.get(name, 0) + n
            for name, n in c.by_origin.items():
                total.by_origin[name] = total.by_origin.get(name, 0) + n
        return total

    async def details(self, job_ids: Sequence[str]) -> list[JobDetail | None]:
        """These jobs in full, each read from its partition; None for unknown or not-yet-created ones."""
        return await self._by_partition(job_ids, lambda ex, ids: ex.details(ids))

    async def jobs(self, job_ids: Sequence[str]) -> list[Job | None]:
        """These jobs as the list renders them, each read from its partition; None for unknown ones."""
        return await self._by_partition(job_ids, lambda ex, ids: ex.jobs(ids))

    async def _by_partition(
        self, job_ids: Sequence[str], read: Callable[[Executor, list[str]], Awaitable[list[_J | None]]]
    ) -> list[_J | None]:
        count = self.partitions.count
        if count == 1:
            return await read(self.executor(0), list(job_ids))
        groups: dict[int, list[str]] = {}
        for job_id in job_ids:
            groups.setdefault(self.partitions.of(job_id), []).append(job_id)
        parts = await asyncio.gather(*(read(self.executor(i), ids) for i, ids in groups.items()))
        found: dict[str, _J | None] = {}
        for i, (ids, rendered) in zip(groups, zip(groups.values(), parts, strict=True), strict=True):
            for job_id, job in zip(ids, rendered, strict=True):
                found[job_id] = None if job is None else renumber([job], count, i)[0]
        return [found[job_id] for job_id in job_ids]

    # ---------------------------------------------------------------- P > 1

    async def _at_offset(self, query: JobQuery, plans: dict[int, Plan]) -> Listing:
        offset, limit, desc = query.offset, query.limit, query.direction.value == "DESC"
        count = self.partitions.count
        if not plans:
            return Listing(total=0, jobs=[], strategy="empty", position=None)
        first = next(iter(plans.values()))
        if offset + limit <= TOP_MERGE_MAX and by_rank(first):
            jobs, total = await self._by_rank({i: (p, 0) for i, p in plans.items()}, offset, limit)
            how = (
                f"scatter over {count} partitions: top {offset + limit} of each sort index, merged; {len(jobs)} records"
            )
            return Listing(total=total, jobs=jobs, strategy=how, position=None)
        if blockwise(first):
            # At any offset: a filtered top merge reads and renders offset + limit records of every partition.
            found = await block_page(self, plans, offset, limit)
            if found is not None:
                jobs, total, how = found
                how = f"scatter over {count} partitions ({len(plans)} asked): {how}"
                return Listing(total=total, jobs=jobs, strategy=how, position=None)
        if offset + limit <= TOP_MERGE_MAX or not searchable(first):
            top = {i: msgspec.structs.replace(p, offset=0, limit=offset + limit) for i, p in plans.items()}
            pages = await asyncio.gather(*(self._listing(i, p) for i, p in top.items()))
            jobs = merge([pg.jobs for pg in pages], query.order_by, desc, offset, limit)
            how = f"scatter over {count} partitions ({len(plans)} asked): top {offset + limit} of each, merged"
            return Listing(total=sum(pg.total for pg in pages), jobs=jobs, strategy=how, position=None)
        totals = await asyncio.gather(*(self.executor(i).total(p) for i, p in plans.items()))
        live = {i: (p, n) for (i, p), n in zip(plans.items(), totals, strict=True) if n}
        total = sum(totals)
        if offset >= total:
            how = f"scatter over {count} partitions: offset past the end"
            return Listing(total=total, jobs=[], strategy=how, position=None)
        jobs, how = await self._deep(offset, limit, live, desc, exact(first))
        how = f"scatter over {count} partitions ({len(live)} with matches): {how}"
        return Listing(total=total, jobs=jobs, strategy=how, position=None)

    async def _deep(
        self, offset: int, limit: int, live: dict[int, tuple[Plan, int]], desc: bool, by_row: bool
    ) -> tuple[list[Job], str]:
        """The page at a deep offset: the rank search, then each partition's rows from where it found."""
        first = next(iter(live.values()))[0]
        if by_row and by_rank(first):
            # Stop once the candidates fit a page per partition, and merge their index entries.
            rows = await self._search_rows(offset, live, desc, window=len(live) * limit)
            starts = {i: (p, before) for (i, (p, _)), before in zip(live.items(), rows.before, strict=True)}
            most = dict(zip(live, rows.widths, strict=True)) if rows.widths else None
            jobs, _ = await self._by_rank(starts, rows.skip, limit, most)
            return jobs, f"rank search of rows in {rows.rounds} rounds, then the index entries from there"
        value: Value
        if by_row:
            rows = await self._search_rows(offset, live, desc)
            value, found = rows.value[0], Found(rows.value[0], rows.before, rows.skip, rows.rounds)
        else:
            found = await self._search(offset, live, desc, window=len(live) * limit)
            value = found.value
        if found.widths is not None:
            # Stopped at small windows: each partition's rows from its window's start, by position.
            at = [
                self._listing(i, msgspec.structs.replace(p, offset=lo, limit=min(found.skip, w) + limit))
                for (i, (p, _)), lo, w in zip(live.items(), found.before, found.widths, strict=True)
            ]
            pages = [page.jobs for page in await asyncio.gather(*at)]
            jobs = merge(pages, first.order, desc, found.skip, limit)
            return jobs, f"rank search of values in {found.rounds} rounds, then each window from its start"
        reads = [
            self._from_value(i, p, value, before, found.skip + limit, positional=by_row)
            for (i, (p, _)), before in zip(live.items(), found.before, strict=True)
        ]
        jobs = merge(await asyncio.gather(*reads), first.order, desc, found.skip, limit)
        how = f"rank search of {'rows' if by_row else 'values'} in {found.rounds} rounds"
        return jobs, f"{how}, then {found.skip + limit} rows of each from there"

    async def _search(
        self, offset: int, live: dict[int, tuple[Plan, int]], desc: bool, window: int = 0
    ) -> Found[Value]:
        """The rank search over order values, each partition counting its matches (filters and all)."""
        parts = list(live.items())

        async def probe_one(j: int, rank: int) -> Value:
            i, (p, _) = parts[j]
            page = await self._listing(i, msgspec.structs.replace(p, offset=rank, limit=1))
            return row_value(page.jobs[0], p.order) if page.jobs else None

        async def probe(ranks: list[tuple[int, int]]) -> list[Value]:
            return list(await asyncio.gather(*(probe_one(j, r) for j, r in ranks)))

        async def count(values: list[Value]) -> list[list[tuple[int, int]]]:
            return [list(await asyncio.gather(*(self._count(i, p, n, v) for i, (p, n) in parts))) for v in values]

        sizes = [n for _, (_, n) in parts]
        return await rank_search(offset, sizes, probe, count, lambda v: value_key(v, desc), window=window)

    async def _search_rows(
        self, offset: int, live: dict[int, tuple[Plan, int]], desc: bool, window: int = 0
    ) -> Found[Row]:
        """The rank search over whole rows (value, id): every partition reads its probe, then counts
        every probe of the round in its sort index in one call (the closest probes on each side of the
        target bound the next round); each step one pipeline per server whatever P is."""
        parts = list(live.items())

        async def probe(ranks: list[tuple[int, int]]) -> list[Row]:
            def at(p: Plan, rank: int) -> Queue:
                index = p.order_zset
                assert index is not None
                return lambda pipe, ex: ex.scripts.sortread_on(pipe, index, "at", rank, int(p.desc))

            replies = await self._each([(parts[j][0], at(parts[j][1][0], r)) for j, r in ranks])
            return [(int(float(r[1])), uuid_text(r[0][:16])) if r else (None, NULL_ID) for r in replies]

        async def count(rows: list[Row]) -> list[list[tuple[int, int]]]:
            owners = [self.partitions.of(job_id) for _, job_id in rows]
            mine = [[i == o for o in owners] for i, _ in parts]
            replies = await self._each([(i, below(p, rows, m)) for (i, (p, _)), m in zip(parts, mine, strict=True)])
            by_part = [row_counts(p, n, rows, m, r) for (_, (p, n)), m, r in zip(parts, mine, replies, strict=True)]
            return [[counts[k] for counts in by_part] for k in range(len(rows))]

        sizes = [n for _, (_, n) in parts]
        return await rank_search(offset, sizes, probe, count, lambda r: key_of(*r, desc), len(parts), window)

    async def _after(self, query: JobQuery, plans: dict[int, Plan], seek: Seek) -> Listing:
        """Up to ``limit + 1`` rows after the seek's row (value, id), merged from every partition, and the total."""
        desc, order, n = query.direction.value == "DESC", query.order_by, query.limit + 1
        value: Value = seek.job_id if order is OrderBy.ID else seek.value
        cursor = key_of(value, seek.job_id, desc)
        first = next(iter(plans.values()), None)
        if first is not None and value is not None and by_rank(first):
            # Every row in the sort index: each partition reads from just past the cursor's row by rank.
            row: Row = (value, seek.job_id)
            owners = {i: [self.partitions.of(seek.job_id) == i] for i in plans}
            replies = await self._each([(i, below(p, [row], owners[i])) for i, p in plans.items()])
            starts = {
                i: (p, row_counts(p, 0, [row], owners[i], r)[0][1])
                for (i, p), r in zip(plans.items(), replies, strict=True)
            }
            jobs, total = await self._by_rank(starts, 0, n)
            how = f"scatter over {self.partitions.count} partitions: page token, by rank past its row in each index"
            return Listing(total=total, jobs=jobs, strategy=how, position=None)
        totals = await asyncio.gather(*(self.executor(i).total(p) for i, p in plans.items()))
        live = {i: p for (i, p), t in zip(plans.items(), totals, strict=True) if t}
        rows = await asyncio.gather(
            *(self._rows_after(i, p, value, seek.job_id, cursor, n, seek.served) for i, p in live.items())
        )
        jobs = merge(rows, order, desc, 0, n)
        how = f"scatter over {self.partitions.count} partitions ({len(live)} with matches): page token, after its row"
        return Listing(total=sum(totals), jobs=jobs, strategy=how, position=None)

    async def _rows_after(
        self, i: int, p: Plan, value: Value, job_id: str, cursor: SortKey, n: int, served: int
    ) -> list[Job]:
        """Partition ``i``'s first ``n`` rows of ``p`` after the row ``cursor``: read from the cursor's
        value on (its ties skipped by id), or, for an order the partition cannot count, from the start."""
        if value is not None and exact(p):
            # Every row counted in the sort index: read by rank just past the cursor's row.
            owner = [self.partitions.of(job_id) == i]
            (reply,) = await self._each([(i, below(p, [(value, job_id)], owner))])
            ((_, through),) = row_counts(p, 0, [(value, job_id)], owner, reply)
            page = await self._listing(i, msgspec.structs.replace(p, offset=through, limit=n))
            return page.jobs
        if value is None or searchable(p):
            before = 0
            if value is not None and p.order not in RANGED:
                before, _ = await self._count(i, p, 0, value)

            async def fetch(m: int) -> list[Job]:
                return await self._from_value(i, p, value, before, m)

            first = n
        else:

            async def fetch(m: int) -> list[Job]:
                return (await self._listing(i, msgspec.structs.replace(p, offset=0, limit=m))).jobs

            first = served + n
        m = first
        while True:
            rows = await fetch(m)
            kept = [job for job in rows if sort_key(job, p.order, p.desc) > cursor]
            if len(kept) >= n or len(rows) < m:
                return kept[:n]
            m *= 4
