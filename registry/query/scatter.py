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
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec

from registry.domain.model import Job, JobDetail
from registry.live.changes import ORIGIN
from registry.live.merged import format_vector
from registry.query import seek as seeking
from registry.query.execute.counts import zero_counts
from registry.query.executor import Executor, Listing
from registry.query.merge import SortKey, Value, key_of, merge, renumber, row_value, sort_key, value_key
from registry.query.page_call import reply_position
from registry.query.planner import AnyBit, Plan, Range, plan
from registry.query.ranksearch import Found, rank_search
from registry.query.seek import RANGED, Seek, null_segment
from registry.query.spec import Counts, JobQuery, OrderBy
from registry.route import Route
from registry.settings import Settings

_J = TypeVar("_J", bound=Job)
Row = tuple[Value, str]  # a row's place: its order value and id
Queue = Callable[[Any, Executor], None]  # queues one command of a partition on a pipeline of its server
# Up to this offset + limit a page merges each partition's first offset + limit rows; deeper, the
# rank search (a few rounds of P probes and P counts) is cheaper than reading and rendering P times
# that many rows (docs/scaling.md "Queries across partitions", measured there).
TOP_MERGE_MAX = 1000
# Orders the partitions can count ranks in without a filter: their sort index counts values (and ids).
_COUNTED_UNFILTERED = frozenset({*RANGED, OrderBy.UPDATED_AT, OrderBy.ID})


def exact(p: Plan) -> bool:
    """Whether a partition counts the rows before a whole row (value, id): no filter, and a sort index
    with scores (not ``id``, whose values are already unique, nor ``creation_order``, which has none)."""
    return not p.predicates and p.order in _COUNTED_UNFILTERED and p.order is not OrderBy.ID


def searchable(p: Plan) -> bool:
    """Whether a partition can count its matches before an order value: a range filter on the order
    field (created_at, start/end_timestamp, runs) or, without filters, the order's sort index (or for
    creation_order the listed handles' bitmap)."""
    return p.order in RANGED or (not p.predicates and p.order in _COUNTED_UNFILTERED | {OrderBy.CREATION_ORDER})


