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
# How many of a consumer's pending entries one "still mine?" check reads: more than one batch holds.
_PENDING_SCAN = 10_000
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
    """Copy an entry to the dead-letter stream (no acknowledgement, no marker; see ``DeadLetterer``)."""
    copy = dead_letter_copy(entry_id, fields, reason)
    await redis.xadd(keys.dead, copy, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]


class DeadLetterer:
    """Dead-letters entries a consumer holds, in steps that each touch one Redis Cluster slot.

    The contract fixes both stream names, so the copy (dead stream's slot) and the acknowledgement
    (events stream's slot, with the failure bookkeeping under `{<events>}`) cannot be one atomic
    call. Instead: (0) keep only entries still pending for this consumer; (1) copy each to the
    dead stream, recording source id -> copy id in `{<dead>}:sources`; (2) acknowledge it and
    drop its failure bookkeeping, only if still pending for this consumer; (3) forget the marker.
    A crash after (1) leaves the entry pending: whoever processes it next finds the marker and
    reuses the copy, so the event is neither lost nor copied twice. A crash after (2) leaves only a
    marker, which ``sweep_markers`` removes.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        group: str,
        consumer: str,
        maxlen: int = DEFAULT_MAXLEN,
        dead: aioredis.Redis | None = None,
    ) -> None:
        """``redis`` serves the events stream's slot, ``dead`` the dead stream's (the same client unless the
        stream is a partition's on a cluster, where the two slots may live on different nodes)."""
        self.redis = redis
        self.dead = dead or redis
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.maxlen = maxlen
        self._copy = self.dead.register_script(source("registry.wire", "dead_letter_copy"))
        self._ack = redis.register_script(source("registry.wire", "dead_letter_ack"))

    async def __call__(self, items: Sequence[tuple[bytes, Fields, str]]) -> int:
        """Dead-letter and acknowledge (entry id, fields, reason) items; return how many this call moved.

        An item no longer pending for this consumer (already handled, or claimed by another
        worker) is skipped, so a retry after a lost reply, or two workers racing on one entry,
        leaves one copy (the one gap: a worker stalled between its check and its copy for longer
        than claim_idle_ms while another finishes the entry; see docs/design.md).
        """
        mine = await self._pending_here([entry_id for entry_id, _, _ in items])
        items = [item for item in items if _b(item[0]) in mine]
        if not items:
            return 0
        await self._copy_all(items)
        ids = [item[0] for item in items]
        k = self.keys
        acked = await self._ack(keys=[k.events, k.failures, k.failure_counts], args=[self.group, self.consumer, *ids])
        done = [entry_id for entry_id, ok in zip(ids, acked, strict=True) if int(ok)]
        if done:
            # An entry taken over meanwhile keeps its marker: its new holder reuses the copy.
            await self.dead.hdel(k.dead_sources, *(marker(k, entry_id) for entry_id in done))  # type: ignore[arg-type, misc]
        return len(done)

    async def _pending_here(self, ids: Sequence[bytes | str]) -> set[bytes]:
        """Which of ``ids`` are pending for this consumer (one XPENDING over their id range)."""
        if not ids:
            return set()
        ordered = sorted((_b(i) for i in ids), key=_id_key)
        rows = await self.redis.xpending_range(
            self.keys.events,
            self.group,
            min=ordered[0],
            max=ordered[-1],
            count=_PENDING_SCAN,
            consumername=self.consumer,
        )
        return {_b(r["message_id"]) for r in rows} & set(ordered)

    async def _copy_all(self, items: Sequence[tuple[bytes, Fields, str]]) -> None:
        k = self.keys
        args: list[bytes | str | int] = [self.maxlen]
        wide: list[tuple[bytes, dict[bytes, bytes]]] = []
        for entry_id, fields, reason in items:
            copy = dead_letter_copy(entry_id, fields, reason)
            if len(copy) <= _LUA_MAX_FIELDS:
                args += [marker(k, entry_id), 2 * len(copy), *(x for kv in copy.items() for x in kv)]
            else:
                wide.append((marker(k, entry_id), copy))
        if len(args) > 1:
            # One call for the batch, not a pipeline: a cluster client refuses EVALSHA in pipelines.
            await self._copy(keys=[k.dead, k.dead_sources], args=args)
        for name, copy in wide:
            # Too many fields for one Lua call (unpack's limit; rare): the same steps from here,
            # with a window between the XADD and the marker in which a crash leaves two copies.
            made = await self.dead.hget(k.dead_sources, name)  # type: ignore[arg-type, misc]
            if made and await self.dead.xrange(k.dead, min=made, max=made, count=1):
                continue
            copy_id = await self.dead.xadd(k.dead, copy, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
            await self.dead.hset(k.dead_sources, name, copy_id)  # type: ignore[arg-type, misc]


def marker(keys: Keys, entry_id: bytes | str) -> bytes:
    """The dead-letter marker's field for an entry of ``keys.events``: its id, after the partition's tag
    when the stream is a partition's (every stream's markers share the dead stream's one hash)."""
    return keys.marker_prefix.encode() + _b(entry_id)


def _marked_here(keys: Keys, name: bytes) -> bytes | None:
    """The entry id a marker names if it belongs to ``keys.events``, else None."""
    mine = keys.marker_prefix.encode()
    if mine:
        return name[len(mine) :] if name.startswith(mine) else None
    return None if b"/" in name else name


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


async def sweep_markers(redis: aioredis.Redis, keys: Keys, group: str, dead: aioredis.Redis | None = None) -> int:
    """Finish what a crash between steps left behind; return how many markers were removed.

    ``redis`` serves ``keys.events``'s slot, ``dead`` (by default the same) the dead stream's.

    A dead-letter marker whose entry is no longer pending belongs to a finished dead-lettering
    (the entry was acknowledged; it never becomes pending again), so it is dropped. A replay
    marker means the entry was re-published: its dead letter is deleted (step 2, idempotent),
    then the marker. Markers of work in progress are left alone or finished harmlessly.
    """
    removed = 0
    dead = dead or redis
    every: dict[bytes, bytes] = await dead.hgetall(keys.dead_sources)  # type: ignore[misc]
    sources = {name: entry_id for name in every if (entry_id := _marked_here(keys, name)) is not None}
    if sources:
        pipe = redis.pipeline(transaction=False)
        for entry_id in sources.values():
            pipe.xpending_range(keys.events, group, min=entry_id, max=entry_id, count=1)
        stale = [name for name, rows in zip(sources, await pipe.execute(), strict=True) if not rows]
        if stale:
            removed += int(await dead.hdel(keys.dead_sources, *stale))  # type: ignore[arg-type, misc]
    replayed: dict[bytes, bytes] = await redis.hgetall(keys.replayed)  # type: ignore[misc]
    if replayed:
        await dead.xdel(keys.dead, *replayed)
        removed += int(await redis.hdel(keys.replayed, *replayed))  # type: ignore[arg-type, misc]
    return removed


async def adopt_legacy_failures(redis: aioredis.Redis, keys: Keys) -> int:
    """Move failure bookkeeping from its pre-cluster keys into the events stream's slot; return fields moved.

    Idempotent (HSETNX: a value already in the new key is newer), so a crash part-way only
    repeats the copy at the next start.
    """
    moved = 0
    for old, new in ((keys.legacy_failures, keys.failures), (keys.legacy_failure_counts, keys.failure_counts)):
        values: dict[bytes, bytes] = await redis.hgetall(old)  # type: ignore[misc]
        if not values:
            continue
        pipe = redis.pipeline(transaction=False)
        for field, value in values.items():
            pipe.hsetnx(new, field, value)  # type: ignore[arg-type]
        await pipe.execute()
        await redis.delete(old)
        moved += len(values)
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
    # Two slots, so two steps per entry: re-publish it once (the marker in the events stream's
    # slot remembers it), then delete the dead letter and the marker. A crash in between leaves
    # the dead letter and its marker: a later replay (or sweep_markers) only deletes it, so the
    # entry is never lost and never re-published twice.
    if not rows:
        return 0
    changes = {_b(k): _b(v) for k, v in fixes.items()}
    args: list[bytes | int] = []
    wide: list[tuple[bytes, dict[bytes, bytes]]] = []
    for entry_id, fields in rows:
        entry = _originals(fields)
        entry.update(changes)
        if len(entry) <= _LUA_MAX_FIELDS:
            args += [entry_id, 2 * len(entry), *(x for kv in entry.items() for x in kv)]
        else:
            wide.append((entry_id, entry))
    if args:
        await redis.register_script(source("registry.wire", "replay_publish"))(
            keys=[keys.events, keys.replayed], args=args
        )
    for entry_id, entry in wide:
        # Too many fields for one Lua call (rare): the same steps without the script's atomicity.
        if not await redis.hexists(keys.replayed, entry_id):  # type: ignore[arg-type, misc]
            published = await redis.xadd(keys.events, entry)  # type: ignore[arg-type]
            await redis.hset(keys.replayed, entry_id, published)  # type: ignore[arg-type, misc]
    ids = [entry_id for entry_id, _ in rows]
    await redis.xdel(keys.dead, *ids)
    await redis.hdel(keys.replayed, *ids)  # type: ignore[arg-type, misc]
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
