"""The bucketed sort index's Python side: its key encoding, a bulk builder and a typed wrapper of lua/sortidx.lua.

The structure, and every operation that changes it, is lua/sortlib.lua (a B+tree of small sorted
sets under one base name: a top, pages and buckets of at most 128 entries, so each stays a listpack).
What is here must build exactly what that library reads: the separator encoding (``sep_key``), the
key names under the base and the count hashes. A change there changes it here too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import redis.asyncio as aioredis

from registry import lua

BUCKET_MAX = 128  # SX_MAX in lua/sortlib.lua: zset-max-listpack-entries
# Entries per bucket (and buckets per page) when bulk-built: three quarters full, as splits leave
# them on average, so that neither the next inserts nor the next removals restructure at once.
FILL = 96
MIN_SEP = b"\0"  # the first node's separator, below every key
_NEG = 1 << 53


def sep_key(score: int, member: bytes) -> bytes:
    """Order-preserving bytes of (score, member) (sx_key): a sign byte, 7 magnitude bytes, the member."""
    if score >= 0:
        return b"\2" + score.to_bytes(7, "big") + member
    return b"\1" + (score + _NEG).to_bytes(7, "big") + member


def _id4(node: int) -> bytes:
    return node.to_bytes(4, "big")


def script_text() -> str:
    """lua/sortidx.lua as run: its shebang, the library, its body."""
    return lua.script(__package__ or "registry.store", "sortidx", ("sortlib",))


class Builder:
    """Bulk-builds an empty index from entries in (score, member) order, a page at a time.

    ``page(entries)`` returns the commands (name and arguments) that write one whole page of at
    most FILL * FILL entries; the caller sends them in one MULTI with its own progress, so a killed
    build resumes at a page boundary. ``state`` (ids used, pages written) goes with the progress.
    """

    def __init__(self, base: str, next_id: int = 0, pages: int = 0) -> None:
        self.base = base
        self.next_id = next_id
        self.pages = pages

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def page(self, entries: Sequence[tuple[bytes, int]]) -> list[tuple[Any, ...]]:
        assert 0 < len(entries) <= FILL * FILL
        base, cmds = self.base, []
        pid = self._new_id()
        page_entries: dict[bytes, int] = {}
        page_counts: dict[int, int] = {}
        for i in range(0, len(entries), FILL):
            chunk = entries[i : i + FILL]
            bid = self._new_id()
            member, score = chunk[0]
            sep = MIN_SEP if (self.pages == 0 and i == 0) else sep_key(score, member)
            page_entries[sep + _id4(bid)] = 0
            page_counts[bid] = len(chunk)
            cmds.append(("ZADD", f"{base}:b:{bid}", *[x for m, s in chunk for x in (s, m)]))
        first_member, first_score = entries[0]
        top_sep = MIN_SEP if self.pages == 0 else sep_key(first_score, first_member)
        cmds.append(("ZADD", f"{base}:p:{pid}", *[x for e in page_entries for x in (0, e)]))
        cmds.append(("HSET", f"{base}:pn:{pid}", *[x for b, n in page_counts.items() for x in (b, n)]))
        cmds.append(("ZADD", f"{base}:t", 0, top_sep + _id4(pid)))
        cmds.append(("HSET", f"{base}:tn", pid, len(entries)))
        cmds.append(("HINCRBY", f"{base}:tn", "n", len(entries)))
        cmds.append(("SET", f"{base}:i", self.next_id))
        self.pages += 1
        return cmds


def pages_of(entries: Iterable[tuple[bytes, int]]) -> Iterator[list[tuple[bytes, int]]]:
    """``entries`` cut into the Builder's pages."""
    page: list[tuple[bytes, int]] = []
    for e in entries:
        page.append(e)
        if len(page) == FILL * FILL:
            yield page
            page = []
    if page:
        yield page


def index_keys(base: str) -> list[str]:
    """The fixed keys of an index (its pages and buckets are named from ``<base>:i``'s ids)."""
    return [f"{base}:t", f"{base}:tn", f"{base}:i"]


class SortIndex:
    """One bucketed sort index, through lua/sortidx.lua (one bounded call per operation)."""

    def __init__(self, redis: aioredis.Redis, base: str) -> None:
        self.redis = redis
        self.base = base
        self._script = redis.register_script(script_text())

    async def _call(self, *args: Any) -> Any:
        return await self._script(keys=[f"{self.base}:t"], args=[self.base, *args])

    async def add(self, entries: Iterable[tuple[bytes, int]]) -> int:
        """Add (member, score) entries not in the index; how many were added."""
        return int(await self._call("add", *[x for m, s in entries for x in (s, m)]))

    async def remove(self, entries: Iterable[tuple[bytes, int]]) -> int:
        """Remove (member, stored score) entries; how many were there."""
        return int(await self._call("rem", *[x for m, s in entries for x in (s, m)]))

    async def move(self, moves: Iterable[tuple[bytes, int | None, int]]) -> None:
        """(member, old score or None, new score): each removed at its old score, then added, as APPLY does."""
        await self._call("move", *[x for m, old, s in moves for x in ("" if old is None else old, s, m)])

    async def card(self) -> int:
        return int(await self._call("card"))

    async def range(self, rank: int, count: int, desc: bool = False) -> list[tuple[bytes, int]]:
        """``count`` (member, score) entries from ``rank`` on, in ascending (or descending) order."""
        flat = await self._call("range", rank, count, int(desc), 1)
        return [(bytes(flat[i]), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]

    async def below(self, score: int, member: bytes) -> int:
        """How many entries order before (score, member)."""
        return int(await self._call("below", score, member))
