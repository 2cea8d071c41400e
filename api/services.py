"""What handlers are given: the services built in the app's lifespan, and their providers for dependency injection.

A handler names what it needs as a parameter (``services: ServicesDep``, ``live: LiveDep``,
``process_metrics: ProcessMetricsDep``, ``principal: CurrentPrincipal``); ``create_app`` registers the providers
app-wide, so no handler reads ``app.state`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from api.sessions import Streams
from registry.keys import Keys
from registry.live.feed import ChangeFeed
from registry.query.page_token import PageTokens
from registry.query.scatter import Scatter
from registry.settings import Settings
from registry.store.layout import LayoutGate


@dataclass(frozen=True)
class Services:
    """The query side: settings, Redis client, keys, executor, layout gate, page tokens (``app.state.services``)."""

    settings: Settings
    redis: aioredis.Redis
    keys: Keys
    executor: Scatter  # every partition's executor behind one interface (today's Executor when P = 1)
    layout: LayoutGate
    page_tokens: PageTokens


@dataclass
class LiveMetrics:
    """Per-process counters of the live endpoints, rendered by /metrics."""

    watch_connections: int = 0
    watch_events_sent: int = 0
    watch_gone: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    # This process's change feeds, one per partition (set where they are built, api/app.py): /metrics reports
    # each one's subscribers, reads and reconnects, labelled by partition and by the node it reads from.
    feeds: tuple[ChangeFeed, ...] = ()


@dataclass(frozen=True)
class Live:
    """The live side: this process's change feed, its counters and its open streams (``app.state.live``);
    with partitions, ``feeds[i]`` follows partition i's change log (``feed`` is partition 0's)."""

    feed: ChangeFeed
    metrics: LiveMetrics
    streams: Streams
    feeds: tuple[ChangeFeed, ...] = ()


# How a handler asks for them (the parameter name picks the provider).
ServicesDep = NamedDependency[Services]
LiveDep = NamedDependency[Live]


def provide_services(state: State) -> Services:
    services: Services = state.services
    return services


def provide_live(state: State) -> Live:
    live: Live = state.live
    return live


def dependencies() -> dict[str, Provide]:
    """The app-wide providers of what the lifespan built (the lifespan sets ``state.services``/``state.live``)."""
    return {
        "services": Provide(provide_services, sync_to_thread=False),
        "live": Provide(provide_live, sync_to_thread=False),
    }
