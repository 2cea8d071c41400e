"""The Litestar app factory: routes, error mapping, OpenAPI, and the Redis client in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from litestar import Litestar
from litestar.openapi.config import OpenAPIConfig
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from api.controllers import JobController, JobListController, Services, healthz
from api.errors import EXCEPTION_HANDLERS
from registry.executor import Executor
from registry.keys import Keys
from registry.settings import Settings

# A down Redis must answer 503 fast: refused connections fail at once, unreachable hosts
# after the connect timeout. One immediate retry on a connection error lets a request that
# picked a connection broken by a Redis restart reconnect transparently. No
# health_check_interval: with it, redis-py's asyncio client recurses without end when it
# reconnects after a restart (redis/redis-py#3745) and the request fails with a 500.
CONNECT_TIMEOUT_S = 1.0
SOCKET_TIMEOUT_S = 3.0


def redis_client(url: str) -> aioredis.Redis:
    client: aioredis.Redis = aioredis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
    )
    return client


def create_app(settings: Settings) -> Litestar:
    """Build the API; it connects to Redis lazily, so it starts (and answers 503) while Redis is down."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        client = redis_client(settings.redis_url)
        keys = Keys(settings.prefix)
        app.state.services = Services(settings, client, keys, Executor(client, keys, settings))
        try:
            yield
        finally:
            await client.aclose()

    return Litestar(
        route_handlers=[JobListController, JobController, healthz],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(
            title="jobreg",
            version="2",
            description="Event-driven job registry; GET /api/v2/jobs is compatible with Pasqal Cloud's core API.",
        ),
    )
