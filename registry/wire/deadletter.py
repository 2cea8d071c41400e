"""The dead-letter stream: park entries that cannot be applied, list them, replay them after a fix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.lua import source

# Fields the dead-letter copy adds to the original entry; replay strips them again.
ERROR_FIELD = "error"
SOURCE_FIELD = "source_id"
_ADDED = {ERROR_FIELD.encode(), SOURCE_FIELD.encode()}
# An original field named like an added one (or already starting with the escape) is stored with one
# more ESCAPE in front, so the copy keeps every original field and replay restores the exact entry.
ESCAPE = b"~"
_PAGE = 500
# Lua's unpack() takes a few thousand values; entries with more fields take the MULTI path.
_LUA_MAX_FIELDS = 3000
DEFAULT_MAXLEN = 100_000

# Entries as redis-py returns them (bytes) or as callers build them (str).
Fields = Mapping[bytes, bytes | str] | Mapping[str, bytes | str]


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """One dead-lettered entry as an operator sees it (original fields as text)."""

    id: str
    source_id: str
    error: str
    fields: dict[str, str]


def _b(value: bytes | str) -> bytes:
    # surrogateescape round-trips bytes that were decoded leniently elsewhere.
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def _text(value: bytes | str) -> str:
    # Invalid UTF-8 is a common reason to be here, so show it escaped rather than fail.
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _escape(name: bytes) -> bytes:
    return ESCAPE + name if name in _ADDED or name.startswith(ESCAPE) else name


def _originals(fields: Fields) -> dict[bytes, bytes]:
    """The original entry back from a dead-letter copy: added fields dropped, escaped names restored."""
    out: dict[bytes, bytes] = {}
    for k, v in fields.items():
        name = _b(k)
        if name in _ADDED:
            continue
        out[name[len(ESCAPE) :] if name.startswith(ESCAPE) else name] = _b(v)
    return out


def dead_letter_copy(entry_id: bytes | str, fields: Fields, reason: str) -> dict[bytes, bytes]:
    """The dead-letter entry for an original: every original field (bytes untouched), ``error``, ``source_id``."""
    copy = {_escape(_b(k)): _b(v) for k, v in fields.items()}
    copy[ERROR_FIELD.encode()] = reason.encode("utf-8", "backslashreplace")
    copy[SOURCE_FIELD.encode()] = _b(entry_id)
    return copy


async def dead_letter(
    redis: aioredis.Redis,
    keys: Keys,
    entry_id: bytes | str,
    fields: Fields,
    reason: str,
    maxlen: int = DEFAULT_MAXLEN,
) -> None:
    """Copy an entry to the dead-letter stream (no acknowledgement; see ``dead_letter_and_ack``)."""
    copy = dead_letter_copy(entry_id, fields, reason)
    await redis.xadd(keys.dead, copy, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]


class DeadLetterer:
    """Dead-letters entries of a consumer group atomically with their acknowledgement."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, group: str, maxlen: int = DEFAULT_MAXLEN) -> None:
        self.redis = redis
        self.keys = keys
        self.group = group
        self.maxlen = maxlen
        self._script = redis.register_script(source("registry.wire", "dead_letter_ack"))

    async def __call__(self, items: Sequence[tuple[bytes, Fields, str]]) -> int:
        """Dead-letter and acknowledge (entry id, fields, reason) items; return how many this call moved.

        An item no longer pending (already handled elsewhere) is skipped, so a retry after a lost
        reply, or two workers racing on one entry, never leaves two copies.
        """
        if not items:
            return 0
        k = self.keys
        keys = [k.events, k.dead, k.failures, k.failure_counts]
        pipe = self.redis.pipeline(transaction=False)
        wide: list[dict[bytes, bytes]] = []
        wide_ids: list[bytes] = []
        for entry_id, fields, reason in items:
            copy = dead_letter_copy(entry_id, fields, reason)
            if len(copy) <= _LUA_MAX_FIELDS:
                flat = [x for kv in copy.items() for x in kv]
                await self._script(keys=keys, args=[self.group, entry_id, self.maxlen, *flat], client=pipe)
            else:
                wide.append(copy)
                wide_ids.append(entry_id)
        moved = sum(int(r) for r in await pipe.execute()) if len(pipe) else 0
        for entry_id, copy in zip(wide_ids, wide, strict=True):
            # Too many fields for one Lua call: MULTI keeps the copy and the ack all-or-nothing
            # (without the "still pending?" check; such entries are rare enough).
            tx = self.redis.pipeline(transaction=True)
            tx.xadd(k.dead, copy, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
            tx.xack(k.events, self.group, entry_id)
            tx.hdel(k.failures, entry_id)  # type: ignore[arg-type]
            tx.hdel(k.failure_counts, entry_id)  # type: ignore[arg-type]
            moved += int((await tx.execute())[1])
        return moved


def _to_dead_letter(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    return DeadLetter(
        id=_text(entry_id),
        source_id=_text(fields.get(SOURCE_FIELD.encode(), b"")),
        error=_text(fields.get(ERROR_FIELD.encode(), b"")),
        fields={_text(k): _text(v) for k, v in _originals(fields).items()},
    )


async def list_dead(redis: aioredis.Redis, keys: Keys, count: int = 100, start: str = "-") -> list[DeadLetter]:
    """The oldest ``count`` dead letters from ``start`` (an entry id, inclusive)."""
    rows: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(keys.dead, min=start, max="+", count=count)
    return [_to_dead_letter(entry_id, fields) for entry_id, fields in rows]


async def _chosen(redis: aioredis.Redis, keys: Keys, ids: Sequence[str]) -> list[tuple[bytes, dict[bytes, bytes]]]:
    pipe = redis.pipeline(transaction=False)
    for entry_id in ids:
        pipe.xrange(keys.dead, min=entry_id, max=entry_id, count=1)
    found: list[Any] = await pipe.execute()
    return [rows[0] for rows in found if rows]


async def _republish(
    redis: aioredis.Redis, keys: Keys, rows: Sequence[tuple[bytes, dict[bytes, bytes]]], fixes: Mapping[str, str]
) -> int:
    # One transaction: each entry is either back in the events stream and gone from here, or untouched.
    changes = {_b(k): _b(v) for k, v in fixes.items()}
    pipe = redis.pipeline(transaction=True)
    for _, fields in rows:
        entry = _originals(fields)
        entry.update(changes)
        pipe.xadd(keys.events, entry)  # type: ignore[arg-type]
    for entry_id, _ in rows:
        pipe.xdel(keys.dead, entry_id)
    await pipe.execute()
    return len(rows)


async def replay(
    redis: aioredis.Redis, keys: Keys, ids: Sequence[str] | None = None, fixes: Mapping[str, str] | None = None
) -> int:
    """Re-publish dead letters (all when ``ids`` is None) to the events stream and delete them; return how many.

    ``fixes`` sets fields on every replayed entry (an operator's correction). Unknown ids are skipped.
    A replayed entry that is still invalid is simply dead-lettered again.
    """
    fixes = fixes or {}
    if ids is not None:
        total = 0
        for i in range(0, len(ids), _PAGE):
            total += await _republish(redis, keys, await _chosen(redis, keys, ids[i : i + _PAGE]), fixes)
        return total
    # Only what is dead now: entries dead-lettered again during the replay land after ``last``,
    # so a still-broken entry cannot make this loop forever.
    newest = await redis.xrevrange(keys.dead, max="+", min="-", count=1)
    if not newest:
        return 0
    last = newest[0][0]
    total = 0
    while True:
        rows = await redis.xrange(keys.dead, min="-", max=last, count=_PAGE)
        if not rows:
            return total
        total += await _republish(redis, keys, rows, fixes)
