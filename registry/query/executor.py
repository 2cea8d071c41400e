"""The one executor: runs a Plan against Redis with bounded calls and returns the exact total and page."""

from __future__ import annotations

import bisect
import math
import re
import sys
import uuid as _uuid
from array import array
from collections.abc import Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis

from registry.domain.fold import to_detail, to_job
from registry.domain.model import Job, JobDetail, JobState, Origin, Status
from registry.keys import Keys
from registry.query import scripts
from registry.query.planner import (
    AnyBit,
    IdIn,
    IdPrefix,
    Members,
    NoBit,
    Plan,
    Predicate,
    Range,
    choose,
    prune,
    refine,
)
from registry.query.spec import Counts, OrderBy, Page
from registry.settings import Settings
from registry.store.indexes import RUNS_BITS, SECOND_BITS, SECOND_US, ZONE_FIELDS, ZONE_SIZE

_decode_state = msgspec.msgpack.Decoder(JobState).decode
_NONZERO = re.compile(rb"[^\x00]")
_CHUNK_BYTES = 4096
_TTL_MS = 60_000
_BOUND = 1 << 62  # an open end of a range: beyond any column value
# Rank selection narrows the value range until this few sort-set entries are left to walk.
_SELECT_STOP = 256
_MAX_STRADDLING = 24  # zone blocks a range may read value by value before the BSI is cheaper


def _packed(handles: Sequence[int]) -> bytes:
    """Handles as one script argument, four big-endian bytes each (see scripts._HANDLES)."""
    packed = array("I", handles)  # "I" is 4 bytes on every platform CPython supports
    if sys.byteorder == "little":
        packed.byteswap()
    return packed.tobytes()


