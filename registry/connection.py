"""Redis connections from JOBREG_REDIS_URL: API, workers (arq's pool included) and the CLI all connect through here.

redis-py reads everything from the URL: a percent-encoded password (``redis://:p%40ss@host``),
``rediss://`` for TLS and its query options (``?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required``),
the database. Building every client here, from the URL alone plus each caller's timeouts, means
every process connects the same way: arq's own ``RedisSettings.from_dsn`` neither decoded the
password nor read the TLS options, so the worker could not use a URL the API accepted.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis


def async_pool(url: str, **options: Any) -> aioredis.ConnectionPool:
    """A connection pool for ``url``; ``options`` are the caller's timeouts and retries, never address or auth."""
    return aioredis.ConnectionPool.from_url(url, **options)


def async_client(url: str, **options: Any) -> aioredis.Redis:
    """An asyncio client for ``url`` (see ``async_pool``)."""
    client: aioredis.Redis = aioredis.Redis.from_pool(async_pool(url, **options))  # closes its pool with it
    return client


def sync_client(url: str, **options: Any) -> redis.Redis:
    """A blocking client for ``url`` (the CLI's publisher and `jobreg up`)."""
    client: redis.Redis = redis.Redis.from_pool(redis.ConnectionPool.from_url(url, **options))
    return client


def node_url(url: str, host: str, port: int) -> str:
    """``url`` with its address replaced by ``host:port``: a cluster node reached with the same
    scheme, credentials, database and TLS options as the node the URL names (every node of a
    cluster shares them)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{address}" if userinfo else address))
