"""The one executor: runs a Plan against Redis with bounded calls and returns the exact total and page."""

from __future__ import annotations

import re
import uuid as _uuid
from collections.abc import Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis

from registry import scripts
from registry.fold import to_job
from registry.indexes import RUNS_BITS, SECOND_BITS, SECOND_US
from registry.keys import Keys
from registry.model import Job, JobState, Origin, Status
from registry.planner import (
    AnyBit,
    IdIn,
    IdPrefix,
    Members,
    NoBit,
    Plan,
    Predicate,
    Range,
    choose,
    refine,
)
from registry.query import Counts, Page
from registry.settings import Settings

_decode_state = msgspec.msgpack.Decoder(JobState).decode
_NONZERO = re.compile(rb"[^\x00]")
_CHUNK_BYTES = 4096
_TTL_MS = 60_000
LO, HI = "-1e300", "1e300"


def _handle(member: bytes) -> int:
    return int.from_bytes(member[-4:], "big")


def _member_id(member: bytes) -> str:
    return str(_uuid.UUID(bytes=member[:16]))


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
            byte = chunk[m.start()]
            first = (base + m.start()) * 8
            positions.extend(first + b for b in range(8) if byte & (0x80 >> b))
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
        self._loaded = False

    async def _load_scripts(self) -> None:
        # Loading up front (rather than on the first NOSCRIPT) keeps the first query fast
        # and avoids an error round trip that the embedded fakeredis server mishandles.
        for script in (self._walk, self._check, self._to_bitmap, self._range_to_bitmap):
            await self.redis.script_load(script.script)
        self._loaded = True

    # -- entry points -------------------------------------------------------------------

    async def run(self, plan: Plan) -> Page:
        if not self._loaded:
            await self._load_scripts()
        sizes = await self._sizes(plan.predicates)
        strategy, driver = choose(plan, sizes, self.settings.collect_threshold)
        if strategy == "empty":
            return Page(total=0, job_ids=[])
        if strategy == "candidates":
            assert driver is not None
            return await self._candidates(plan, driver)
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
        if not self._loaded:
            await self._load_scripts()
        if plan.empty:
            return Counts(total=0, by_status={s.value: 0 for s in Status}, by_origin={o.value: 0 for o in Origin})
        temps: list[str] = []
        try:
            f = self.keys.all
            if plan.predicates:
                f = await self._filter_bitmap(plan, await self._sizes(plan.predicates), temps)
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
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(self.keys.job(job_id), ["h", "s"])
        out: list[Job | None] = []
        for h, s in await pipe.execute():
            out.append(to_job(_decode_state(s), int(h)) if h and s else None)
        return out

    # -- cardinalities ------------------------------------------------------------------

    async def _sizes(self, predicates: Sequence[Predicate]) -> dict[str, int | None]:
        """O(1)/O(log n) sizes of the candidate sources: SCARD, EXISTS, ZLEXCOUNT."""
        pipe = self.redis.pipeline(transaction=False)
        names: list[str] = []
        for pred in predicates:
            if isinstance(pred, Members):
                for s, b in zip(pred.sets, pred.bitmaps, strict=True):
                    pipe.scard(s)
                    pipe.exists(b)
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

    async def _candidate_handles(self, driver: Predicate) -> list[int]:
        if isinstance(driver, IdIn):
            pipe = self.redis.pipeline(transaction=False)
            for job_id in driver.ids:
                pipe.hget(self.keys.job(job_id), "h")
            return [int(h) for h in await pipe.execute() if h]
        if isinstance(driver, IdPrefix):
            members = await self.redis.zrangebylex(
                self.keys.sort("id"), b"[" + driver.lo, b"[" + driver.hi + b"\xff" * 4
            )
            return [_handle(m) for m in members]
        assert isinstance(driver, Members)
        pipe = self.redis.pipeline(transaction=False)
        for s in driver.sets:
            pipe.smembers(s)
        handles: set[int] = set()
        for members in await pipe.execute():
            handles.update(int(m) for m in members)
        return sorted(handles)

    def _program(self, plan: Plan, keys: list[str]) -> list[str | int]:
        def ref(key: str) -> int:
            keys.append(key)
            return len(keys)

        prog: list[str | int] = []
        for pred in plan.predicates:
            if isinstance(pred, AnyBit):
                prog += ["A", len(pred.keys), *[ref(k) for k in pred.keys]]
            elif isinstance(pred, NoBit):
                prog += ["N", ref(pred.key)]
            elif isinstance(pred, Members):
                prog += ["M", len(pred.sets)]
                for s, b in zip(pred.sets, pred.bitmaps, strict=True):
                    prog += [ref(s), ref(b)]
            elif isinstance(pred, Range):
                lo = LO if pred.lo is None else str(pred.lo)
                hi = HI if pred.hi is None else str(pred.hi)
                prog += ["R", ref(pred.zset), lo, hi]
        return prog

    async def _candidates(self, plan: Plan, driver: Predicate) -> Page:
        handles = await self._candidate_handles(driver)
        id_sets = [set(p.ids) for p in plan.predicates if isinstance(p, IdIn)]
        prefixes = [p.text for p in plan.predicates if isinstance(p, IdPrefix)]
        rows: list[tuple[float | None, bytes]] = []
        step = self.settings.walk_chunk
        for i in range(0, len(handles), step):
            keys = [self.keys.uuids, plan.order_zset or ""]
            prog = self._program(plan, keys)
            chunk = handles[i : i + step]
            reply = await self._check(keys=keys, args=[len(chunk), *chunk, *prog])
            for member, score in zip(reply[::2], reply[1::2], strict=True):
                job_id = _member_id(member)
                if any(job_id not in ids for ids in id_sets):
                    continue
                if any(not job_id.startswith(p) for p in prefixes):
                    continue
                rows.append((float(score) if score else None, member))
        return Page(total=len(rows), job_ids=self._sorted_page(plan, rows))

    @staticmethod
    def _sorted_page(plan: Plan, rows: list[tuple[float | None, bytes]]) -> list[str]:
        present = sorted(((s, m[:16]) for s, m in rows if s is not None), reverse=plan.desc)
        nulls = sorted((m[:16] for s, m in rows if s is None), reverse=plan.desc)
        ordered = [m for _, m in present] + nulls
        page = ordered[plan.offset : plan.offset + plan.limit]
        return [str(_uuid.UUID(bytes=m)) for m in page]

    # -- strategy: bitmaps --------------------------------------------------------------

    async def _bitmap(self, plan: Plan, sizes: dict[str, int | None], temps: list[str], *, no_filter: bool) -> Page:
        f = self.keys.all if no_filter else await self._filter_bitmap(plan, sizes, temps)
        if plan.nonnull is None:
            total = int(await self.redis.bitcount(f))
            first = total
        else:
            both = self._temp(temps)
            pipe = self.redis.pipeline(transaction=False)
            pipe.bitcount(f)
            pipe.bitop("AND", both, f, plan.nonnull)
            pipe.bitcount(both)
            pipe.pexpire(both, _TTL_MS)
            total, _, first, _ = await pipe.execute()
        if plan.offset >= total:
            return Page(total=total, job_ids=[])
        strategy = refine(plan, total, self.settings.collect_threshold)
        if strategy == "bitmap-collect":
            handles = bit_positions(await self.redis.get(f) or b"", 0, total, False)
            rows: list[tuple[float | None, bytes]] = []
            for i in range(0, len(handles), self.settings.walk_chunk):
                chunk = handles[i : i + self.settings.walk_chunk]
                keys = [self.keys.uuids, plan.order_zset or ""]
                reply = await self._check(keys=keys, args=[len(chunk), *chunk])
                rows += [(float(s) if s else None, m) for m, s in zip(reply[::2], reply[1::2], strict=True)]
            return Page(total=total, job_ids=self._sorted_page(plan, rows))
        if strategy == "bitmap-handles":
            data = await self.redis.get(f) or b""
            handles = bit_positions(data, plan.offset, plan.limit, plan.desc)
            return Page(total=total, job_ids=await self._ids_of(handles))
        # Walk: the sort set for jobs with a value, then (nullable orders) the rest by id.
        assert plan.order_zset is not None
        members: list[bytes] = []
        skip, need = plan.offset, plan.limit
        segments: list[tuple[str, list[str], list[str], int]] = []
        if plan.nonnull is None:
            segments.append((plan.order_zset, [f], [], total))
        else:
            segments.append((plan.order_zset, [f], [], first))
            segments.append((self.keys.sort("id"), [f], [plan.nonnull], total - first))
        for zset, require, exclude, count in segments:
            if need <= 0:
                break
            if skip >= count:
                skip -= count
                continue
            if no_filter and not exclude:
                got = await self._zrange(zset, plan.desc, skip, need)
            else:
                got = await self._walk_segment(zset, plan.desc, require, exclude, skip, need)
            members += got
            need -= len(got)
            skip = 0
        return Page(total=total, job_ids=[_member_id(m) for m in members])

    async def _zrange(self, zset: str, desc: bool, start: int, count: int) -> list[bytes]:
        fn = self.redis.zrevrange if desc else self.redis.zrange
        result: list[bytes] = await fn(zset, start, start + count - 1)
        return result

    async def _walk_segment(
        self, zset: str, desc: bool, require: list[str], exclude: list[str], skip: int, need: int
    ) -> list[bytes]:
        rank, out = 0, list[bytes]()
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
        pipe = self.redis.pipeline(transaction=False)
        for h in handles:
            pipe.getrange(self.keys.uuids, h * 16, h * 16 + 15)
        return [str(_uuid.UUID(bytes=b)) for b in await pipe.execute()]

    def _temp(self, temps: list[str]) -> str:
        key = self.keys.temp()
        temps.append(key)
        return key

    async def _filter_bitmap(self, plan: Plan, sizes: dict[str, int | None], temps: list[str]) -> str:
        """AND of one bitmap per predicate, built with pipelined BITOPs and bounded scripts."""
        parts: list[str] = [self.keys.all]
        for pred in plan.predicates:
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
            sources: list[str] = []
            for s, b in zip(pred.sets, pred.bitmaps, strict=True):
                if sizes[b]:
                    sources.append(b)
                elif sizes[s]:
                    tmp = self._temp(temps)
                    await self._to_bitmap(keys=[tmp, s], args=[])
                    sources.append(tmp)
            if not sources:
                return self._temp(temps)  # never written: the empty bitmap
            return sources[0] if len(sources) == 1 else await self._bitop("OR", sources, temps)
        if isinstance(pred, IdIn):
            tmp = self._temp(temps)
            handles = await self._candidate_handles(pred)
            if handles:
                await self._to_bitmap(keys=[tmp], args=handles)
            return tmp
        if isinstance(pred, IdPrefix):
            tmp = self._temp(temps)
            lo, hi = b"[" + pred.lo, b"[" + pred.hi + b"\xff" * 4
            await self._range_into(tmp, self.keys.sort("id"), "lex", lo, hi)
            return tmp
        assert isinstance(pred, Range)
        return await self._range_bitmap(pred, temps)

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
