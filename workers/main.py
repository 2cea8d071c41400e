"""The arq host: the consumer loop runs as a task from on_startup; housekeeping runs as arq cron jobs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from typing import Any

import arq.worker
import redis.asyncio as aioredis
from arq import cron
from arq.connections import RedisSettings
from arq.worker import get_kwargs
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from registry.keys import Keys
from registry.settings import Settings, load_settings
from workers.consumer import UNREACHABLE, Consumer
from workers.housekeeping import prune_consumers, reclaim, trim_stream

log = logging.getLogger("jobreg.worker")

# After stop(), the consumer finishes its batch; a blocked read returns within block_ms.
SHUTDOWN_GRACE_S = 30.0
# Outages of any length: arq's polling backs off up to this, then keeps trying.
MAX_POLL_BACKOFF_S = 5.0


def _arq_redis_settings(settings: Settings) -> RedisSettings:
    # A few quick retries per command absorb a blip; longer outages are ridden out by
    # ResilientWorker's polling. Start-up waits for Redis as long as it takes (SIGTERM still stops it).
    return dataclasses.replace(
        RedisSettings.from_dsn(settings.redis_url),
        conn_retries=10**9,
        conn_retry_delay=1,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


class ResilientWorker(arq.worker.Worker):
    """arq's Worker, except that a Redis outage pauses its polling instead of killing the process.

    arq lets a connection error in its poll loop end ``main()``, which exits the process after its own
    client's retries (minutes at most) run out; the consumer loop survives outages by itself, so the
    host should too.
    """

    _outage_backoff = 0.0

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except UNREACHABLE as exc:
            self._outage_backoff = min(MAX_POLL_BACKOFF_S, self._outage_backoff * 2 or 0.2)
            log.warning("arq polling: redis unavailable (%s); retrying in %.1fs", exc, self._outage_backoff)
            await asyncio.sleep(self._outage_backoff)
        else:
            self._outage_backoff = 0.0

    async def close(self) -> None:
        # arq's close() deletes its health key first; during an outage that raises and skips
        # on_shutdown, so the consumer would not be stopped cleanly. Tolerate it.
        if not self._pool:
            return
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        try:
            await self.pool.delete(self.health_check_key)
        except UNREACHABLE as exc:
            log.warning("could not delete arq's health key at shutdown: %s", exc)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        with contextlib.suppress(*UNREACHABLE):
            await self.pool.close(close_connection_pool=True)
        self._pool = None


async def _log_store(redis: Any, log_func: Any) -> None:
    """Stand-in for arq's start-up INFO log, which kills the worker on stores without INFO (fakeredis)."""
    try:
        info = await redis.info(section="server")
        log_func("redis_version=%s", info.get("redis_version", "?"))
    except RedisError as exc:
        log_func("store does not answer INFO (%s); carrying on", exc)


async def _is_real_redis(redis: aioredis.Redis) -> bool:
    try:
        return "redis_version" in await redis.info(section="server")
    except RedisError:
        return False


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("consumer loop ended unexpectedly", exc_info=task.exception())


def worker_settings(settings: Settings) -> type:
    """An arq ``WorkerSettings`` class for these settings."""
    keys = Keys(settings.prefix)
    every = max(1, min(60, settings.housekeeping_interval_s))
    # `jobreg up` may host us on embedded fakeredis, which has no INFO command.
    arq.worker.log_redis_info = _log_store  # type: ignore[attr-defined]

    async def on_startup(ctx: dict[str, Any]) -> None:
        client = aioredis.Redis.from_url(
            settings.redis_url,
            # Above the blocking read's own timeout, so only a dead connection trips it.
            socket_timeout=settings.block_ms / 1000 + 10,
            socket_connect_timeout=5,
            # No health_check_interval: it makes redis-py recurse without end on reconnecting
            # (redis/redis-py#3745); a dead connection fails the next command and the loop retries.
        )
        consumer = Consumer(client, settings)
        task = asyncio.create_task(consumer.run(), name="jobreg-consumer")
        task.add_done_callback(_log_crash)
        ctx.update(jobreg_redis=client, jobreg_consumer=consumer, jobreg_task=task, jobreg_can_trim=None)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        consumer: Consumer | None = ctx.get("jobreg_consumer")
        task: asyncio.Task[None] | None = ctx.get("jobreg_task")
        if consumer is not None and task is not None:
            consumer.stop()
            try:
                await asyncio.wait_for(asyncio.shield(task), SHUTDOWN_GRACE_S + settings.block_ms / 1000)
            except TimeoutError:
                # Anything read but unacknowledged stays pending and is re-read on restart.
                log.warning("consumer did not stop in time; cancelling it")
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        client: aioredis.Redis | None = ctx.get("jobreg_redis")
        if client is not None:
            await client.aclose()

    async def reclaim_job(ctx: dict[str, Any]) -> int:
        return await reclaim(ctx["jobreg_redis"], settings, ctx["jobreg_consumer"])

    reclaim_job.__qualname__ = reclaim_job.__name__ = "reclaim"

    async def trim_job(ctx: dict[str, Any]) -> int:
        if ctx["jobreg_can_trim"] is None:
            # The embedded in-memory fakeredis (`jobreg up` without redis-server) cannot run the trim
            # scripts (XINFO inside Lua); it is a demo store, so it simply keeps its whole stream.
            ctx["jobreg_can_trim"] = await _is_real_redis(ctx["jobreg_redis"])
            if not ctx["jobreg_can_trim"]:
                log.warning("store is not a real Redis: stream trimming and consumer pruning are off")
        if not ctx["jobreg_can_trim"]:
            return 0
        consumer: Consumer = ctx["jobreg_consumer"]
        await prune_consumers(ctx["jobreg_redis"], settings, keep=consumer.name)
        return await trim_stream(ctx["jobreg_redis"], settings)

    trim_job.__qualname__ = trim_job.__name__ = "trim"
    return type(
        "WorkerSettings",
        (),
        {
            "functions": [],
            "cron_jobs": [
                cron(
                    reclaim_job,
                    # arq keys job records by name, so the name carries our prefix.
                    name=keys.arq_job("reclaim"),
                    second=set(range(0, 60, every)),
                    run_at_startup=True,
                    timeout=300,
                ),
                cron(
                    trim_job,
                    name=keys.arq_job("trim"),
                    second=set(range(every // 2, 60, every)),
                    timeout=300,
                ),
            ],
            "on_startup": on_startup,
            "on_shutdown": on_shutdown,
            "redis_settings": _arq_redis_settings(settings),
            "queue_name": keys.arq_queue,
            "handle_signals": True,
        },
    )


def run_worker(settings: Settings) -> None:
    """Run the worker until SIGTERM/SIGINT (arq handles both: finish, shut down, return)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.worker_nice > 0:
        os.nice(settings.worker_nice)
    # arq's Worker takes the current event loop at construction; give it a fresh one.
    asyncio.set_event_loop(asyncio.new_event_loop())
    kwargs: dict[str, Any] = get_kwargs(worker_settings(settings))
    ResilientWorker(**kwargs).run()


if __name__ == "__main__":
    run_worker(load_settings())
