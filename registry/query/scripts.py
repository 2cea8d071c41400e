"""The query path's Lua scripts: loaded from lua/*.lua, each called through one typed wrapper."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import redis.asyncio as aioredis

from registry import lua
from registry.query.bits import pack_handles
from registry.query.check import CheckProgram, CheckRow, CheckTop, check_rows, check_top
from registry.query.page_call import PageCall, PageReply, PickReply, page_reply, pick_reply

_NAMES = (
    "walk", "check", "handles_to_bitmap", "range_to_bitmap", "uuids", "select", "top", "records", "page", "pick",
    "sortread",
)  # fmt: skip
# Scripts that run predicate programs: lua/checklib.lua goes before them.
_CHECKING = frozenset({"check", "pick", "page"})
# Scripts that read a sort index: the bucketed index's library (registry/store/lua/sortlib.lua) too.
_SORTING = frozenset({"walk", "range_to_bitmap", "select", "page", "pick", "sortread"})
SORTLIB = "registry.store:sortlib"
# Scripts whose reply ends with the change log's position and the page's records: lua/reply.lua too.
_REPLYING = frozenset({"pick", "page"})


class LexRange(NamedTuple):
    """A PICK driver: the members of a sort set between two ZRANGEBYLEX bounds."""

    zset: str
    lo: bytes
    hi: bytes


class JobIds(NamedTuple):
    """A PICK driver: these jobs (16 uuid bytes each), found through their records."""

    uuids: tuple[bytes, ...]


def script_text(name: str) -> str:
    """A script as run: lua/<name>.lua after its shebang, with the shared helpers of lua/lib.lua (and
    lua/checklib.lua, lua/reply.lua)."""
    package = __package__ or "registry.query"
    libs = (
        "lib",
        *((SORTLIB,) if name in _SORTING else ()),
        *(("checklib",) if name in _CHECKING else ()),
        *(("reply",) if name in _REPLYING else ()),
    )
    return lua.script(package, name, libs)


class Scripts:
    """The registered scripts of one Redis client; every call does bounded work (a chunk)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._scripts = {name: redis.register_script(script_text(name)) for name in _NAMES}
        self._loaded = False

    async def load(self) -> None:
        """Load every script once, up front.

        Loading up front (rather than on the first NOSCRIPT) keeps the first query fast
        and avoids an error round trip that the embedded fakeredis server mishandles.
        """
        if self._loaded:
            return
        for script in self._scripts.values():
            await self.redis.script_load(script.script)
        self._loaded = True

    def forget(self) -> None:
        """The server lost its script cache: ``load`` loads every script again."""
        self._loaded = False

    async def _call(self, name: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        return await self._scripts[name](keys=list(keys), args=list(args))

    async def _pipelined(self, name: str, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        """Several bounded calls of one script in one round trip (each still one short call in Redis).

        EVALSHA straight on the pipeline: the scripts are loaded up front (``load``), and
        redis-py's own pipelined scripts would cost an extra SCRIPT EXISTS round trip.
        """
        if len(calls) == 1:
            return [await self._call(name, *calls[0])]
        sha = self._scripts[name].sha
        pipe = self.redis.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(sha, len(keys), *keys, *args)
        return list(await pipe.execute())

    async def walk(
        self, zset: str, require: Sequence[str], exclude: Sequence[str], rank: int, chunk: int, desc: bool, need: int
    ) -> tuple[int, bool, list[bytes]]:
        """(next rank, exhausted, matching members) of one chunk of a sort-set walk."""
        reply = await self._call("walk", [zset, *require, *exclude], [rank, chunk, int(desc), len(require), need])
        return int(reply[0]), bool(int(reply[1])), list(reply[2:])

    def sortread_on(self, pipe: Any, index: str, *args: Any) -> None:
        """Queue a SORTREAD call (lua/sortread.lua) on ``pipe``; the scripts are loaded up front (``load``)."""
        pipe.evalsha(self._scripts["sortread"].sha, 1, index, *args)

    async def sort_range(self, index: str, start: int, count: int, desc: bool) -> list[bytes]:
        """``count`` members of a sort index from rank ``start`` on (ZRANGE, or ZREVRANGE if desc)."""
        return list(await self._call("sortread", [index], ["range", start, start + count - 1, int(desc)]))

    async def sort_count(self, index: str, lo: Any, hi: Any) -> int:
        """ZCOUNT of a sort index."""
        return int(await self._call("sortread", [index], ["count", lo, hi]))

    async def sort_lexcounts(self, index: str, bounds: Sequence[tuple[bytes, bytes]]) -> list[int]:
        """ZLEXCOUNT of the id sort index for each (lo, hi), one round trip."""
        calls = [([index], ["lexcount", lo, hi]) for lo, hi in bounds]
        return [int(n) for n in await self._pipelined("sortread", calls)] if calls else []

    async def sort_rangebylex(self, index: str, lo: bytes, hi: bytes) -> list[bytes]:
        """ZRANGEBYLEX of the id sort index."""
        return list(await self._call("sortread", [index], ["rangebylex", lo, hi]))

    async def page(self, call: PageCall) -> PageReply:
        """A plan's total, page and its records in one bounded call, or its counts and how far it got;
        with the change log's position either way."""
        return page_reply(await self._call("page", call.keys, call.args))

    async def pick(
        self,
        program: CheckProgram,
        driver: Sequence[str] | LexRange | JobIds,
        *,
        offset: int,
        limit: int,
        desc: bool,
        order: str,
        cap: int,
        changes: str,
        record_prefix: str,
        ors: Sequence[tuple[str, Sequence[str]]] = (),
        ands: Sequence[tuple[str, Sequence[str]]] = (),
    ) -> PickReply:
        """The total, the page's uuid bytes and records of the driver's jobs that pass ``program``,
        ordered by ``order`` ('value', 'nullable', 'handle' or 'id'), and the position of the
        change log ``changes``; not done if the driver holds over ``cap``. ``driver``: member
        set keys, a lex range of the id sort set, or job ids. ``record_prefix``: Keys.job_prefix.
        ``ors``: (temporary bitmap the program tests, the bitmaps OR-ed into it first); ``ands`` the same,
        AND-ed, after the ORs (so their sources may be the ORs' temporary bitmaps)."""
        keys: list[Any] = list(program.keys)

        def ref(key: str) -> int:
            keys.append(key)
            return len(keys)

        head: list[Any] = [offset, limit, int(desc), order, cap, ref(changes), record_prefix]
        if isinstance(driver, LexRange):
            args = [*head, "lex", ref(driver.zset), driver.lo, driver.hi]
        elif isinstance(driver, JobIds):
            args = [*head, "ids", len(driver.uuids), *driver.uuids]
        else:
            args = [*head, "sets", len(driver), *[ref(s) for s in driver]]
        for built in (ors, ands):
            args.append(len(built))
            for dest, sources in built:
                at = program.keys.index(dest) + 1 if dest in program.keys else ref(dest)
                args += [at, len(sources), *[ref(k) for k in sources]]
        args += program.ops
        return pick_reply(await self._call("pick", keys, args))

    async def check(self, program: CheckProgram, handles: Sequence[int], want_uuid: bool) -> list[CheckRow]:
        """The handles that pass ``program``, with their order values (and uuids)."""
        args = [pack_handles(handles), int(want_uuid), 0, "", 0, *program.ops]
        return check_rows(await self._call("check", program.keys, args), want_uuid)

    async def check_chunks(
        self, program: CheckProgram, handles: Sequence[int], chunk: int, want_uuid: bool
    ) -> list[CheckRow]:
        """``check`` of every ``chunk`` handles, all calls in one round trip."""
        calls = [
            (program.keys, [pack_handles(handles[i : i + chunk]), int(want_uuid), 0, "", 0, *program.ops])
            for i in range(0, len(handles), chunk)
        ]
        if not calls:
            return []
        return [row for reply in await self._pipelined("check", calls) for row in check_rows(reply, want_uuid)]

    async def check_top_chunks(
        self,
        program: CheckProgram,
        handles: Sequence[int],
        chunk: int,
        want_uuid: bool,
        *,
        top: int,
        order: str,
        desc: bool,
    ) -> CheckTop:
        """``check_chunks`` in top mode (lua/check.lua): the count of matches with an order value, the
        rows of those that can be among the first ``top`` in ``order`` ('value', 'nullable', 'handle'
        or 'id') and direction, and every null's handle; all calls in one round trip."""
        head = [int(want_uuid), top, order, int(desc)]
        calls = [
            (program.keys, [pack_handles(handles[i : i + chunk]), *head, *program.ops])
            for i in range(0, len(handles), chunk)
        ]
        return check_top(await self._pipelined("check", calls) if calls else [], want_uuid)

    async def uuids(self, uuid_array: str, handles: Sequence[int], chunk: int) -> bytes:
        """The uuids of ``handles``, 16 bytes each, concatenated (a call per ``chunk``, one round trip)."""
        calls = [([uuid_array], [pack_handles(handles[i : i + chunk])]) for i in range(0, len(handles), chunk)]
        return b"".join(await self._pipelined("uuids", calls)) if calls else b""

    async def select(
        self,
        cand: str,
        scratch: str,
        zset: str,
        slices: Sequence[tuple[str, int]],
        *,
        skip: int,
        desc: bool,
        scale: int,
        stop: int,
        count: int,
    ) -> tuple[int, int]:
        """(rank to start walking at, matches before it) by rank selection over BSI ``slices`` (key, bit)."""
        rank, above = await self._call(
            "select",
            [cand, scratch, zset, *[k for k, _ in slices]],
            [skip, int(desc), scale, stop, count, *[b for _, b in slices]],
        )
        return int(rank), int(above)

    async def top(
        self,
        cand: str,
        scratch: str,
        result: str,
        slices: Sequence[str],
        *,
        skip: int,
        desc: bool,
        stop: int,
        count: int,
        last: bool,
        ttl_ms: int,
    ) -> tuple[int, int, bool, bool, int]:
        """One TOP call over ``slices`` (highest bit first; ``last``: no more after them): (candidates
        left, slices done, whether they are now in ``scratch``, done, skip left); see lua/top.lua."""
        args = [skip, int(desc), stop, count, int(last), ttl_ms]
        reply = await self._call("top", [cand, scratch, result, *slices], args)
        n, done_slices, swapped, done, left = (int(x) for x in reply)
        return n, done_slices, bool(swapped), bool(done), left

    async def records(self, record_keys: Sequence[str]) -> list[Any]:
        """Flat (handle, state) pairs of these job records."""
        reply: list[Any] = await self._call("records", record_keys, [])
        return reply

    async def handles_to_bitmap(self, dest: str, handles: Sequence[int], ttl_ms: int) -> None:
        await self._call("handles_to_bitmap", [dest], [pack_handles(handles), ttl_ms])

    async def range_to_bitmap(
        self,
        dest: str,
        zset: str,
        kind: str,
        below: Any,
        lo: Any,
        hi: Any,
        offsets: Sequence[int],
        count: int,
        ttl_ms: int,
    ) -> list[int]:
        """Set the bits of slices of a lex or score range (one call per offset, one round trip);
        how many members each read. ``below`` is the exclusive bound just below ``lo``."""
        calls = [([dest, zset], [kind, below, lo, hi, offset, count, ttl_ms]) for offset in offsets]
        return [int(n) for n in await self._pipelined("range_to_bitmap", calls)]
