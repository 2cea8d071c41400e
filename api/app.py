"""The Litestar app factory: routes, error mapping, OpenAPI, and the Redis client in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import redis.asyncio as aioredis
from litestar import Litestar, Request
from litestar.di import Provide
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from api.auth import auth_middleware, principal_dependency
from api.controllers import JobController, JobListController, JobReadsV1Controller, healthz
from api.dashboard import dashboard_routes
from api.deadletters import DeadLetterController
from api.errors import EXCEPTION_HANDLERS
from api.heap import HeapTrimmer
from api.live import LiveController
from api.metrics import ProcessCounters, QueryTimes, metrics
from api.schema_docs import OfflineSwagger
from api.services import Live, LiveMetrics, Services, dependencies
from api.sessions import Streams
from api.shedding import InFlight
from api.siblings import Sibling, Summed
from registry.auth.tokens import Verifier
from registry.connection import async_client
from registry.errors import LayoutMismatch
from registry.keys import Keys
from registry.live.feed import ChangeFeed
from registry.nodes import ClusterRoute, connect, locate, outside_client, partition_url
from registry.partition import Partitions
from registry.query.page_token import PageTokens
from registry.query.scatter import Scatter
from registry.route import OneNode, OnKey, Route
from registry.settings import Settings
from registry.store.layout import LayoutGate

log = logging.getLogger("jobreg.api")

# A down Redis must answer 503 fast: refused connections fail at once, unreachable hosts
# after the connect timeout. One immediate retry on a connection error lets a request that
# picked a connection broken by a Redis restart reconnect transparently. No
# health_check_interval: with it, redis-py's asyncio client recurses without end when it
# reconnects after a restart (redis/redis-py#3745) and the request fails with a 500.
CONNECT_TIMEOUT_S = 1.0
SOCKET_TIMEOUT_S = 3.0


# Routes that read the store: they answer 503 naming `jobreg migrate` while its layout is not this code's.
STORE_ROUTES = ("/api/", "/healthz")


async def _layout_gate(request: Request[Any, Any, Any]) -> None:
    """Raise LayoutMismatch (a 503, see api/errors.py) for a store route while the layout is not understood,
    and learn the registry's stored P before the first store request is answered."""
    path = request.url.path
    # The servers first (on a cluster the layout lives on its tag's master), then the layout.
    if not request.app.state.partitions_known and path.startswith((*STORE_ROUTES, "/metrics")):
        # One learner: concurrent first requests would each open a route, a cluster client and a follower,
        # and all but the last would leak (a follower task left running, clients never closed).
        async with request.app.state.learning:
            if not request.app.state.partitions_known:
                await _learn_partitions(request.app)
    if path.startswith(STORE_ROUTES):
        services: Services = request.app.state.services
        await services.layout.check()


async def _learn_partitions(app: Litestar) -> None:
    """Serve the registry's stored P (registry/store/partitions.py; stamped by the workers or `jobreg api` at
    its first start) on the servers that hold it: read once, when the store first answers, so an API started
    while Redis is down never serves a partitioned registry as one partition, nor a cluster as one server.
    A RedisError here is a 503 like any other."""
    services: Services = app.state.services
    live: Live = app.state.live
    settings = services.settings
    route = await connect(settings, stamp=False, **CLIENT_OPTIONS)
    if isinstance(route, OneNode):  # a standalone server: the lifespan's client serves everything
        await route.aclose()
        route = OneNode(services.redis, route.partitions)
        if route.partitions.count == services.executor.partitions.count:
            app.state.partitions_known = True
            return
    else:
        # A cluster: the keys outside the partitions (the contract's streams, the counters) through a
        # cluster client (single-key commands only, each sent to its slot's master); the layout and
        # page-token keys, under the prefix's tag, through that slot's master.
        app.state.cluster = (route, outside_client(route, settings.redis_url, **CLIENT_OPTIONS))
        if isinstance(route, ClusterRoute):
            # The scatter asks route.client(i) per call: after a failover or a reshard, the partitions' reads
            # go to their new masters from the route's next refresh on.
            app.state.follower = asyncio.create_task(route.follow(settings.housekeeping_interval_s))
        # Through the route at each use, not a client of the master at start: a first check or a first
        # page token after a failover of the prefix's master goes to the promoted replica.
        keys = services.keys
        services = dataclasses.replace(
            services,
            redis=cast(aioredis.Redis, app.state.cluster[1]),
            layout=LayoutGate(OnKey(route, keys.layout), keys),
            page_tokens=PageTokens(OnKey(route, keys.page_token_key), keys),
        )
    # No request has used the old services yet (this gate runs first), so no feed has started.
    app.state.services = dataclasses.replace(services, executor=Scatter(route, settings))
    feeds = change_feeds(settings, route)
    live.metrics.feeds = feeds
    app.state.live = dataclasses.replace(live, feed=feeds[0], feeds=feeds)
    app.state.partitions_known = True


def _feed_client(route: Route, url: str, i: int) -> aioredis.Redis:
    return redis_client(partition_url(route, url, i))


