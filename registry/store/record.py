"""The job record: one hash per job (``Keys.job``), its fields and the codec of the state it stores.

Fields:
  ``v``  version, a decimal counter bumped by every write; the compare-and-set token of the projection
  ``h``  handle (creation_order), set once when the job is first listed; absent before
  ``s``  the folded JobState, msgpack (array_like, so without field names)

Python reads records only through this module. Lua that reads or writes them:
``registry/store/lua/apply.lua`` (writes all three) and the query package's RECORDS script
(reads ``h`` and ``s``). The change log's ``s`` and ``o`` fields carry states in the same codec.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis

from registry.domain.model import JobState
from registry.keys import Keys
from registry.store import resp

VERSION = "v"
HANDLE = "h"
STATE = "s"

encode_state = msgspec.msgpack.Encoder().encode
decode_state = msgspec.msgpack.Decoder(JobState).decode


async def handles(redis: aioredis.Redis, keys: Keys, job_ids: Sequence[str]) -> list[int | None]:
    """Each job's handle (creation_order); None for unknown or not-yet-listed jobs."""
    pipe = redis.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(keys.job(job_id), HANDLE)
    return [int(h) if h else None for h in await pipe.execute()]


async def versions_and_states(
    redis: aioredis.Redis, keys: Keys, job_ids: Sequence[str]
) -> dict[str, tuple[str, JobState | None]]:
    """Current (version, state) of each job; version '' means no record yet."""
    # Packed by hand: the apply path reads every job of every batch this way.
    replies = await resp.run_all(redis, [(b"HMGET", keys.job(job_id), VERSION, STATE) for job_id in job_ids])
    out: dict[str, tuple[str, JobState | None]] = {}
    for job_id, (v, s) in zip(job_ids, replies, strict=True):
        out[job_id] = ((v or b"").decode(), decode_state(s) if s else None)
    return out
