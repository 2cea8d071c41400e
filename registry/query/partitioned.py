"""What a scatter reads in each partition (issue 14): its executor, calls pipelined per server, and the
counts and rows the rank search and page tokens need (registry/query/scatter.py puts them together).

Without filters a partition counts and reads in its sort index (SORTREAD 'below', 'at', 'rows') or, for
creation_order, its listed handles' bitmap; with filters it counts bitmap totals of the plan bounded on
the order key. Every pipelined step is one round trip per server whatever P is (``_each``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from registry.domain.model import Job
from registry.query.executor import Executor, Listing
from registry.query.merge import SortKey, Value, key_of, renumber
from registry.query.planner import AnyBit, Plan, Range
from registry.query.seek import RANGED, null_segment
from registry.query.spec import OrderBy
from registry.route import Route
from registry.settings import Settings

Row = tuple[Value, str]  # a row's place: its order value and id
Queue = Callable[[Any, Executor], None]  # queues one command of a partition on a pipeline of its server
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


class Partitioned:
    """A Route's partitions, each read through its own Executor on the client serving it now."""

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

    async def _listing(self, i: int, p: Plan) -> Listing:
        """Partition ``i``'s listing of ``p``, creation_order made global."""
        page = await self.executor(i).listing(p)
        return msgspec.structs.replace(page, jobs=renumber(page.jobs, self.partitions.count, i))

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
                job_id = uuid_text(member[:16])
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


def _uuid_bytes(job_id: str) -> bytes:
    return bytes.fromhex(job_id.replace("-", ""))


NULL_ID = "00000000-0000-0000-0000-000000000000"  # a probe among the nulls: the search counts them as one value


def uuid_text(raw: bytes) -> str:
    return str(uuid.UUID(bytes=raw))


def last_change(pipe: Any, ex: Executor) -> None:
    pipe.xrevrange(ex.keys.changes, count=1)


def by_rank(p: Plan) -> bool:
    """Whether every row of ``p`` is an entry of its order's sort index (no filter, no nulls): pages
    are then merged from the indexes' entries, and only the page's records read."""
    return exact(p) and p.nonnull is None


def _rows(p: Plan, start: int, count: int) -> Queue:
    index = p.order_zset
    assert index is not None
    return lambda pipe, ex: ex.scripts.sortread_on(pipe, index, "rows", start, count, int(p.desc))


def below(p: Plan, rows: Sequence[Row], owners: Sequence[bool]) -> Queue:
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


def row_counts(
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
