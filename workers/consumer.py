"""The events-stream consumer: read as a group member, dead-letter bad entries, apply, then acknowledge."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import BusyLoadingError, NoScriptError, OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from registry.domain.model import Event
from registry.errors import InvalidEvent
from registry.keys import Keys
from registry.ops.metrics import batch_commands
from registry.ops.text import printable
from registry.settings import Settings
from registry.store import resp
from registry.store.projection import Projection
from registry.wire.deadletter import DeadLetterer, adopt_legacy_failures
from registry.wire.events import decode_event

log = logging.getLogger("jobreg.consumer")

# One stream entry as redis-py returns it; deleted entries still pending come back with no fields.
Entry = tuple[bytes, dict[bytes, bytes] | None]

# Errors that say "Redis is unreachable", not "this entry is bad": back off and retry everything.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
MAX_BACKOFF_S = 5.0
# Error replies about the store as a whole (out of memory, read-only replica after a failover, a busy
# script, loading, disk errors...): no entry is at fault, so they never count towards dead-lettering.
# redis-py maps some codes to classes (and strips the code from the message); the rest keep the code.
STORE_WIDE_CLASSES = (OutOfMemoryError, ReadOnlyError, NoScriptError, BusyLoadingError)
STORE_WIDE_CODES = (
    "OOM",
    "READONLY",
    "BUSY",
    "LOADING",
    "MASTERDOWN",
    "MISCONF",
    "NOREPLICAS",
    "TRYAGAIN",
    "CLUSTERDOWN",
)


class StoreError(Exception):
    """A store-wide error reply while applying: retry the whole batch later, blame no entry."""


def is_store_wide(exc: BaseException) -> bool:
    if isinstance(exc, STORE_WIDE_CLASSES):
        return True
    return isinstance(exc, ResponseError) and str(exc).split(" ", 1)[0] in STORE_WIDE_CODES


async def _discard(task: asyncio.Task[list[Entry]] | None) -> None:
    """Cancel a read ahead and wait for it to end, whatever its outcome."""
    if task is None:
        return
    task.cancel()
    await asyncio.wait([task])  # our own cancellation still propagates; the task's outcome does not
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Consumer:
    """One member of the workers' consumer group; at-least-once delivery into the idempotent projection."""

    adopts_legacy = True  # whether ensure_group adopts the pre-cluster failure bookkeeping

    def __init__(
        self, redis: aioredis.Redis, settings: Settings, keys: Keys | None = None, dead: aioredis.Redis | None = None
    ) -> None:
        """``keys``: the partition this consumer applies (its stream, records and indexes); by default the
        registry of one partition. ``redis`` is the client serving that partition, ``dead`` the one serving
        the dead-letter stream (by default the same: one server)."""
        self.redis = redis
        self.settings = settings
        self.keys = keys or Keys(settings.prefix)
        self.name = settings.consumer or default_consumer_name()
        self.projection = Projection(
            redis,
            self.keys,
            settings.set_to_bitmap_threshold,
            change_log_retention=settings.change_log_retention,
            call_us=settings.apply_call_us,
        )
        self.dead_letterer = DeadLetterer(
            redis, self.keys, settings.group, self.name, settings.dead_letter_maxlen, dead=dead
        )
        self.consumed = 0  # entries read from the stream (redeliveries included)
        self.dead_lettered = 0
        self.applied_batches = 0
        self.apply_failures = 0  # entries left pending because applying them failed
        self.errors = 0  # loop iterations that ended in an error (and a back-off)
        self._changed = 0  # job changes applied since the last acknowledgement (for /metrics)
        self._apply_s = 0.0
        self._last_batch_s = 0.0  # how long processing the last batch took
        self._stop = asyncio.Event()
        self._group_ready = False
        # Re-read our own pending entries (id 0 onwards) before new ones: after a start or
        # an error, entries delivered to this name may never have been applied.
        self._backlog_from: str | None = "0"

    # -- lifecycle ----------------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run`` to return after the batch in hand (a blocked read returns within block_ms)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> None:
        """Consume until ``stop()``; Redis outages and unexpected errors are logged and retried, never raised.

        Pipelined: the next batch is read while the one in hand is applied (Redis applies one
        while Python decodes and folds the other, on two cores), and batches are applied one at a
        time in the order read, so handles (creation_order) still follow the stream.
        """
        log.info("consumer %s joining group %s on %s", self.name, self.settings.group, self.keys.events)
        backoff = 0.0
        ahead: asyncio.Task[list[Entry]] | None = None
        while not self._stop.is_set():
            try:
                entries = await (ahead if ahead is not None else self._read())
                ahead = None
                if entries and not self._stop.is_set() and self._read_ahead_safe():
                    ahead = asyncio.ensure_future(self._read())
                if entries:
                    started = time.monotonic()
                    await self.process(entries)
                    self._last_batch_s = time.monotonic() - started
                backoff = 0.0
            except asyncio.CancelledError:
                await _discard(ahead)
                raise
            except Exception as exc:
                # Whatever a discarded read ahead took stays pending under our name: re-read from 0.
                await _discard(ahead)
                ahead = None
                self.errors += 1
                self._backlog_from = "0"
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    self._group_ready = False  # stream or group deleted under us: recreate it
                backoff = min(MAX_BACKOFF_S, backoff * 2 or 0.1)
                if isinstance(exc, (*UNREACHABLE, StoreError)):
                    log.warning("redis unavailable (%s); retrying in %.1fs", exc, backoff)
                else:
                    log.exception("consumer step failed; retrying in %.1fs", backoff)
                await self._sleep(backoff)
        if ahead is not None:
            # Stopping with a read in flight (a blocked one returns within block_ms): apply what
            # it took rather than leave it pending until another worker reclaims it.
            try:
                entries = await ahead
                if entries:
                    await self.process(entries)
            except Exception as exc:
                log.warning("last batch left pending for a later delivery (%s)", exc)
        log.info(
            "consumer %s stopped: consumed=%d applied_batches=%d dead_lettered=%d",
            self.name,
            self.consumed,
            self.applied_batches,
            self.dead_lettered,
        )

    def _read_ahead_safe(self) -> bool:
        """Whether to read the next batch now. A batch read ahead waits, pending, while this one is
        processed; only while batches take well under claim_idle_ms does it never look abandoned
        to another worker's reclaim (which would then process it too: no harm, but wasted work)."""
        return self._last_batch_s * 4000 < self.settings.claim_idle_ms

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) from the first entry, unless it exists."""
        try:
            await self.redis.xgroup_create(self.keys.events, self.settings.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        # Failure counts written by an older version under the pre-cluster key names (a registry of one
        # partition: a partitioned one, router included, never had them).
        if (
            self.adopts_legacy
            and self.keys.events == self.keys.ingress
            and await adopt_legacy_failures(self.redis, self.keys)
        ):
            log.info("moved failure bookkeeping to %s", self.keys.failures)
        self._group_ready = True

    # -- one round ----------------------------------------------------------------------

    async def step(self) -> int:
        """Read and process one batch (own backlog first); return how many entries were read."""
        entries = await self._read()
        if entries:
            await self.process(entries)
        return len(entries)

    async def _read(self) -> list[Entry]:
        """The next batch: our own pending entries first (paged by id), then new ones."""
        if not self._group_ready:
            await self.ensure_group()
        backlog = self._backlog_from
        reply = await self.redis.xreadgroup(
            self.settings.group,
            self.name,
            {self.keys.events: backlog or ">"},
            count=self.settings.batch_size,
            # BLOCK only makes sense for new entries; a backlog read answers at once.
            block=None if backlog else self.settings.block_ms,
        )
        entries: list[Entry] = reply[0][1] if reply else []
        if backlog is not None:
            # Page through the backlog by id; an empty page means we are caught up.
            self._backlog_from = entries[-1][0].decode() if entries else None
        return entries

    async def process(self, entries: Sequence[Entry]) -> int:
        """Dead-letter invalid entries, apply the valid ones, acknowledge what is done; return entries handled.

        Shared with housekeeping's reclaim. Raises only when Redis is unreachable or fails as a whole,
        in which case nothing further is acknowledged and the entries stay pending for a later delivery.
        """
        self.consumed += len(entries)
        done: list[bytes] = []
        valid: list[tuple[bytes, Event]] = []
        invalid: list[tuple[bytes, Mapping[bytes, bytes], str]] = []
        for entry_id, fields in entries:
            if not fields:  # deleted from the stream while pending: nothing left to apply
                done.append(entry_id)
                continue
            try:
                valid.append((entry_id, decode_event(cast(Mapping[bytes | str, bytes | str], fields))))
            except InvalidEvent as exc:
                invalid.append((entry_id, fields, exc.reason))
        moved = await self.dead_letter(invalid)
        handled = len(invalid)
        if valid:
            applied, given_up = await self._apply(valid)
            done += applied
            handled += given_up
        consumed = Counter(event.type.value for _, event in valid)
        await self._ack(done, consumed=consumed, dead={"invalid": moved}, applied=bool(valid))
        return handled + len(done)

    async def dead_letter(self, items: Sequence[tuple[bytes, Mapping[bytes, bytes], str]]) -> int:
        """Copy each (entry id, fields, reason) to the dead-letter stream and acknowledge it; return how many moved.

        Copy, then acknowledgement, each step idempotent (registry/wire/deadletter.py; only entries
        still pending for this consumer are copied).
        Counted in ``dead_lettered``; the caller records the /metrics counter with its reason.
        """
        moved = await self.dead_letterer(items)
        self.dead_lettered += moved
        return moved

    async def _apply(self, valid: list[tuple[bytes, Event]]) -> tuple[list[bytes], int]:
        """Apply the batch; on failure, job by job so one poison job cannot hold back the rest.

        Returns the entry ids applied (to acknowledge) and how many entries were dead-lettered.
        """
        started = time.perf_counter()
        try:
            result = await self.projection.apply([event for _, event in valid])
            self.applied_batches += 1
            self._changed += result.changed
            self._apply_s += time.perf_counter() - started
            return [entry_id for entry_id, _ in valid], 0
        except UNREACHABLE:
            raise
        except Exception as exc:
            if is_store_wide(exc):
                raise StoreError(str(exc)) from exc
            log.warning("applying a batch of %d failed (%s); isolating job by job", len(valid), printable(str(exc)))
        # The scripts that did run before the failure are not undone; re-applying their jobs below
        # folds to the same state and writes nothing, so no job is applied twice in effect.
        by_job: dict[str, list[tuple[bytes, Event]]] = defaultdict(list)
        for entry_id, event in valid:
            by_job[event.job_id].append((entry_id, event))
        applied: list[bytes] = []
        given_up = 0
        for job_id, items in by_job.items():
            ids = [entry_id for entry_id, _ in items]
            try:
                result = await self.projection.apply([event for _, event in items])
                self._changed += result.changed
                applied += ids
            except UNREACHABLE:
                raise
            except Exception as exc:
                if is_store_wide(exc):
                    raise StoreError(str(exc)) from exc
                self.apply_failures += len(ids)
                given_up += await self._failed(job_id, items, exc)
        return applied, given_up

    async def _failed(self, job_id: str, items: list[tuple[bytes, Event]], exc: Exception) -> int:
        """Count one failed apply per entry; dead-letter those at max_apply_failures, leave the rest pending.

        Pending entries come back through reclaim once idle; return how many were dead-lettered.
        """
        # Escaped: the error may quote event data, and it is logged and shown by `jobreg dead-letters`.
        reason = printable(f"{type(exc).__name__}: {exc}")[:500]
        ids = [entry_id for entry_id, _ in items]
        pipe = self.redis.pipeline(transaction=False)
        for entry_id in ids:
            pipe.hincrby(self.keys.failure_counts, entry_id.decode(), 1)
        pipe.hset(self.keys.failures, mapping=dict.fromkeys(ids, reason))
        counts = (await pipe.execute())[: len(ids)]
        over = [entry_id for entry_id, n in zip(ids, counts, strict=True) if int(n) >= self.settings.max_apply_failures]
        if not over:
            log.error("job %s: applying %d entries failed, left pending for a retry: %s", job_id, len(ids), reason)
            return 0
        # Every entry of one job is retried together, so the whole group reaches the bound together.
        log.error(
            "job %s: applying failed %d times, dead-lettering %d entries: %s",
            job_id,
            self.settings.max_apply_failures,
            len(over),
            reason,
        )
        fields = dict(await self._fields(over))
        detail = f"applying failed {self.settings.max_apply_failures} times: {reason}"
        moved = await self.dead_letter([(i, fields[i], detail) for i in over if fields.get(i)])
        # Entries trimmed away meanwhile have nothing left to keep: just acknowledge them.
        await self._ack([i for i in over if not fields.get(i)], dead={"undeliverable": moved})
        return len(over)

    async def _fields(self, ids: list[bytes]) -> list[tuple[bytes, dict[bytes, bytes]]]:
        pipe = self.redis.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xrange(self.keys.events, min=entry_id, max=entry_id, count=1)
        return [rows[0] for rows in await pipe.execute() if rows]

    async def _ack(
        self,
        ids: list[bytes],
        *,
        consumed: Counter[str] | None = None,
        dead: dict[str, int] | None = None,
        applied: bool = False,
    ) -> None:
        """Acknowledge ``ids`` and record the batch's counters for /metrics in the same round trip."""
        dead = {k: n for k, n in (dead or {}).items() if n}
        if not ids and not dead:
            return
        # Packed by hand (registry/store/resp.py): every entry id goes in three commands, and
        # redis-py's packer took about a microsecond per argument.
        packed: list[bytes] = []
        if ids:
            tail = resp.bulk(ids)
            packed.append(resp.pack_command(b"XACK", self.keys.events, self.settings.group, tail=tail))
            # Forget recorded failures of entries that finally went through (usually a no-op).
            packed.append(resp.pack_command(b"HDEL", self.keys.failures, tail=tail))
            packed.append(resp.pack_command(b"HDEL", self.keys.failure_counts, tail=tail))
        now_ms = time.time() * 1000
        counters = batch_commands(
            self.keys,
            consumed=consumed,
            dead_lettered=dead,
            changed=self._changed,
            apply_seconds=self._apply_s or None,
            delays=[max(0.0, (now_ms - int(i.split(b"-")[0])) / 1000) for i in ids] if applied else (),
        )
        packed += [resp.pack_command(*command) for command in counters]
        self._changed, self._apply_s = 0, 0.0
        await resp.run_packed(self.redis, b"".join(packed), len(packed))
