"""Housekeeping: reclaim entries of dead consumers, give up on entries that never apply, trim the stream."""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from registry.keys import Keys
from registry.ops.metrics import record_batch
from registry.settings import Settings
from workers.consumer import Consumer, Entry

log = logging.getLogger("jobreg.housekeeping")

_PAGE = 100
# Bounds one reclaim run; the next run continues where the backlog is.
_MAX_PAGES = 100


async def reclaim(redis: aioredis.Redis, settings: Settings, consumer: Consumer | None = None) -> int:
    """Dead-letter idle entries delivered max_deliveries times, then claim and process the other idle ones.

    Returns the entries handled.

    Only entries idle for claim_idle_ms are touched, so a live consumer's batch in flight is never
    taken from it. ``consumer`` (whose name the entries move to) defaults to a fresh one from settings.
    """
    consumer = consumer or Consumer(redis, settings)
    handled = await _give_up(redis, settings, consumer)
    start: Any = "0-0"
    for _ in range(_MAX_PAGES):
        reply = await redis.xautoclaim(
            consumer.keys.events,
            settings.group,
            consumer.name,
            min_idle_time=settings.claim_idle_ms,
            start_id=start,
            count=settings.batch_size,
        )
        start, entries = reply[0], reply[1]
        if entries:
            log.info("reclaimed %d idle entries for %s", len(entries), consumer.name)
            await consumer.process(entries)
            handled += len(entries)
        if start in (b"0-0", "0-0"):
            break
    return handled


async def _give_up(redis: aioredis.Redis, settings: Settings, consumer: Consumer) -> int:
    """Dead-letter (and acknowledge) idle entries already delivered max_deliveries times.

    The backstop for an entry that neither applies nor fails cleanly (one that kills the worker holding
    it). Apply failures are counted and dead-lettered by the consumer itself at max_apply_failures.
    """
    keys = consumer.keys
    low = "-"
    handled = 0
    for _ in range(_MAX_PAGES):
        rows = await redis.xpending_range(
            keys.events, settings.group, min=low, max="+", count=_PAGE, idle=settings.claim_idle_ms
        )
        if not rows:
            break
        low = "(" + rows[-1]["message_id"].decode()
        times = {r["message_id"]: r["times_delivered"] for r in rows if r["times_delivered"] >= settings.max_deliveries}
        if not times:
            continue
        # XCLAIM with the idle bound is the atomic "still stuck?" check: if another reclaimer or
        # the owner touched an entry meanwhile, it is not returned and we leave it alone.
        claimed: list[Entry] = await redis.xclaim(
            keys.events, settings.group, consumer.name, settings.claim_idle_ms, list(times)
        )
        if not claimed:
            continue
        ids = [entry_id for entry_id, _ in claimed]
        reasons = await redis.hmget(keys.failures, ids)  # type: ignore[misc]
        items = []
        gone = []
        for (entry_id, fields), last in zip(claimed, reasons, strict=True):
            detail = last.decode("utf-8", "backslashreplace") if last else "no apply error recorded"
            reason = f"delivered {times[entry_id]} times without being applied (a worker crash?): {detail}"
            log.error("dead-lettering %s: %s", entry_id.decode(), reason)
            if fields:
                items.append((entry_id, fields, reason))
            else:  # deleted from the stream meanwhile: only the acknowledgement is left to do
                gone.append(entry_id)
            handled += 1
        moved = await consumer.dead_letter(items)
        pipe = redis.pipeline(transaction=False)
        if gone:
            pipe.xack(keys.events, settings.group, *gone)
        record_batch(pipe, keys, dead_lettered={"undeliverable": moved})
        await pipe.execute()
    return handled


# Trim the events stream below the first entry some consumer group still needs, and never past the
# retention bound. Per group: its oldest pending entry, else the entry after its last-delivered-id;
# everything below is delivered and acknowledged. Computed and applied in one atomic step, so a
# group reading or joining meanwhile cannot be overtaken. `~` only drops whole stream nodes, never an
# entry at or above the bound. KEYS: events. ARGV: now in ms ('' = Redis TIME), retention ms, limit.
_TRIM_LUA = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, ''} end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return {0, ''} end
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local bound = string.format('%d-0', math.max(0, now - tonumber(ARGV[2])))
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local need
  if tonumber(info['pending']) > 0 then
    need = redis.call('XPENDING', KEYS[1], info['name'])[2]
  else
    local ms, seq = parse(info['last-delivered-id'])
    need = string.format('%d-%d', ms, seq + 1)
  end
  if less(need, bound) then bound = need end
end
return {redis.call('XTRIM', KEYS[1], 'MINID', '~', bound, 'LIMIT', ARGV[3]), bound}
"""

# Remove group members that hold no pending entry and have been idle long (default names are
# host-pid, so every restart adds one). Atomic: a member that reads meanwhile is not removed, and a
# member removed while alive is recreated by its next read. KEYS: events. ARGV: group, idle ms, keep.
_PRUNE_LUA = """
local removed = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if tonumber(info['pending']) == 0 and tonumber(info['idle']) >= tonumber(ARGV[2]) and info['name'] ~= ARGV[3] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed = removed + 1
  end
end
return removed
"""

_TRIM_LIMIT = 10_000


def _missing(exc: ResponseError) -> bool:
    text = str(exc)
    return "no such key" in text.lower() or "NOGROUP" in text


async def trim_stream(redis: aioredis.Redis, settings: Settings, now_ms: int | None = None) -> int:
    """Trim acknowledged entries older than stream_retention_s from the events stream; return entries removed.

    ``now_ms`` defaults to Redis's own clock (stream ids are Redis timestamps); tests pass a simulated one.
    """
    keys = Keys(settings.prefix)
    script = redis.register_script(_TRIM_LUA)
    removed = 0
    for _ in range(_MAX_PAGES):
        n, _bound = await script(
            keys=[keys.events],
            args=["" if now_ms is None else now_ms, settings.stream_retention_s * 1000, _TRIM_LIMIT],
        )
        removed += int(n)
        if int(n) < _TRIM_LIMIT:
            break
    if removed:
        log.info("trimmed %d acknowledged entries from %s", removed, keys.events)
    return removed


async def prune_consumers(redis: aioredis.Redis, settings: Settings, keep: str = "") -> int:
    """Remove idle members without pending entries from the group (never ``keep``); return how many."""
    keys = Keys(settings.prefix)
    try:
        removed = int(
            await redis.register_script(_PRUNE_LUA)(
                keys=[keys.events], args=[settings.group, settings.consumer_idle_ms, keep]
            )
        )
    except ResponseError as exc:
        if _missing(exc):
            return 0
        raise
    if removed:
        log.info("removed %d idle consumers without pending entries from %s", removed, settings.group)
    return removed