class Scatter:
    """Runs job queries over a Route's partitions; with one partition, exactly today's Executor."""

    def __init__(self, route: Route, settings: Settings) -> None:
        self.route = route
        self.partitions = route.partitions
        self.settings = settings
        self._executors: list[Executor | None] = [None] * self.partitions.count

    def executor(self, i: int) -> Executor:
        """Partition ``i``'s executor, on the client the route serves it from now."""
        client = self.route.client(i)
        ex = self._executors[i]
        if ex is None or ex.redis is not client:
            ex = self._executors[i] = Executor(client, self.partitions.keys[i], self.settings)
        return ex

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
        calls = [(i, _last_change) for i in range(self.partitions.count)]
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

    async def _listing(self, i: int, p: Plan) -> Listing:
        """Partition ``i``'s listing of ``p``, creation_order made global."""
        page = await self.executor(i).listing(p)
        return msgspec.structs.replace(page, jobs=renumber(page.jobs, self.partitions.count, i))

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
            return [(int(float(r[1])), _uuid_text(r[0][:16])) if r else (None, _NULL_ID) for r in replies]

        async def count(rows: list[Row]) -> list[list[tuple[int, int]]]:
            owners = [self.partitions.of(job_id) for _, job_id in rows]
            mine = [[i == o for o in owners] for i, _ in parts]
            replies = await self._each([(i, _below(p, rows, m)) for (i, (p, _)), m in zip(parts, mine, strict=True)])
            by_part = [_row_counts(p, n, rows, m, r) for (_, (p, n)), m, r in zip(parts, mine, replies, strict=True)]
            return [[counts[k] for counts in by_part] for k in range(len(rows))]

        sizes = [n for _, (_, n) in parts]
        return await rank_search(offset, sizes, probe, count, lambda r: key_of(*r, desc), len(parts), window)

    async def _each(self, calls: Sequence[tuple[int, Queue]]) -> list[Any]:
        """One command per (partition, queue), queued on one pipeline per server and run together: a
        round trip per server whatever P is; the replies in the calls' order."""
        pipes: dict[int, tuple[Any, list[int]]] = {}
        for n, (i, queue) in enumerate(calls):
            ex = self.executor(i)
            await ex.scripts.load()
            pipe, slots = pipes.setdefault(id(ex.redis), (ex.redis.pipeline(transaction=False), []))
            queue(pipe, ex)
            slots.append(n)
        replies = await asyncio.gather(*(pipe.execute() for pipe, _ in pipes.values()))
        out: list[Any] = [None] * len(calls)
        for (_, slots), got in zip(pipes.values(), replies, strict=True):
            for n, reply in zip(slots, got, strict=True):
                out[n] = reply
        return out

    async def _count(self, i: int, p: Plan, n: int, value: Value) -> tuple[int, int]:
        """Partition ``i``'s matches of ``p`` (``n`` in all) ordered before ``value``, and up to it included."""
        ex = self.executor(i)
        if value is None:  # the nulls come after every value
            if p.nonnull is None:
                return n, n
            return await ex.total(msgspec.structs.replace(p, predicates=(*p.predicates, AnyBit((p.nonnull,))))), n
        if not p.predicates and p.order is OrderBy.CREATION_ORDER:
            assert isinstance(value, int)
            return await self._count_handles(i, p, value)
        if not p.predicates:
            return await self._count_index(ex, p, value)
        assert isinstance(value, int) and p.order in RANGED, (value, p.order)
        before, through = await asyncio.gather(
            ex.total(self._bounded(i, p, value, "before")),
            ex.total(self._bounded(i, p, value, "through")),
        )
        return before, through

    async def _count_handles(self, i: int, p: Plan, order: int) -> tuple[int, int]:
        """(before, through) of the global creation_order ``order`` among partition ``i``'s listed jobs
        (no filter): handle h is h * P + i, so a count of the listed handles' bits up to a handle."""
        count = self.partitions.count
        ex = self.executor(i)
        below = -(-(order - i) // count)  # the handles whose order is below ``order``: 0 .. below - 1
        pipe = ex.redis.pipeline(transaction=False)
        pipe.bitcount(ex.keys.all)
        pipe.bitcount(ex.keys.all, 0, below - 1, "BIT") if below > 0 else pipe.echo(0)
        total, lower = (int(x) for x in await pipe.execute())
        own = int(order % count == i)
        return (total - lower - own, total - lower) if p.desc else (lower, lower + own)

    async def _count_index(self, ex: Executor, p: Plan, value: int | str) -> tuple[int, int]:
        """(before, through) of ``value`` counted in the order's sort index (no filter: every entry matches)."""
        await ex.scripts.load()
        assert p.order_zset is not None
        pipe = ex.redis.pipeline(transaction=False)
        if isinstance(value, str):
            u = _uuid_bytes(value)
            lo, hi = (b"(" + u + b"\xff" * 4, b"[" + u) if p.desc else (b"(" + u, b"[" + u + b"\xff" * 4)
            bounds = [(lo, b"+"), (hi, b"+")] if p.desc else [(b"-", lo), (b"-", hi)]
            for a, b in bounds:
                ex.scripts.sortread_on(pipe, p.order_zset, "lexcount", a, b)
        else:
            bounds2 = [(f"({value}", "+inf"), (value, "+inf")] if p.desc else [("-inf", f"({value}"), ("-inf", value)]
            for a2, b2 in bounds2:
                ex.scripts.sortread_on(pipe, p.order_zset, "count", a2, b2)
        before, through = await pipe.execute()
        return int(before), int(through)

    def _bounded(self, i: int, p: Plan, value: int, side: str) -> Plan:
        """``p`` narrowed, in its order's direction, to the rows before ``value`` (side 'before'),
        up to it included ('through') or from it on ('from')."""
        keys = self.partitions.keys[i]
        field = p.order.value
        lo: int | None
        hi: int | None
        if side == "from":
            lo, hi = (None, value) if p.desc else (value, None)
        else:
            step = 1 if side == "before" else 0
            lo, hi = (value + step, None) if p.desc else (None, value - step)
        bound = Range(field, keys.sort(field), keys.column(field), p.nonnull is not None, lo, hi)  # type: ignore[arg-type]
        return msgspec.structs.replace(p, predicates=(*p.predicates, bound))

    async def _by_rank(
        self, starts: dict[int, tuple[Plan, int]], skip: int, limit: int, most: dict[int, int] | None = None
    ) -> tuple[list[Job], int]:
        """Rows ``skip`` .. ``skip + limit - 1`` of the merge of each partition's sort index from its
        start rank (no filter, no nulls: the index holds every row), and the entries in all. The
        entries (uuid, score) are merged first; only the page's records are read, by partition.
        ``most``: how many of a partition's entries past its start can come before the page."""
        most = most or {}
        calls = [(i, _rows(p, start, min(skip, most.get(i, skip)) + limit)) for i, (p, start) in starts.items()]
        replies = await self._each(calls)
        desc = next(iter(starts.values()))[0].desc
        entries: list[tuple[SortKey, int, str]] = []
        total = 0
        for (i, _), reply in zip(calls, replies, strict=True):
            total += int(reply[0])
            for member, score in zip(reply[1::2], reply[2::2], strict=True):
                job_id = _uuid_text(member[:16])
                entries.append((key_of(int(float(score)), job_id, desc), i, job_id))
        entries.sort()
        page = entries[skip : skip + limit]
        groups: dict[int, list[str]] = {}
        for _, i, job_id in page:
            groups.setdefault(i, []).append(job_id)
        reads = await asyncio.gather(*(self.executor(i).jobs(ids) for i, ids in groups.items()))
        found = {
            job.id: job
            for i, jobs in zip(groups, reads, strict=True)
            for job in renumber([j for j in jobs if j is not None], self.partitions.count, i)
        }
        return [found[job_id] for _, _, job_id in page if job_id in found], total

    async def _from_value(
        self, i: int, p: Plan, value: Value, before: int, n: int, *, positional: bool = False
    ) -> list[Job]:
        """Partition ``i``'s first ``n`` rows of ``p`` ordered at or after ``value`` (``before`` of
        its rows come earlier; ``positional``: read from there by rank, not by a range bound)."""
        keys = self.partitions.keys[i]
        if value is None:
            return (await self._listing(i, null_segment(p, keys, n))).jobs
        if positional or p.order not in RANGED:
            return (await self._listing(i, msgspec.structs.replace(p, offset=before, limit=n))).jobs
        assert isinstance(value, int)
        bounded = msgspec.structs.replace(self._bounded(i, p, value, "from"), offset=0, limit=n)
        jobs = (await self._listing(i, bounded)).jobs
        if p.nonnull is not None and len(jobs) < n:
            jobs += (await self._listing(i, null_segment(p, keys, n - len(jobs)))).jobs
        return jobs

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
            replies = await self._each([(i, _below(p, [row], owners[i])) for i, p in plans.items()])
            starts = {
                i: (p, _row_counts(p, 0, [row], owners[i], r)[0][1])
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
            (reply,) = await self._each([(i, _below(p, [(value, job_id)], owner))])
            ((_, through),) = _row_counts(p, 0, [(value, job_id)], owner, reply)
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


def _uuid_bytes(job_id: str) -> bytes:
    return bytes.fromhex(job_id.replace("-", ""))


_NULL_ID = "00000000-0000-0000-0000-000000000000"  # a probe among the nulls: the search counts them as one value


def _uuid_text(raw: bytes) -> str:
    return str(uuid.UUID(bytes=raw))


def _last_change(pipe: Any, ex: Executor) -> None:
    pipe.xrevrange(ex.keys.changes, count=1)


def by_rank(p: Plan) -> bool:
    """Whether every row of ``p`` is an entry of its order's sort index (no filter, no nulls): pages
    are then merged from the indexes' entries, and only the page's records read."""
    return exact(p) and p.nonnull is None


def _rows(p: Plan, start: int, count: int) -> Queue:
    index = p.order_zset
    assert index is not None
    return lambda pipe, ex: ex.scripts.sortread_on(pipe, index, "rows", start, count, int(p.desc))


def _below(p: Plan, rows: Sequence[Row], owners: Sequence[bool]) -> Queue:
    """SORTREAD 'below' each row (value, id) in the order's sort index, from the side that counts it
    (a null row counts nothing: the index holds no null). A row's entry, if any, is in its owner
    partition only: elsewhere no entry has its id, so the entries before it are those up to it."""
    index = p.order_zset
    assert index is not None
    args: list[int | str | bytes] = []
    for (value, job_id), owner in zip(rows, owners, strict=True):
        u = b"" if value is None else _uuid_bytes(job_id)
        args += [0 if value is None else value, u + b"\xff" * 4 if p.desc and owner else u]
    return lambda pipe, ex: ex.scripts.sortread_on(pipe, index, "below", *args)


def _row_counts(
    p: Plan, n: int, rows: Sequence[Row], owners: Sequence[bool], reply: Sequence[int]
) -> list[tuple[int, int]]:
    """A partition's rows (``n`` in all, no filter) before each row and up to it included, from its
    'below' reply; the nulls, which the sort index does not hold, counted as one value after all."""
    card, *below = (int(x) for x in reply)
    out = []
    for (value, _), owner, b in zip(rows, owners, below, strict=True):
        if value is None:
            out.append((card, n))
        else:
            before = card - b if p.desc else b
            out.append((before, before + owner))
    return out
