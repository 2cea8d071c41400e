"""The query path's Lua scripts: loaded from lua/*.lua, each called through one typed wrapper."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from registry.lua import source
from registry.query.bits import pack_handles
from registry.query.check import CheckProgram, CheckRow, check_rows

_NAMES = ("walk", "check", "handles_to_bitmap", "range_to_bitmap", "uuids", "select", "records")


def script_text(name: str) -> str:
    """A script as run: the shared helpers of lua/lib.lua, then lua/<name>.lua."""
    return source(__package__ or "registry.query", "lib") + source(__package__ or "registry.query", name)


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

    async def _call(self, name: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        return await self._scripts[name](keys=list(keys), args=list(args))

    async def walk(
        self, zset: str, require: Sequence[str], exclude: Sequence[str], rank: int, chunk: int, desc: bool, need: int
    ) -> tuple[int, bool, list[bytes]]:
        """(next rank, exhausted, matching members) of one chunk of a sort-set walk."""
        reply = await self._call("walk", [zset, *require, *exclude], [rank, chunk, int(desc), len(require), need])
        return int(reply[0]), bool(int(reply[1])), list(reply[2:])

    async def check(self, program: CheckProgram, handles: Sequence[int], want_uuid: bool) -> list[CheckRow]:
        """The handles that pass ``program``, with their order values (and uuids)."""
        reply = await self._call("check", program.keys, [pack_handles(handles), int(want_uuid), *program.ops])
        return check_rows(reply, want_uuid)

    async def uuids(self, uuid_array: str, handles: Sequence[int]) -> bytes:
        """The uuids of ``handles``, 16 bytes each, concatenated."""
        blob: bytes = await self._call("uuids", [uuid_array], [pack_handles(handles)])
        return blob

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

    async def records(self, record_keys: Sequence[str]) -> list[Any]:
        """Flat (handle, state) pairs of these job records."""
        reply: list[Any] = await self._call("records", record_keys, [])
        return reply

    async def handles_to_bitmap(self, dest: str, handles: Sequence[int], ttl_ms: int) -> None:
        await self._call("handles_to_bitmap", [dest], [pack_handles(handles), ttl_ms])

    async def range_to_bitmap(
        self, dest: str, zset: str, kind: str, lo: Any, hi: Any, offset: int, count: int, ttl_ms: int
    ) -> int:
        """Set the bits of one slice of a lex or score range; how many members it read."""
        return int(await self._call("range_to_bitmap", [dest, zset], [kind, lo, hi, offset, count, ttl_ms]))
