"""The arq host: the consumer loop starts in on_startup, housekeeping runs as arq cron jobs, outages are ridden out.

Everything goes through arq's public surface: the ``Worker`` constructor (hooks, cron jobs, redis
settings, signal handling), ``Worker.async_run()`` / ``close()`` and the ``on_stop`` callback its signal
handler calls. arq ends ``async_run()`` when Redis stays unreachable past its client's retries; ``serve``
then backs off and runs it again, so the worker survives outages of any length (see
tests/faults/test_redis_restarts.py). The hooks are idempotent because arq calls on_startup on each run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any
from urllib.parse import urlsplit

import arq.worker
import redis.asyncio as aioredis
from arq import cron
from arq.connections import ArqRedis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError, ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from registry.connection import async_client, async_pool
from registry.keys import Keys
from registry.nodes import ClusterRoute, connect, key_url
from registry.route import Route
from registry.settings import Settings, load_settings
from registry.store import layout
from workers.consumer import UNREACHABLE, Consumer
from workers.housekeeping import prune_consumers, reclaim, trim_stream
from workers.router import Router

log = logging.getLogger("jobreg.worker")

# After stop(), the consumer finishes its batch; a blocked read returns within block_ms.
SHUTDOWN_GRACE_S = 30.0
# Consumers restarted on a cluster's new master: one stuck on the failed one is cancelled after this.
FOLLOW_GRACE_S = 5.0
# Outages of any length: arq's run is restarted after a back-off growing up to this.
MAX_RESTART_BACKOFF_S = 5.0
# What ends arq's run when Redis goes away. arq handles a WatchError from a lost race itself; one that
# escapes comes from redis-py's WATCH on a connection that dropped (it wraps the ConnectionError).
OUTAGE = (*UNREACHABLE, WatchError)


def _arq_pool(settings: Settings, queue_name: str, url: str | None = None) -> ArqRedis:
    """arq's client, from the same URL and through the same path as every other client.

    Not ``RedisSettings.from_dsn``: it kept a percent-encoded password encoded and ignored
    ``rediss://`` options, so the worker failed where the API connected. A few quick retries per
    command absorb a blip; longer outages (start-up included) end arq's run and ``serve`` restarts it.
    ``url``: the server of the queue's slot on a cluster (``arq_url``); JOBREG_REDIS_URL by default.
    """
    pool = async_pool(
        url or settings.redis_url,
        socket_connect_timeout=5,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return ArqRedis(pool, default_queue_name=queue_name)


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("consumer loop ended unexpectedly", exc_info=task.exception())


class Host:
    """What arq's hooks and cron jobs share: the workers' own Redis client, the consumers and their tasks.

    One consumer loop per partition (each a member of that partition stream's group), and with more
    than one partition the router's loop on the ingress stream: every worker runs them all, so any
    number of workers share every partition through the consumer groups, and a worker that dies
    leaves entries that any other reclaims.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis: aioredis.Redis | None = None
        self.route: Route | None = None
        self.consumers: list[Consumer] = []  # one per partition, then the router (P > 1)
        self.tasks: list[asyncio.Task[None]] = []
        self._can_trim: bool | None = None  # None: not probed yet
        self.follower: asyncio.Task[None] | None = None  # on a cluster: follows failovers (follow)
        # startup (arq calls it again after each outage restart), follow and shutdown each swap the consumer
        # set across awaits: one at a time, or a restart during a follow's stop starts a second set of
        # consumers beside the one the follow then starts (and a second follower).
        self._swapping = asyncio.Lock()

    @property
    def consumer(self) -> Consumer | None:
        """Partition 0's consumer (the registry's only one when P = 1)."""
        return self.consumers[0] if self.consumers else None

    async def make_route(self) -> Route:
        """The partitions (P read, or stamped at a registry's first start) and the client of each: every
        partition on a standalone server, or each on its master of a cluster (registry/nodes.py)."""
        return await connect(
            self.settings,
            # Above the blocking read's own timeout, so only a dead connection trips it.
            socket_timeout=self.settings.block_ms / 1000 + 10,
            socket_connect_timeout=5,
            # No health_check_interval: it makes redis-py recurse without end on reconnecting
            # (redis/redis-py#3745); a dead connection fails the next command and the loop retries.
        )

    async def startup(self, ctx: dict[str, Any]) -> None:
        """arq's on_startup: start the consumer loops (once; arq calls this again after an outage restart)."""
        async with self._swapping:
            if not self.tasks:
                await self._first_start()

    async def _first_start(self) -> None:
        # A stored P other than the setting, or a store of another layout (any partition's), ends the
        # worker (exit status 3) before it writes anything; a store that is down ends arq's run here
        # and `serve` retries.
        route = self.route = self.route or await self.make_route()
        for i, k in enumerate(route.partitions.keys):
            await layout.ensure(route.client(i), k)
        self._start(route)
        if isinstance(route, ClusterRoute) and self.follower is None:
            self.follower = asyncio.create_task(
                route.follow(self.settings.housekeeping_interval_s, self.follow), name="jobreg-follow"
            )

    def _start(self, route: Route) -> None:
        """One consumer per partition on its server, and with more than one partition the router; each run."""
        keys = Keys(self.settings.prefix)
        # The contract's streams are served by their own slots' masters (one server off a cluster).
        self.redis, dead = route.key_client(keys.ingress), route.key_client(keys.dead)
        self.consumers = [
            Consumer(route.client(i), self.settings, k, dead=dead) for i, k in enumerate(route.partitions.keys)
        ]
        if route.partitions.count > 1:
            self.consumers.append(Router(self.redis, self.settings, route, dead=dead))
        for consumer in self.consumers:
            task = asyncio.create_task(consumer.run(), name=f"jobreg-consumer {consumer.keys.events}")
            task.add_done_callback(_log_crash)
            self.tasks.append(task)

    def _placed(self, route: Route) -> list[int]:
        """Which client each consumer should use now, and its dead-letter client (ids, comparable)."""
        keys = Keys(self.settings.prefix)
        wanted = [route.client(i) for i in range(route.partitions.count)]
        if route.partitions.count > 1:
            wanted.append(route.key_client(keys.ingress))
        return [id(c) for c in wanted] + [id(route.key_client(keys.dead))]

    async def follow(self) -> bool:
        """On a cluster, each time the route re-read the slot map (``ClusterRoute.follow``, a task of its own,
        not an arq cron job: arq's server may be the master that failed): when a partition or a contract
        stream is served by another master now, restart the consumers on the new masters (each re-reads what
        it had pending: nothing is lost). Whether they were restarted."""
        async with self._swapping:
            route = self.route
            if not isinstance(route, ClusterRoute) or not self.consumers:
                return False
            current = [id(c.redis) for c in self.consumers] + [id(self.consumers[0].dead_letterer.dead)]
            if current == self._placed(route):
                return False
            log.warning("a master changed (failover or reshard): restarting the consumers on the new ones")
            # The old set stays in self.tasks while it stops, so nothing else sees "no consumers" meanwhile.
            await _stop(self.consumers, self.tasks, FOLLOW_GRACE_S)
            self.consumers, self.tasks = [], []
            self._start(route)
            return True

    async def shutdown(self, ctx: dict[str, Any]) -> None:
        """arq's on_shutdown: stop the consumers after their batch, close the client. Safe to call twice."""
        follower, self.follower = self.follower, None
        if follower is not None:  # first, and awaited: a follow it is in the middle of ends before the stop
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        async with self._swapping:
            consumers, tasks, route = self.consumers, self.tasks, self.route
            self.consumers, self.tasks, self.redis, self.route = [], [], None, None
            await _stop(consumers, tasks, SHUTDOWN_GRACE_S + self.settings.block_ms / 1000)
        if route is not None:
            await route.aclose()

    async def reclaim(self, ctx: dict[str, Any]) -> int:
        """Cron job: per stream, dead-letter stuck entries, then claim and process idle ones of dead consumers."""
        assert self.redis is not None, "cron jobs run between startup and shutdown"
        handled = 0
        for consumer in list(self.consumers):
            handled += await reclaim(consumer.redis, self.settings, consumer)
        return handled

    async def trim(self, ctx: dict[str, Any]) -> int:
        """Cron job: per stream, prune idle group members, then trim acknowledged entries past retention."""
        assert self.redis is not None and self.consumers, "cron jobs run between startup and shutdown"
        if self._can_trim is None:
            # The embedded in-memory fakeredis (`jobreg up` without redis-server) cannot run the trim
            # scripts (XINFO inside Lua); it is a demo store, so it simply keeps its whole stream.
            self._can_trim = await _answers_info(self.redis)
            if not self._can_trim:
                log.warning("store is not a real Redis: stream trimming and consumer pruning are off")
        if not self._can_trim:
            return 0
        removed = 0
        for c in list(self.consumers):
            await prune_consumers(c.redis, self.settings, keep=c.name, keys=c.keys)
            removed += await trim_stream(c.redis, self.settings, keys=c.keys)
        return removed


async def _stop(consumers: list[Consumer], tasks: list[asyncio.Task[None]], grace_s: float) -> None:
    """Stop the consumers after their batch; cancel those still running after ``grace_s``."""
    for consumer in consumers:
        consumer.stop()
    if not tasks:
        return
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.gather(*tasks, return_exceptions=True)), grace_s)
    except TimeoutError:
        # Anything read but unacknowledged stays pending and is re-read on restart.
        log.warning("consumers did not stop in time; cancelling them")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _answers_info(redis: aioredis.Redis) -> bool:
    try:
        return "redis_version" in await redis.info(section="server")
    except RedisError:
        return False


