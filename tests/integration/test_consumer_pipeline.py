"""The consumer's pipelined loop against a real Redis: the batch read ahead while one is applied is
applied too when the consumer stops, so a stop leaves nothing pending."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.settings import Settings
from registry.store import record
from workers.consumer import Consumer


def created(job_id: str) -> dict[str, str]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": "created",
        "job_id": job_id,
        "occurred_at": "2026-01-05T08:00:00.123456Z",
        "batch_id": str(uuid.uuid4()),
        "project_id": str(uuid.uuid4()),
        "user_id": "alice",
        "runs": "10",
    }


async def test_a_stop_applies_the_batch_read_ahead(aredis: aioredis.Redis, settings: Settings, keys: Keys) -> None:
    jobs = [str(uuid.uuid4()) for _ in range(70)]
    pipe = aredis.pipeline(transaction=False)
    for job_id in jobs:
        pipe.xadd(keys.events, created(job_id))  # type: ignore[arg-type]
    await pipe.execute()
    consumer = Consumer(aredis, msgspec.structs.replace(settings, batch_size=7, block_ms=50, consumer="c"))
    task = asyncio.create_task(consumer.run())
    # Stop as soon as the first batch is applied: by then the next one has been read ahead
    # (entries are waiting), so it is delivered to us and must not be left pending.
    while consumer.applied_batches == 0:
        assert not task.done(), "consumer loop exited"
        await asyncio.sleep(0)
    consumer.stop()
    await asyncio.wait_for(task, 10)

    assert consumer.consumed >= 14  # the batch in hand and the one read ahead
    assert int((await aredis.xpending(keys.events, settings.group))["pending"]) == 0
    handles = await record.handles(aredis, keys, jobs)
    # Exactly the entries delivered were applied, in stream order (handles follow it).
    assert [h is not None for h in handles] == [i < consumer.consumed for i in range(len(jobs))]
    assert handles[: consumer.consumed] == list(range(1, consumer.consumed + 1))