def change_feeds(settings: Settings, route: Route) -> tuple[ChangeFeed, ...]:
    """One change feed per partition's change log, each with its own blocking connection (registry/live/feed.py)
    to the server of its partition. On a cluster a feed whose read fails (its master died, or its slot moved:
    MOVED) has the route find the partition's master (``locate``), connects there and reads on from its position."""
    cluster = isinstance(route, ClusterRoute)
    return tuple(
        ChangeFeed(
            functools.partial(_feed_client, route, settings.redis_url, i),
            keys,
            # Idle reads time out at least twice per heartbeat period: they pace the heartbeats.
            block_ms=max(50, min(1000, int(settings.watch_heartbeat_s * 500))),
            count=min(1000, settings.change_log_retention),
            locate=functools.partial(locate, route, i) if cluster else None,
            partition=i,
        )
        for i, keys in enumerate(route.partitions.keys)
    )


BEARER = "BearerToken"
BEARER_SCHEME = SecurityScheme(
    type="http", scheme="bearer", bearer_format="JWT", description="A JWT; see README, Authentication."
)


CLIENT_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": CONNECT_TIMEOUT_S,
    "socket_timeout": SOCKET_TIMEOUT_S,
    "retry": Retry(NoBackoff(), 1),
    "retry_on_error": [RedisConnectionError],
}


def redis_client(url: str) -> aioredis.Redis:
    return async_client(url, **CLIENT_OPTIONS)


def create_app(
    settings: Settings, *, announce_open: bool = True, sibling: Sibling | None = None, partitions: int | None = None
) -> Litestar:
    """Build the API; it connects to Redis lazily, so it starts (and answers 503) while Redis is down.

    With JOBREG_AUTH_* key material every route but /healthz and /schema needs a bearer token
    (see api/auth.py); without, the API is open, which `jobreg api` allows only with --no-auth.
    Raises AuthConfigError for unusable auth settings. ``announce_open=False``: the caller (`jobreg up`)
    says itself that auth is off. ``sibling``: this process's place among several serving one socket
    (api/server.py), whose per-process metrics /metrics sums. ``partitions``: the registry's P (issue 14);
    None: the P stored in Redis, read when the store first answers (see _learn_partitions).
    """
    verifier = Verifier.from_settings(settings)
    if verifier is None and announce_open:
        log.warning("authentication is OFF: every caller sees every project's jobs")

    query_times = QueryTimes()
    in_flight = InFlight(settings.api_max_in_flight)
    live_metrics = LiveMetrics()
    process_metrics = Summed([ProcessCounters(live_metrics, in_flight), query_times], sibling)
    # Built here, not in the lifespan: the server drains it on SIGTERM (api/server.py).
    streams = Streams(settings.watch_max_per_caller, settings.watch_max_streams, HeapTrimmer())

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        client = redis_client(settings.redis_url)
        keys = Keys(settings.prefix)
        gate = LayoutGate(client, keys)
        # Every partition on the one server (a cluster route plugs in here, issue 14); P given, or the
        # stored one learnt before the first store request (one partition until then).
        route = OneNode(client, Partitions(settings.prefix, partitions or 1))
        app.state.partitions_known = partitions is not None
        app.state.learning = asyncio.Lock()  # serializes _learn_partitions
        app.state.cluster = None  # (route, cluster client) once a cluster is learnt
        app.state.follower = None  # the task following the cluster's slot map (ClusterRoute.follow)
        app.state.services = Services(settings, client, keys, Scatter(route, settings), gate, PageTokens(client, keys))
        # Stamps an empty registry's layout now; a store that is down, or holds another layout, is
        # (re)checked on each request until it passes (see _layout_gate).
        with contextlib.suppress(RedisError, LayoutMismatch):
            await gate.check()
        feeds = live_metrics.feeds = change_feeds(settings, route)
        app.state.live = Live(feeds[0], live_metrics, streams, feeds)
        publishing = asyncio.create_task(process_metrics.publish_forever()) if sibling else None
        try:
            yield
        finally:
            for task in (publishing, app.state.follower):
                if task is not None:
                    task.cancel()
            for feed in app.state.live.feeds:
                await feed.close()
            await client.aclose()
            if app.state.cluster is not None:
                for part in app.state.cluster:
                    await part.aclose()

    app = Litestar(
        route_handlers=[
            JobListController,
            LiveController,
            JobController,
            JobReadsV1Controller,
            DeadLetterController,
            healthz,
            metrics,
            *dashboard_routes(),
        ],
        lifespan=[lifespan],
        before_request=_layout_gate,
        exception_handlers=EXCEPTION_HANDLERS,
        # Shedding outermost (an overloaded process refuses before it checks a token), then authentication;
        # the timing sees only requests that got through both.
        middleware=[
            in_flight.middleware,
            *([] if verifier is None else [auth_middleware(verifier, settings.auth_max_header_bytes)]),
            query_times.middleware,
        ],
        # Handlers name what they need (services, live, process_metrics, principal); nothing reads app.state.
        dependencies={
            **dependencies(),
            "process_metrics": Provide(lambda: process_metrics, sync_to_thread=False),
            "principal": principal_dependency(enabled=verifier is not None),
        },
        openapi_config=OpenAPIConfig(
            title="jobreg",
            version="2",
            description="Event-driven job registry; GET /api/v2/jobs is compatible with Pasqal Cloud's core API.",
            components=Components(security_schemes={BEARER: BEARER_SCHEME} if verifier else None),
            security=[{BEARER: []}] if verifier else None,
            # Swagger UI from the swagger-ui-py wheel: the page works without internet access.
            render_plugins=[OfflineSwagger()],
        ),
    )
    app.state.streams = streams
    return app
