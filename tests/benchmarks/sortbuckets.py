"""Prototype, measured: one sort index as listpack-sized buckets under a two-level directory (the plan for memory).

The prototype of layout 7's sort indexes (registry/store/lua/sortlib.lua, which bounds nodes by
(score, member) and is what jobreg uses); kept for its measurements. It reads a layout-6 copy's
sorted sets (``Keys.sort_set_v6``), so run it on a kept copy made before `jobreg migrate` to 7:

    .venv/bin/python -m tests.benchmarks.sortbuckets --keep /work/bench/<name>-1m [--field created_at]

The structure (a B+tree of height 3 made of small Redis keys, all under the registry's hash tag):

- buckets ``sb:<field>:b:<id>``: sorted sets of at most BUCKET_MAX entries, so Redis keeps them as
  listpacks (``zset-max-listpack-entries`` 128): an entry costs its member and its score, packed;
- pages ``sb:<field>:p:<id>``: sorted sets of at most PAGE_MAX bucket ids scored by the bucket's
  lowest score, with ``sb:<field>:pn:<id>``, a hash of each bucket's entry count;
- the top ``sb:<field>:top``: page ids scored by the page's lowest score, ``sb:<field>:topn`` the
  pages' counts.

An insert finds its bucket by two ZREVRANGEBYSCORE ... LIMIT 0 1 (top, page), adds, bumps two
counts, and splits a bucket (or page) that reaches its maximum in halves (at 128 entries: a 129th
would turn the bucket into a skiplist for good, as Redis never converts back). A rank (offset) is found
by summing counts: the top's (about 100 pages at 1M jobs), then one page's (at most 128 buckets),
then ZRANGE inside the bucket; a walk continues bucket after bucket. Ties between equal scores
across a bucket boundary are not ordered by member here (the real one would keep (score, member)
bounds in the directory); this prototype measures sizes and costs.

The sorted set it is compared with is the registry's own (``{bench}:z:<field>``), on the same server.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import time
from typing import Any

import redis

from tests.benchmarks.memory import scratch_dir, serve

BUCKET_MAX = 128  # listpack limit of a sorted set (zset-max-listpack-entries)
PAGE_MAX = 128
FILL = 96  # entries per bucket (and buckets per page) when bulk-built: 75% full, as splits leave them

# Insert one (score, member). KEYS[1] top, KEYS[2] topn, KEYS[3] id counter; ARGV[1] key prefix
# (sb:<field>:), ARGV[2] score, ARGV[3] member, ARGV[4] bucket max, ARGV[5] page max.
INSERT = """
local top, topn, ids, p = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local score, member, bmax, pmax = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local function floor_entry(key)
  local got = redis.call('ZREVRANGEBYSCORE', key, score, '-inf', 'LIMIT', 0, 1)
  if #got == 0 then got = redis.call('ZRANGE', key, 0, 0) end
  return got[1]
end
local function lowest(key)
  return redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