def _i64s(data: bytes) -> list[int]:
    """A BITFIELD i64 column (big-endian) as integers."""
    values = array("q")
    values.frombytes(data[: len(data) // 8 * 8])
    if sys.byteorder == "little":
        values.byteswap()
    return values.tolist()


def _handle(member: bytes) -> int:
    return int.from_bytes(member[-4:], "big")


def _member_id(member: bytes) -> str:
    return str(_uuid.UUID(bytes=member[:16]))


# Bit offsets (MSB first, as Redis numbers bits) of each byte value.
_BITS_OF = [tuple(b for b in range(8) if v & (0x80 >> b)) for v in range(256)]


def bit_positions(data: bytes, skip: int, take: int, desc: bool) -> list[int]:
    """Handles of set bits in a bitmap, in handle order (or reverse), after skipping ``skip``.

    Popcounts whole 4 KiB chunks first, so a deep offset costs one pass over the bytes.
    """
    out: list[int] = []
    starts = range(0, len(data), _CHUNK_BYTES)
    for base in reversed(starts) if desc else starts:
        chunk = data[base : base + _CHUNK_BYTES]
        count = int.from_bytes(chunk, "big").bit_count()
        if skip >= count:
            skip -= count
            continue
        positions: list[int] = []
        for m in _NONZERO.finditer(chunk):
            first = (base + m.start()) * 8
            positions.extend([first + b for b in _BITS_OF[chunk[m.start()]]])
        if desc:
            positions.reverse()
        positions = positions[skip:]
        skip = 0
        out.extend(positions[: take - len(out)])
        if len(out) >= take:
            break
    return out


class Executor:
    """Runs plans; owns the query-path scripts and the temporary bitmaps a query builds."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, settings: Settings) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self._walk = redis.register_script(scripts.WALK)
        self._check = redis.register_script(scripts.CHECK)
        self._to_bitmap = redis.register_script(scripts.HANDLES_TO_BITMAP)
        self._range_to_bitmap = redis.register_script(scripts.RANGE_TO_BITMAP)
        self._uuids_of = redis.register_script(scripts.UUIDS)
        self._select = redis.register_script(scripts.SELECT)
        self._records = redis.register_script(scripts.RECORDS)
        self._loaded = False

    async def _load_scripts(self) -> None:
        # Loading up front (rather than on the first NOSCRIPT) keeps the first query fast
        # and avoids an error round trip that the embedded fakeredis server mishandles.
        for script in (
            self._walk,
            self._check,
            self._to_bitmap,
            self._range_to_bitmap,
            self._uuids_of,
            self._select,
            self._records,
        ):
            await self.redis.script_load(script.script)
        self._loaded = True

    # -- entry points -------------------------------------------------------------------

    async def run(self, plan: Plan) -> Page:
        if plan.empty:
            return Page(total=0, job_ids=[], strategy="empty")  # known empty without asking Redis anything
        if not self._loaded:
            await self._load_scripts()
        sizes = await self._sizes(plan.predicates)
        plan = prune(plan, sizes)
        strategy, driver = choose(plan, sizes, self.settings.candidate_threshold)
        if strategy == "empty":
            return Page(total=0, job_ids=[], strategy="empty")
        if strategy == "candidates":
            assert driver is not None
            return await self._candidates(plan, driver, sizes)
        temps: list[str] = []
        try:
            return await self._bitmap(plan, sizes, temps, no_filter=strategy == "rank")
        finally:
            if temps:
                await self.redis.delete(*temps)

    async def counts(self, plan: Plan) -> Counts:
        """Exact counts by status and origin of the jobs the plan's filters match (ordering and paging ignored).

        The filter bitmap is built as for a query; then one MULTI ANDs it with each status
        and origin bitmap and counts, so the counts are of one instant and add up to the total.
        Each command is one pass over a bitmap (125 KB per million jobs).
        """
        zero = Counts(total=0, by_status={s.value: 0 for s in Status}, by_origin={o.value: 0 for o in Origin})
        if plan.empty:
            return zero
        if not self._loaded:
            await self._load_scripts()
        sizes = await self._sizes(plan.predicates)
        plan = prune(plan, sizes)
        if plan.empty:
            return zero
        temps: list[str] = []
        try:
            f = await self._filter_bitmap(plan.predicates, sizes, temps)  # `all` when nothing filters
            scratch = self._temp(temps)
            pipe = self.redis.pipeline(transaction=True)
            pipe.bitcount(f)
            groups = [*((s, self.keys.status[s]) for s in Status), *((o, self.keys.origin[o]) for o in Origin)]
            for _, bitmap in groups:
                if f == self.keys.all:
                    pipe.bitcount(bitmap)  # every status/origin bitmap is within `all`
                else:
                    pipe.bitop("AND", scratch, f, bitmap)
                    pipe.bitcount(scratch)
            pipe.delete(scratch)
            replies = await pipe.execute()
            counts = replies[1:-1] if f == self.keys.all else replies[2:-1:2]
            by = dict(zip((name for name, _ in groups), (int(c) for c in counts), strict=True))
            return Counts(
                total=int(replies[0]),
                by_status={s.value: by[s] for s in Status},
                by_origin={o.value: by[o] for o in Origin},
            )
        finally:
            if temps:
                await self.redis.delete(*temps)

    async def jobs(self, job_ids: Sequence[str]) -> list[Job | None]:
        """Records of these jobs, rendered; None for unknown or not-yet-created ones."""
        return [to_job(state, h) if state else None for state, h in await self._states(job_ids)]

    async def details(self, job_ids: Sequence[str]) -> list[JobDetail | None]:
        """These jobs in full (results link and sequence included); None for unknown or not-yet-created ones."""
        return [to_detail(state, h) if state else None for state, h in await self._states(job_ids)]

    async def _states(self, job_ids: Sequence[str]) -> list[tuple[JobState | None, int]]:
        if not self._loaded:
            await self._load_scripts()
        if not job_ids:
            return []
        reply = await self._records(keys=[self.keys.job(job_id) for job_id in job_ids])
        return [
            (_decode_state(s), int(h)) if h and s else (None, 0) for h, s in zip(reply[::2], reply[1::2], strict=True)
        ]

    # -- cardinalities ------------------------------------------------------------------

    async def _sizes(self, predicates: Sequence[Predicate]) -> dict[str, int | None]:
        """Sizes of the candidate sources: SCARD, BITCOUNT of member bitmaps, ZLEXCOUNT."""
        pipe = self.redis.pipeline(transaction=False)
        names: list[str] = []
        for pred in predicates:
            if isinstance(pred, Members):
                for s, b in zip(pred.sets, pred.bitmaps, strict=True):
                    pipe.scard(s)
                    pipe.bitcount(b)
                    names += [s, b]
            elif isinstance(pred, IdPrefix):
                pipe.zlexcount(  # type: ignore[no-untyped-call]
                    self.keys.sort("id"), b"[" + pred.lo, b"[" + pred.hi + b"\xff" * 4
                )
                names.append(pred.text)
        if not names:
            return {}
        return dict(zip(names, await pipe.execute(), strict=True))

    # -- strategy: candidates -----------------------------------------------------------

    async def _candidate_handles(
        self, driver: Predicate, sizes: dict[str, int | None]
    ) -> tuple[list[int], dict[int, bytes]]:
        """The driver's handles, and the uuids of those it already names (ids, id prefix)."""
        if isinstance(driver, IdIn):
            pipe = self.redis.pipeline(transaction=False)
            for job_id in driver.ids:
                pipe.hget(self.keys.job(job_id), "h")
            known = {
                int(h): _uuid.UUID(job_id).bytes
                for job_id, h in zip(driver.ids, await pipe.execute(), strict=True)
                if h
            }
            return sorted(known), known
        if isinstance(driver, IdPrefix):
            members = await self.redis.zrangebylex(
                self.keys.sort("id"), b"[" + driver.lo, b"[" + driver.hi + b"\xff" * 4
            )
            known = {_handle(m): m[:16] for m in members}
            return sorted(known), known
        assert isinstance(driver, Members)
        pipe = self.redis.pipeline(transaction=False)
        for s, b in zip(driver.sets, driver.bitmaps, strict=True):
            if sizes.get(b):
                pipe.get(b)
            elif sizes.get(s):
                pipe.smembers(s)
        handles: set[int] = set()
        for reply in await pipe.execute():
            if isinstance(reply, bytes):
                handles.update(bit_positions(reply, 0, len(reply) * 8, False))
            else:
                handles.update(int(m) for m in reply)
        return sorted(handles), {}

    def _program(self, preds: Sequence[Predicate], keys: list[str]) -> list[str | int]:
        def ref(key: str) -> int:
            keys.append(key)
            return len(keys)

        prog: list[str | int] = []
        for pred in preds:
            if isinstance(pred, AnyBit):
                prog += ["A", len(pred.keys), *[ref(k) for k in pred.keys]]
            elif isinstance(pred, NoBit):
                prog += ["N", ref(pred.key)]
            elif isinstance(pred, Members):
                prog += ["M", len(pred.sets)]
                for s, b in zip(pred.sets, pred.bitmaps, strict=True):
                    prog += [ref(s), ref(b)]
            elif isinstance(pred, Range):
                lo = -_BOUND if pred.lo is None else pred.lo
                hi = _BOUND if pred.hi is None else pred.hi
                prog += ["R", ref(pred.column), lo, hi, int(pred.nullable)]
        return prog

    async def _candidates(self, plan: Plan, driver: Predicate, sizes: dict[str, int | None]) -> Page:
        handles, known = await self._candidate_handles(driver, sizes)
        what = driver.kind if isinstance(driver, Members) else "id" if isinstance(driver, IdIn) else "id prefix"
        others = [p for p in plan.predicates if p is not driver]
        how = f"candidates: {what} ({len(handles)} jobs) checked against {len(others)} other filters"
        return await self._collect(plan, handles, others, known, how)

    async def _collect(
        self,
        plan: Plan,
        handles: list[int],
        preds: Sequence[Predicate],
        known: dict[int, bytes] | None = None,
        how: str = "",
    ) -> Page:
        """Check ``handles`` against ``preds`` in bounded chunks, then order the matches and cut the page."""
        known = dict(known or {})
        id_sets = [{_uuid.UUID(i).bytes for i in p.ids} for p in preds if isinstance(p, IdIn)]
        prefixes = [p.text for p in preds if isinstance(p, IdPrefix)]
        by_id = plan.order is OrderBy.ID
        want_uuid = (by_id or bool(id_sets or prefixes)) and not (known and all(h in known for h in handles))
        nullable = plan.nonnull is not None
        present: list[tuple[Any, int]] = []
        nulls: list[int] = []
        step = self.settings.walk_chunk
        width = 3 if want_uuid else 2
        if not preds and plan.order is OrderBy.CREATION_ORDER:
            present = [(h, h) for h in handles]  # nothing to check and the handle is the order
            handles = []
        elif not preds and len(handles) > plan.offset + plan.limit and self._scan_pays(plan, len(handles), 0):
            page = await self._scan(plan, len(handles), handles=handles)
            return msgspec.structs.replace(page, strategy=f"{how}; {page.strategy}")
        for i in range(0, len(handles), step):
            keys = [self.keys.uuids, plan.order_column or ""]
            prog = self._program(preds, keys)
            chunk = handles[i : i + step]
            reply = await self._check(keys=keys, args=[_packed(chunk), int(want_uuid), *prog])
            for j in range(0, len(reply), width):
                h, value = int(reply[j]), int(reply[j + 1])
                if want_uuid:
                    known[h] = reply[j + 2]
                if id_sets or prefixes:
                    uid = known[h]
                    if any(uid not in ids for ids in id_sets):
                        continue
                    if any(not str(_uuid.UUID(bytes=uid)).startswith(p) for p in prefixes):
                        continue
                if by_id:
                    present.append((known[h], h))
                elif nullable and value == 0:
                    nulls.append(h)
                else:
                    present.append((value - 1 if nullable else value, h))
        total = len(present) + len(nulls)
        unique = plan.order in (OrderBy.ID, OrderBy.CREATION_ORDER)
        ids = await self._arrange(plan, present, nulls, known, unique)
        return Page(total=total, job_ids=ids, strategy=f"{how}; {total} matches sorted here")

    async def _arrange(
        self, plan: Plan, present: list[tuple[Any, int]], nulls: list[int], known: dict[int, bytes], unique: bool
    ) -> list[str]:
        """The page of (value, handle) rows ordered by (value, id), nulls last by id, both in the plan's direction.

        Only the rows whose order can depend on their id (equal values around the page, or
        nulls) need their uuid read.
        """
        lo, hi = plan.offset, plan.offset + plan.limit
        present.sort(key=lambda row: row[0], reverse=plan.desc)
        s, e = min(lo, len(present)), min(hi, len(present))
        if not unique and s < e:
            while s > 0 and present[s - 1][0] == present[s][0]:
                s -= 1
            while e < len(present) and present[e][0] == present[e - 1][0]:
                e += 1
        with_nulls = hi > len(present)
        need = [h for _, h in present[s:e]] + (nulls if with_nulls else [])
        known.update(await self._uuids([h for h in need if h not in known]))
        window = present[s:e] if unique else sorted(present[s:e], key=lambda r: (r[0], known[r[1]]), reverse=plan.desc)
        tail = sorted(nulls, key=known.__getitem__, reverse=plan.desc) if with_nulls else []
        ordered = [h for _, h in window] + tail
        return [str(_uuid.UUID(bytes=known[h])) for h in ordered[lo - s : hi - s]]

    async def _uuids(self, handles: list[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        for i in range(0, len(handles), self.settings.walk_chunk):
            chunk = handles[i : i + self.settings.walk_chunk]
            blob = await self._uuids_of(keys=[self.keys.uuids], args=[_packed(chunk)])
            out.update((h, blob[16 * k : 16 * k + 16]) for k, h in enumerate(chunk))
        return out

    # -- strategy: bitmaps --------------------------------------------------------------

    async def _bitmap(self, plan: Plan, sizes: dict[str, int | None], temps: list[str], *, no_filter: bool) -> Page:
        if no_filter:
            f = self.keys.all
        else:
            ranges = [p for p in plan.predicates if isinstance(p, Range)]
            f = await self._filter_bitmap([p for p in plan.predicates if not isinstance(p, Range)], sizes, temps)
            if ranges:
                # Ranges cost a BITOP per bit of the value; when the other filters leave few
                # jobs, checking those against the range columns is cheaper.
                few = int(await self.redis.bitcount(f))
                if few <= self.settings.candidate_threshold:
                    handles = bit_positions(await self.redis.get(f) or b"", 0, few, False)
                    how = f"bitmaps AND-ed to {few} jobs, checked against {len(ranges)} ranges"
                    return await self._collect(plan, handles, ranges, how=how)
                parts = [f, *[await self._range_bitmap(r, temps) for r in ranges]]
                f = await self._bitop("AND", parts, temps)
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.keys.seq)  # handles issued: how many jobs are listed
        pipe.bitcount(f)
        if plan.nonnull is not None:
            both = self._temp(temps)
            pipe.bitop("AND", both, f, plan.nonnull)
            pipe.bitcount(both)
            pipe.pexpire(both, _TTL_MS)
        counts = await pipe.execute()
        listed, total = int(counts[0] or 0), int(counts[1])
        first = total if plan.nonnull is None else int(counts[3])
        source = "all jobs" if no_filter else f"{len(plan.predicates)} filters as bitmaps"
        if plan.offset >= total:
            return Page(total=total, job_ids=[], strategy=f"{source}, counted; offset past the end")
        strategy = refine(plan, total, listed, self.settings.collect_threshold)
        if strategy != "bitmap-handles" and not no_filter and self._scan_pays(plan, total, listed):
            page = await self._scan(plan, total, bitmap=f)
            return msgspec.structs.replace(page, strategy=f"{source}, counted; {page.strategy}")
        if strategy == "bitmap-collect":
            handles = bit_positions(await self.redis.get(f) or b"", 0, total, False)
            return await self._collect(plan, handles, [], how=f"{source}, counted")
        if strategy == "bitmap-handles":
            data = await self.redis.get(f) or b""
            handles = bit_positions(data, plan.offset, plan.limit, plan.desc)
            how = f"{source}, counted; page read from the bitmap in handle order"
            return Page(total=total, job_ids=await self._ids_of(handles), strategy=how)
        # Walk: the sort set for jobs with a value, then (nullable orders) the rest by id.
        assert plan.order_zset is not None
        members: list[bytes] = []
        skip, need = plan.offset, plan.limit
        how = f"{source}, counted; page by rank in the sort set"
        if skip < first:
            if no_filter:
                members = await self._zrange(plan.order_zset, plan.desc, skip, need)
            else:
                rank = 0
                how = f"{source}, counted; sort set walked from rank 0"
                if skip > self.settings.select_offset and plan.order_bsi is not None:
                    rank, skip = await self._select_start(plan, f, first, skip, temps)
                    how = f"{source}, counted; start rank {rank} selected by counting over the {plan.order_bsi} BSI"
                members = await self._walk_segment(plan.order_zset, plan.desc, [f], [], skip, need, rank)
            skip = 0
        else:
            skip -= first
        if len(members) < need and plan.nonnull is not None:
            members += await self._walk_segment(
                self.keys.sort("id"), plan.desc, [f], [plan.nonnull], skip, need - len(members)
            )
        return Page(total=total, job_ids=[_member_id(m) for m in members], strategy=how)

    def _scan_pays(self, plan: Plan, total: int, listed: int) -> bool:
        """Whether to scan in handle order (see _scan) rather than walk the sort set or read every match.

        A scan reads the page's matches plus the rest of the blocks they sit in; a walk reads
        (offset + limit) * listed / total sort-set entries (``listed`` 0: no walk to compare with).
        """
        if plan.order.value not in ZONE_FIELDS or plan.nonnull is not None:
            return False  # nullable orders end with their nulls, which no zone bounds
        k = plan.offset + plan.limit
        if k > self.settings.select_offset:
            return False
        if not listed:
            return True
        scan = k + total / listed * ZONE_SIZE
        walk = k * listed / max(total, 1)
        return walk > 2 * scan

    async def _scan(self, plan: Plan, total: int, *, bitmap: str = "", handles: Sequence[int] = ()) -> Page:
        """The page, from the matches (a bitmap, or sorted handles) read block by block in handle order.

        Handles follow arrival and so does the order field, so the first blocks read (the
        newest for DESC, the oldest for ASC) hold the page. The zone map bounds what every
        unread block could hold; once the page's last value beats that bound, the rest of
        the matches cannot enter the page and are never read.
        """
        field, desc, k = plan.order.value, plan.desc, plan.offset + plan.limit
        zone = self.keys.zone_max(field) if desc else self.keys.zone_min(field)
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(zone)
        pipe.get(self.keys.seq)
        raw, seq = await pipe.execute()
        bounds = _i64s(raw or b"")
        n_blocks = int(seq or 0) // ZONE_SIZE + 1
        bounds += [0] * (n_blocks - len(bounds))
        # rest[b]: the best value any block before b (in scan order) could hold.
        order = range(n_blocks - 1, -1, -1) if desc else range(n_blocks)
        rest: list[float] = [0.0] * (n_blocks + 1)
        best = -math.inf if desc else math.inf
        for b in reversed(order):
            rest[b] = best
            v = bounds[b]
            if desc:
                best = max(best, v)
            elif v:
                best = min(best, v - 1)
        present: list[tuple[Any, int]] = []
        blocks = list(order)
        # First read: about as many blocks as hold the page at the matches' density.
        i, rounds = 0, 0
        step = max(1, math.ceil(k * n_blocks / max(total, 1)))
        sorted_handles = list(handles)
        while i < len(blocks):
            chunk = blocks[i : i + step]
            i += len(chunk)
            rounds += 1
            lo_b, hi_b = min(chunk), max(chunk) + 1
            if bitmap:
                data = await self.redis.getrange(bitmap, lo_b * ZONE_SIZE // 8, hi_b * ZONE_SIZE // 8 - 1)
                found = [lo_b * ZONE_SIZE + p for p in bit_positions(data, 0, len(data) * 8, False)]
            else:
                found = sorted_handles[
                    bisect.bisect_left(sorted_handles, lo_b * ZONE_SIZE) : bisect.bisect_left(
                        sorted_handles, hi_b * ZONE_SIZE
                    )
                ]
            present += await self._values(plan, found)
            step = min(step * 4, 256)
            if len(present) >= k:
                present.sort(key=lambda row: row[0], reverse=desc)
                kth = present[k - 1][0]
                bound = rest[chunk[-1]]
                if (kth > bound) if desc else (kth < bound):
                    break
        ids = await self._arrange(plan, present, [], {}, False)
        how = f"scanned {len(present)} matches in handle order in {rounds} reads, bounded by the {field} zone map"
        return Page(total=total, job_ids=ids, strategy=how)

    async def _values(self, plan: Plan, handles: list[int]) -> list[tuple[Any, int]]:
        """(order value, handle) of each handle, read from the order field's column."""
        out: list[tuple[Any, int]] = []
        for i in range(0, len(handles), self.settings.walk_chunk):
            chunk = handles[i : i + self.settings.walk_chunk]
            reply = await self._check(keys=[self.keys.uuids, plan.order_column or ""], args=[_packed(chunk), 0])
            out += [(int(reply[j + 1]), int(reply[j])) for j in range(0, len(reply), 2)]
        return out

    async def _select_start(self, plan: Plan, f: str, count: int, skip: int, temps: list[str]) -> tuple[int, int]:
        """(rank to start walking at, matches left to skip there) for a deep offset, by BSI rank selection."""
        assert plan.order_bsi is not None and plan.order_zset is not None
        width, scale = (RUNS_BITS, 1) if plan.order_bsi == "runs" else (SECOND_BITS, SECOND_US)
        slices = [self.keys.slice(plan.order_bsi, i) for i in reversed(range(width))]
        present = await self._present(slices)
        bits = [(k, width - 1 - i) for i, (k, ok) in enumerate(zip(slices, present, strict=True)) if ok]
        cand, scratch = self._temp(temps), self._temp(temps)
        pipe = self.redis.pipeline(transaction=False)
        pipe.bitop("AND", cand, f, plan.nonnull or self.keys.all)
        pipe.pexpire(cand, _TTL_MS)
        await pipe.execute()
        rank, above = await self._select(
            keys=[cand, scratch, plan.order_zset, *[k for k, _ in bits]],
            args=[skip, int(plan.desc), scale, _SELECT_STOP, count, *[b for _, b in bits]],
        )
        await self.redis.pexpire(scratch, _TTL_MS)
        return int(rank), skip - int(above)

    async def _zrange(self, zset: str, desc: bool, start: int, count: int) -> list[bytes]:
        fn = self.redis.zrevrange if desc else self.redis.zrange
        result: list[bytes] = await fn(zset, start, start + count - 1)
        return result

    async def _walk_segment(
        self, zset: str, desc: bool, require: list[str], exclude: list[str], skip: int, need: int, rank: int = 0
    ) -> list[bytes]:
        out: list[bytes] = []
        while True:
            reply = await self._walk(
                keys=[zset, *require, *exclude],
                args=[rank, self.settings.walk_chunk, int(desc), len(require), skip + need],
            )
            rank, exhausted, matches = int(reply[0]), int(reply[1]), reply[2:]
            if skip:
                dropped = min(skip, len(matches))
                matches = matches[dropped:]
                skip -= dropped
            out += matches[: need - len(out)]
            if len(out) >= need or exhausted:
                return out

    async def _ids_of(self, handles: list[int]) -> list[str]:
        uuids = await self._uuids(handles)
        return [str(_uuid.UUID(bytes=uuids[h])) for h in handles]

    def _temp(self, temps: list[str]) -> str:
        key = self.keys.temp()
        temps.append(key)
        return key

    async def _filter_bitmap(self, preds: Sequence[Predicate], sizes: dict[str, int | None], temps: list[str]) -> str:
        """AND of one bitmap per predicate, built with pipelined BITOPs and bounded scripts."""
        if not preds:
            return self.keys.all
        parts: list[str] = [self.keys.all]
        for pred in preds:
            parts.append(await self._predicate_bitmap(pred, sizes, temps))
        out = self._temp(temps)
        pipe = self.redis.pipeline(transaction=False)
        pipe.bitop("AND", out, *parts)
        pipe.pexpire(out, _TTL_MS)
        await pipe.execute()
        return out

    async def _predicate_bitmap(self, pred: Predicate, sizes: dict[str, int | None], temps: list[str]) -> str:
        if isinstance(pred, AnyBit):
            if len(pred.keys) == 1:
                return pred.keys[0]
            return await self._bitop("OR", list(pred.keys), temps)
        if isinstance(pred, NoBit):
            has = await self._bitop("AND", [self.keys.all, pred.key], temps)
            return await self._bitop("XOR", [self.keys.all, has], temps)
        if isinstance(pred, Members):
            sources = [b for b in pred.bitmaps if sizes[b]]
            small = [s for s, b in zip(pred.sets, pred.bitmaps, strict=True) if not sizes[b] and sizes[s]]
            if small:
                sources.append(await self._sets_bitmap(small, temps))
            if not sources:
                return self._temp(temps)  # never written: the empty bitmap
            return sources[0] if len(sources) == 1 else await self._bitop("OR", sources, temps)
        if isinstance(pred, IdIn):
            tmp = self._temp(temps)
            handles, _ = await self._candidate_handles(pred, sizes)
            if handles:
                await self._to_bitmap(keys=[tmp], args=[_packed(handles)])
            return tmp
        if isinstance(pred, IdPrefix):
            tmp = self._temp(temps)
            lo, hi = b"[" + pred.lo, b"[" + pred.hi + b"\xff" * 4
            await self._range_into(tmp, self.keys.sort("id"), "lex", lo, hi)
            return tmp
        assert isinstance(pred, Range)
        return await self._range_bitmap(pred, temps)

    async def _sets_bitmap(self, sets: list[str], temps: list[str]) -> str:
        """One bitmap of the union of small member sets, built here and written with one SET.

        A user in many projects has many small sets; reading them (each below the bitmap
        threshold) and setting the bits in Python beats one SETBIT per member in Lua.
        """
        pipe = self.redis.pipeline(transaction=False)
        for s in sets:
            pipe.smembers(s)
        handles = [int(m) for members in await pipe.execute() for m in members]
        bits = bytearray((max(handles, default=0) >> 3) + 1)
        for h in handles:
            bits[h >> 3] |= 0x80 >> (h & 7)  # Redis bit 0 is the high bit of byte 0
        dest = self._temp(temps)
        await self.redis.set(dest, bytes(bits), px=_TTL_MS)
        return dest

    async def _range_into(self, dest: str, zset: str, kind: str, lo: Any, hi: Any) -> None:
        offset, step = 0, self.settings.walk_chunk
        while True:
            n = int(await self._range_to_bitmap(keys=[dest, zset], args=[kind, lo, hi, offset, step]))
            offset += n
            if n < step:
                return

    async def _bitop(self, op: str, sources: list[str], temps: list[str]) -> str:
        dest = self._temp(temps)
        pipe = self.redis.pipeline(transaction=False)
        pipe.bitop(op, dest, *sources)
        pipe.pexpire(dest, _TTL_MS)
        await pipe.execute()
        return dest

    async def _range_bitmap(self, pred: Range, temps: list[str]) -> str:
        """The jobs in a range: from the zone map when its blocks decide almost all of them, else by BSI."""
        if pred.field != "runs":
            zoned = await self._zone_range_bitmap(pred, temps)
            if zoned is not None:
                return zoned
        return await self._bsi_range_bitmap(pred, temps)

    async def _zone_range_bitmap(self, pred: Range, temps: list[str]) -> str | None:
        """Blocks whose bounds lie inside the range are taken whole, blocks outside skipped, and only
        the few straddling a boundary read from the column; None when too many straddle."""
        field = pred.column.rsplit(":", 1)[-1]
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.keys.zone_max(field))
        pipe.get(self.keys.zone_min(field))
        highs, lows = (_i64s(raw or b"") for raw in await pipe.execute())
        lo = -math.inf if pred.lo is None else pred.lo
        hi = math.inf if pred.hi is None else pred.hi
        whole: list[int] = []
        straddling: list[int] = []
        for b, (high, low) in enumerate(zip(highs, lows, strict=False)):
            if low == 0 or high < lo or low - 1 > hi:
                continue  # no value in the block, or none in range
            (whole if lo <= low - 1 and high <= hi else straddling).append(b)
        if len(straddling) > _MAX_STRADDLING:
            return None
        block_bytes = ZONE_SIZE // 8
        bits = bytearray(len(highs) * block_bytes)
        for b in whole:
            bits[b * block_bytes : (b + 1) * block_bytes] = b"\xff" * block_bytes
        pipe = self.redis.pipeline(transaction=False)
        for b in straddling:
            pipe.getrange(pred.column, b * ZONE_SIZE * 8, (b + 1) * ZONE_SIZE * 8 - 1)
        # Nullable columns hold value + 1 (0 for null, which no range admits).
        shift = 1 if pred.nullable else 0
        low_stored, high_stored = max(lo + shift, shift), hi + shift
        for b, raw in zip(straddling, await pipe.execute(), strict=True):
            base = b * ZONE_SIZE
            for j in [j for j, v in enumerate(_i64s(raw)) if low_stored <= v <= high_stored]:
                h = base + j
                bits[h >> 3] |= 0x80 >> (h & 7)
        dest = self._temp(temps)
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(dest, bytes(bits), px=_TTL_MS)
        # Whole blocks include their jobs without a value (null start or end): drop them.
        nonnull = self.keys.started if pred.field == "start" else self.keys.ended
        pipe.bitop("AND", dest, dest, nonnull)
        await pipe.execute()
        return dest

    async def _bsi_range_bitmap(self, pred: Range, temps: list[str]) -> str:
        """A range over a bit-sliced index, exact to the second, plus the boundary second from the sort set."""
        if pred.field == "runs":
            width, exists, scale = RUNS_BITS, self.keys.all, 1
        else:
            width, scale = SECOND_BITS, SECOND_US
            exists = self.keys.started if pred.field == "start" else self.keys.ended
        slices = [self.keys.slice(pred.field, i) for i in range(width)]
        present = await self._present(slices)
        parts: list[str] = []
        if pred.lo is not None:
            lo = -(-pred.lo // scale)  # whole units >= lo
            parts.append(await self._bsi_compare(slices, present, exists, lo, ge=True, temps=temps))
        if pred.hi is not None:
            hi = (pred.hi + 1) // scale - 1  # whole units entirely <= hi
            parts.append(await self._bsi_compare(slices, present, exists, hi, ge=False, temps=temps))
        result = parts[0] if len(parts) == 1 else await self._bitop("AND", parts, temps)
        if scale == 1:
            return result
        # The partial second at the boundary, read exactly from the sort set (a few jobs).
        boundary = self._temp(temps)
        if pred.lo is not None:
            await self._range_into(boundary, pred.zset, "score", pred.lo, lo * scale - 1)
        if pred.hi is not None:
            await self._range_into(boundary, pred.zset, "score", (hi + 1) * scale, pred.hi)
        return await self._bitop("OR", [result, boundary], temps)

    async def _present(self, keys: list[str]) -> list[bool]:
        pipe = self.redis.pipeline(transaction=False)
        for k in keys:
            pipe.exists(k)
        return [bool(x) for x in await pipe.execute()]

    async def _bsi_compare(
        self,
        slices: list[str],
        present: list[bool],
        exists: str,
        c: int,
        *,
        ge: bool,
        temps: list[str],
    ) -> str:
        """Jobs with value >= c (ge) or <= c, by O'Neil's bit-sliced comparison.

        Uses only AND/OR/XOR (``eq AND NOT b`` is ``eq XOR (eq AND b)``), because BITOP NOT
        of a short bitmap would miss the handles past its end.
        """
        if c < 0:
            return exists if ge else self._temp(temps)
        if c >= 1 << len(slices):
            return self._temp(temps) if ge else exists
        acc = self._temp(temps)  # GT (ge) or LT (le), starts empty
        eq = self._temp(temps)
        t = self._temp(temps)
        n = self._temp(temps)
        pipe = self.redis.pipeline(transaction=False)
        pipe.bitop("OR", eq, exists)
        eq_empty = False
        for i in reversed(range(len(slices))):
            bit = (c >> i) & 1
            b = slices[i]
            if not present[i]:
                if bit:
                    if not ge:
                        pipe.bitop("OR", acc, acc, eq)
                    eq_empty = True
                    break
                continue
            pipe.bitop("AND", t, eq, b)
            if ge and bit:
                pipe.bitop("OR", eq, t)
            elif ge:
                pipe.bitop("OR", acc, acc, t)  # above c from here on
                pipe.bitop("XOR", eq, eq, t)
            elif bit:
                pipe.bitop("XOR", n, eq, t)  # eq AND NOT b: below c from here on
                pipe.bitop("OR", acc, acc, n)
                pipe.bitop("OR", eq, t)
            else:
                pipe.bitop("XOR", eq, eq, t)
        if not eq_empty:
            pipe.bitop("OR", acc, acc, eq)
        for k in (acc, eq, t, n):
            pipe.pexpire(k, _TTL_MS)
        await pipe.execute()
        return acc