async def _log_store(redis: Any, log_func: Any) -> None:
    """arq's start-up INFO log line, for a store without INFO (fakeredis), where arq's own would end the run."""
    log_func("store does not answer INFO (the embedded fakeredis); carrying on")


async def arq_url(settings: Settings) -> str:
    """The URL of the server holding arq's keys: JOBREG_REDIS_URL, or on a cluster the master of the
    slot of ``{<prefix>}`` (arq has no cluster support; every arq key carries that tag, registry/keys.py).
    An unreachable store gives JOBREG_REDIS_URL: arq's start-up waits for it as before."""
    try:
        route = await connect(settings, stamp=False, socket_connect_timeout=5)
    except (RedisError, OSError):
        return settings.redis_url
    try:
        return key_url(route, settings.redis_url, Keys(settings.prefix).arq_queue)
    finally:
        await route.aclose()


def build_worker(settings: Settings, host: Host, url: str | None = None) -> arq.worker.Worker:
    """An arq Worker for these settings whose hooks and cron jobs are ``host``'s; ``url``: arq's server
    (``arq_url``; JOBREG_REDIS_URL by default)."""
    keys = Keys(settings.prefix)
    every = max(1, min(60, settings.housekeeping_interval_s))
    # arq's one key not named after the queue or a job (a constant, `arq:abort`): a worker ZREMs it in the
    # same MULTI as the queue, which a cluster refuses across slots. Aborts are off (allow_abort_jobs), so
    # the set stays empty; naming it under the queue's tag keeps every arq command in one slot.
    arq.worker.abort_jobs_ss = keys.arq_abort  # type: ignore[attr-defined]
    return arq.worker.Worker(
        cron_jobs=[
            # arq keys job records by name, so the names carry our prefix.
            cron(
                host.reclaim,
                name=keys.arq_job("reclaim"),
                second=set(range(0, 60, every)),
                run_at_startup=True,
                timeout=300,
            ),
            cron(host.trim, name=keys.arq_job("trim"), second=set(range(every // 2, 60, every)), timeout=300),
        ],
        on_startup=host.startup,
        on_shutdown=host.shutdown,
        redis_pool=_arq_pool(settings, keys.arq_queue, url),
        queue_name=keys.arq_queue,
        # SIGTERM/SIGINT cancel arq's run and call on_stop, which ends `serve`.
        handle_signals=True,
    )


async def serve(worker: arq.worker.Worker, host: Host) -> None:
    """Run ``worker`` until a signal stops it, restarting its run after Redis outages; then shut down."""
    stopping = asyncio.Event()
    worker.on_stop = lambda _signal: stopping.set()
    backoff = 0.0
    try:
        while not stopping.is_set():
            started = time.monotonic()
            try:
                await worker.async_run()
                return
            except asyncio.CancelledError:
                if stopping.is_set():  # arq's signal handler cancelled its run: a clean stop
                    return
                raise
            except (*OUTAGE, ResponseError) as exc:
                if not _outage(exc):
                    raise
                if time.monotonic() - started > MAX_RESTART_BACKOFF_S:
                    backoff = 0.0  # a new outage after a healthy run starts the back-off afresh
                backoff = min(MAX_RESTART_BACKOFF_S, backoff * 2 or 0.2)
                log.warning("arq's run ended: redis unavailable (%s); restarting it in %.1fs", exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), backoff)
                await _repoint_arq(worker, host)
    finally:
        await _close(worker, host)


def _outage(exc: BaseException) -> bool:
    """Whether ``exc`` ends arq's run for a reason a restart on the right master fixes: Redis unreachable, or on
    a cluster a reply saying its keys' slot is not served here now (every master answers CLUSTERDOWN between a
    master's failure and its replica's promotion; READONLY, MOVED once the slot moved)."""
    if isinstance(exc, (*OUTAGE, ReadOnlyError)):
        return True
    return isinstance(exc, ResponseError) and str(exc).split(" ", 1)[0] in (
        "CLUSTERDOWN",
        "MASTERDOWN",
        "TRYAGAIN",
        "MOVED",
        "ASK",
    )


async def _repoint_arq(worker: arq.worker.Worker, host: Host) -> None:
    """On a cluster, point arq's pool at the master serving its keys' slot now (after a failover, another);
    read from the worker's route, which knows every node, not only the one JOBREG_REDIS_URL names."""
    route = host.route
    if not isinstance(route, ClusterRoute):
        return
    with contextlib.suppress(RedisError, OSError):
        await route.refresh()
    where = urlsplit(key_url(route, host.settings.redis_url, Keys(host.settings.prefix).arq_queue))
    kwargs = worker.pool.connection_pool.connection_kwargs
    if (kwargs.get("host"), kwargs.get("port")) != (where.hostname, where.port):
        log.warning("arq's keys are served by %s:%s now", where.hostname, where.port)
        kwargs.update(host=where.hostname, port=where.port)
        # Connections keep the address they were made with: drop them, new ones take the pool's.
        await worker.pool.connection_pool.disconnect()
        worker.pool.connection_pool.reset()  # type: ignore[no-untyped-call]


async def _close(worker: arq.worker.Worker, host: Host) -> None:
    try:
        # Waits for running jobs, deletes arq's health key, calls host.shutdown, closes arq's pool.
        await worker.close()
    except UNREACHABLE as exc:
        # During an outage the health-key delete fails before on_shutdown is reached.
        log.warning("arq's shutdown could not reach redis: %s", exc)
    except asyncio.CancelledError:
        # A cron job cancelled by the signal before it began surfaces here; only our own
        # cancellation is propagated.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    finally:
        await host.shutdown(worker.ctx)


def run_worker(settings: Settings) -> None:
    """Run the worker until SIGTERM/SIGINT (finish the batch in hand, shut down, return)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.worker_nice > 0:
        os.nice(settings.worker_nice)
    # arq's Worker takes the current event loop at construction; give it a fresh one.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if not loop.run_until_complete(_store_answers_info(settings)):
        # arq logs INFO at start and ends its run when the store cannot answer; `jobreg up`'s in-memory
        # fakeredis cannot. arq offers no hook for that log line, so for that store only, replace it.
        arq.worker.log_redis_info = _log_store  # type: ignore[attr-defined]
    host = Host(settings)
    worker = build_worker(settings, host, loop.run_until_complete(arq_url(settings)))
    loop.run_until_complete(serve(worker, host))


async def _store_answers_info(settings: Settings) -> bool:
    client = async_client(settings.redis_url, socket_connect_timeout=5)
    try:
        return await _answers_info(client) or not await _reachable(client)
    finally:
        await client.aclose()


async def _reachable(client: aioredis.Redis) -> bool:
    # An unreachable store is presumed real: arq's start-up waits for it, and INFO works once it is up.
    try:
        await client.ping()
        return True
    except RedisError:
        return False


if __name__ == "__main__":
    run_worker(load_settings())