end
local page = floor_entry(top)
local pkey, pnkey = p .. 'p:' .. page, p .. 'pn:' .. page
local bucket = floor_entry(pkey)
local bkey = p .. 'b:' .. bucket
redis.call('ZADD', bkey, score, member)
redis.call('HINCRBY', pnkey, bucket, 1)
redis.call('HINCRBY', topn, page, 1)
if score < tonumber(redis.call('ZSCORE', pkey, bucket)) then redis.call('ZADD', pkey, score, bucket) end
if score < tonumber(redis.call('ZSCORE', top, page)) then redis.call('ZADD', top, score, page) end
local n = redis.call('ZCARD', bkey)
if n >= bmax then -- split the bucket before it outgrows a listpack (Redis never converts back)
  local half = math.floor(n / 2)
  local upper = redis.call('ZRANGE', bkey, half, -1, 'WITHSCORES')
  local new = 'b' .. redis.call('INCR', ids)
  local args = {}
  for i = 1, #upper, 2 do args[#args + 1] = upper[i + 1]; args[#args + 1] = upper[i] end
  redis.call('ZADD', p .. 'b:' .. new, unpack(args))
  redis.call('ZREMRANGEBYRANK', bkey, half, -1)
  redis.call('ZADD', pkey, upper[2], new)
  redis.call('HSET', pnkey, bucket, half, new, n - half)
  local m = redis.call('ZCARD', pkey)
  if m >= pmax then -- split the page
    local phalf = math.floor(m / 2)
    local moved = redis.call('ZRANGE', pkey, phalf, -1, 'WITHSCORES')
    local newp = 'p' .. redis.call('INCR', ids)
    local zargs, names, total = {}, {}, 0
    for i = 1, #moved, 2 do
      zargs[#zargs + 1] = moved[i + 1]; zargs[#zargs + 1] = moved[i]; names[#names + 1] = moved[i]
    end
    local counts = redis.call('HMGET', pnkey, unpack(names))
    local hargs = {}
    for i, name in ipairs(names) do
      hargs[#hargs + 1] = name; hargs[#hargs + 1] = counts[i]; total = total + tonumber(counts[i])
    end
    redis.call('ZADD', p .. 'p:' .. newp, unpack(zargs))
    redis.call('HSET', p .. 'pn:' .. newp, unpack(hargs))
    redis.call('ZREMRANGEBYRANK', pkey, phalf, -1)
    redis.call('HDEL', pnkey, unpack(names))
    redis.call('ZADD', top, moved[2], newp)
    redis.call('HINCRBY', topn, page, -total)
    redis.call('HSET', topn, newp, total)
  end
end
return 1
"""

# Entries at ranks ARGV[2] .. ARGV[2] + ARGV[3] - 1 (members only). KEYS[1] top, KEYS[2] topn;
# ARGV[1] key prefix.
RANGE = """
local top, topn, p = KEYS[1], KEYS[2], ARGV[1]
local offset, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local pages = redis.call('ZRANGE', top, 0, -1)
local pcounts = redis.call('HMGET', topn, unpack(pages))
local out, skip = {}, offset
for i, page in ipairs(pages) do
  local pc = tonumber(pcounts[i])
  if skip >= pc then
    skip = skip - pc
  else
    local buckets = redis.call('ZRANGE', p .. 'p:' .. page, 0, -1)
    local bcounts = redis.call('HMGET', p .. 'pn:' .. page, unpack(buckets))
    for j, bucket in ipairs(buckets) do
      local bc = tonumber(bcounts[j])
      if skip >= bc then
        skip = skip - bc
      else
        local got = redis.call('ZRANGE', p .. 'b:' .. bucket, skip, skip + limit - #out - 1)
        skip = 0
        for _, m in ipairs(got) do out[#out + 1] = m end
        if #out >= limit then return out end
      end
    end
  end
end
return out
"""


def _member(uuid16: bytes, handle: int, full: bool) -> bytes:
    return uuid16 + handle.to_bytes(4, "big") if full else handle.to_bytes(4, "big")


def build(r: redis.Redis, source: str, prefix: str, full: bool, chunk: int = 20_000) -> int:
    """Bulk-build the buckets from the sorted set ``source``, FILL entries per bucket: entries copied."""
    pipe = r.pipeline(transaction=False)
    ids = 0
    bucket: list[tuple[bytes, float]] = []
    page: list[tuple[str, float, int]] = []
    pages: list[tuple[str, float, int]] = []

    def flush_page() -> None:
        nonlocal ids
        ids += 1
        pid = f"p{ids}"
        pipe.zadd(f"{prefix}p:{pid}", {b: s for b, s, _ in page})
        pipe.hset(f"{prefix}pn:{pid}", mapping={b: n for b, _, n in page})
        pages.append((pid, page[0][1], sum(n for _, _, n in page)))
        page.clear()

    def flush_bucket() -> None:
        nonlocal ids
        ids += 1
        bid = f"b{ids}"
        pipe.zadd(f"{prefix}b:{bid}", dict(bucket))
        page.append((bid, bucket[0][1], len(bucket)))
        bucket.clear()
        if len(page) >= FILL:
            flush_page()

    total, start = 0, 0
    while True:
        rows = r.zrange(source, start, start + chunk - 1, withscores=True)
        if not rows:
            break
        for member, score in rows:
            m = bytes(member)
            bucket.append((_member(m[:16], int.from_bytes(m[16:20], "big"), full), score))
            if len(bucket) >= FILL:
                flush_bucket()
        pipe.execute()
        total += len(rows)
        start += chunk
    if bucket:
        flush_bucket()
    if page:
        flush_page()
    pipe.zadd(f"{prefix}top", {p: s for p, s, _ in pages})
    pipe.hset(f"{prefix}topn", mapping={p: n for p, _, n in pages})
    pipe.set(f"{prefix}ids", ids)
    pipe.execute()
    return total


def bytes_of(r: redis.Redis, prefix: str) -> tuple[int, int]:
    """(keys, MEMORY USAGE sum) of the structure's keys."""
    keys = list(r.scan_iter(match=prefix + "*", count=1000))
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.memory_usage(k, samples=0)
    return len(keys), sum(int(x or 0) for x in pipe.execute())


def usec_per_call(r: redis.Redis, command: str) -> float:
    stats: dict[str, Any] = r.info("commandstats")
    return float(stats.get(f"cmdstat_{command}", {}).get("usec_per_call", 0.0))


def timed(r: redis.Redis, command: str, calls: list[Any]) -> float:
    """Server-side µs per call of ``command`` (INFO commandstats), over ``calls`` (zero-argument callables)."""
    r.config_resetstat()
    for call in calls:
        call()
    return usec_per_call(r, command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", required=True)
    parser.add_argument("--field", default="created_at")
    parser.add_argument("--inserts", type=int, default=5000)
    args = parser.parse_args()
    proc, r = serve(args.keep, [], user="sortbuckets")
    try:
        source = f"{{bench}}:z:{args.field}"
        n = int(r.zcard(source))
        z_bytes = int(r.memory_usage(source, samples=0) or 0)
        print(f"sorted set {source}: {n:,} entries, {z_bytes / n:,.1f} B/entry (skiplist)")
        results = {}
        for full in (True, False):
            prefix = f"{{bench}}:sb:{args.field}:{'u' if full else 'h'}:"
            t0 = time.perf_counter()
            build(r, source, prefix, full)
            keys, size = bytes_of(r, prefix)
            results[full] = size / n
            label = "uuid16+handle (20 B, as now)" if full else "handle only (4 B)"
            print(
                f"buckets, members {label}: {keys:,} keys, {size / n:,.1f} B/entry "
                f"({size / z_bytes:.0%} of the sorted set), built in {time.perf_counter() - t0:.0f} s"
            )
        prefix = f"{{bench}}:sb:{args.field}:u:"
        top, topn = prefix + "top", prefix + "topn"
        insert, rng_script = r.register_script(INSERT), r.register_script(RANGE)
        lo, hi = (
            s for _, s in (r.zrange(source, 0, 0, withscores=True)[0], r.zrange(source, -1, -1, withscores=True)[0])
        )
        rnd = random.Random(1)
        news = [(rnd.uniform(lo, hi), rnd.randbytes(16) + (n + 1 + i).to_bytes(4, "big")) for i in range(args.inserts)]
        ins = timed(
            r,
            "evalsha",
            [
                lambda s=s, m=m: insert(keys=[top, topn, prefix + "ids"], args=[prefix, s, m, BUCKET_MAX, PAGE_MAX])
                for s, m in news
            ],
        )
        zadd = timed(r, "zadd", [lambda s=s, m=m: r.zadd(source, {m: s}) for s, m in news])
        print(
            f"insert (random scores, splits included): buckets {ins:,.1f} µs/call, "
            f"ZADD on the sorted set {zadd:,.1f} µs/call"
        )
        for offset, limit, what in (
            (500_000, 100, "rank range at offset 500,000, 100 entries"),
            (0, 1000, "walk of 1,000 entries"),
            (900_000, 1000, "walk of 1,000 entries from offset 900,000"),
        ):
            got = rng_script(keys=[top, topn], args=[prefix, offset, limit])
            want = r.zrange(source, offset, offset + limit - 1)
            same = sum(1 for a, b in zip(got, want, strict=False) if a == b)
            b_us = timed(
                r,
                "evalsha",
                [lambda o=offset, lim=limit: rng_script(keys=[top, topn], args=[prefix, o, lim]) for _ in range(50)],
            )
            z_us = timed(r, "zrange", [lambda o=offset, lim=limit: r.zrange(source, o, o + lim - 1) for _ in range(50)])
            print(
                f"{what}: buckets {b_us:,.0f} µs/call, ZRANGE {z_us:,.0f} µs/call "
                f"({same}/{len(want)} entries identical to the sorted set's, which got the same inserts)"
            )
        sizes = [int(r.zcard(k)) for k in r.scan_iter(match=prefix + "b:*", count=1000)]
        print(
            f"buckets after the inserts: {len(sizes):,}, "
            f"entries per bucket median {statistics.median(sizes):.0f}, max {max(sizes)}"
        )
        first_page = prefix + "p:" + r.zrange(top, 0, 0)[0].decode()
        print(f"encodings: bucket {r.object('encoding', prefix + 'b:b1')!r}, page {r.object('encoding', first_page)!r}")
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(scratch_dir(args.keep, "sortbuckets"), ignore_errors=True)


if __name__ == "__main__":
    main()
