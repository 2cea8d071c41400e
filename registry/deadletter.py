"""The dead-letter stream: park entries that cannot be applied, list them, replay them after a fix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis

from registry.keys import Keys

# Fields the dead-letter copy adds to the original entry; replay strips them again.
ERROR_FIELD = "error"
SOURCE_FIELD = "source_id"
_ADDED = {ERROR_FIELD.encode(), SOURCE_FIELD.encode()}
_PAGE = 500

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


def _originals(fields: Fields) -> dict[bytes, bytes]:
    return {_b(k): _b(v) for k, v in fields.items() if _b(k) not in _ADDED}


async def dead_letter(redis: aioredis.Redis, keys: Keys, entry_id: bytes | str, fields: Fields, reason: str) -> None:
    """Copy an entry, bytes untouched, to the dead-letter stream with ``error`` and ``source_id``.

    An original ``error``/``source_id`` field is overwritten by ours (the contract's names win).
    """
    copy: dict[bytes, bytes] = {_b(k): _b(v) for k, v in fields.items()}
    copy[ERROR_FIELD.encode()] = reason.encode("utf-8", "backslashreplace")
    copy[SOURCE_FIELD.encode()] = _b(entry_id)
    await redis.xadd(keys.dead, copy)  # type: ignore[arg-type]  # redis-py's stubs want str keys


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


async def _republish(redis: aioredis.Redis, keys: Keys, rows: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> int:
    # XADD before XDEL: a crash in between replays twice, which the idempotent apply absorbs.
    pipe = redis.pipeline(transaction=False)
    for _, fields in rows:
        pipe.xadd(keys.events, _originals(fields))  # type: ignore[arg-type]
    for entry_id, _ in rows:
        pipe.xdel(keys.dead, entry_id)
    await pipe.execute()
    return len(rows)


async def replay(redis: aioredis.Redis, keys: Keys, ids: Sequence[str] | None = None) -> int:
    """Re-publish dead letters (all when ``ids`` is None) to the events stream and delete them; return how many.

    Unknown ids are skipped. A replayed entry that is still invalid is simply dead-lettered again.
    """
    if ids is not None:
        total = 0
        for i in range(0, len(ids), _PAGE):
            total += await _republish(redis, keys, await _chosen(redis, keys, ids[i : i + _PAGE]))
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
        total += await _republish(redis, keys, rows)
