"""GET /metrics in Prometheus text format (via prometheus-client), and the middleware that times query endpoints."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.exceptions import PermissionDeniedException
from litestar.types import ASGIApp, Receive, Scope, Send
from prometheus_client import Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.auth import CurrentPrincipal
from api.services import LiveMetrics, ServicesDep
from api.siblings import Summed
from registry.domain.model import EventType
from registry.live.feed import ChangeFeed
from registry.ops.health import PipelineHealth, pipeline_health
from registry.ops.metrics import LATENCY_BUCKETS, WorkerCollector, read_worker_counters, without_created
from registry.query.spec import JobQuery

if TYPE_CHECKING:
    from api.shedding import InFlight

# The classic text format: what every Prometheus and our own tests parse.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Streams and the page itself are not queries; their duration means nothing as a latency.
UNTIMED = ("/api/v2/jobs/watch",)


class QueryTimes(Collector):
    """Latency histograms of this API process, by endpoint (the route's path template)."""

    def __init__(self) -> None:
        # registry=None: this app's /metrics renders it itself; nothing global (several apps share a test process).
        self.histogram = Histogram(
            "jobreg_query_duration_seconds",
            "Time to answer a query endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )

    def collect(self) -> Iterator[Metric]:
        return without_created(self.histogram.collect())

    def middleware(self, app: ASGIApp) -> ASGIApp:
        # Each endpoint's histogram child, looked up once: labels() takes a lock and builds a key per call.
        children: dict[str, Any] = {}

        async def timed(scope: Scope, receive: Receive, send: Send) -> None:
            template = str(scope.get("path_template") or "")
            if not template.startswith("/api/") or template in UNTIMED:
                await app(scope, receive, send)
                return
            start = time.perf_counter()
            try:
                await app(scope, receive, send)
            finally:
                child = children.get(template)
                if child is None:
                    child = children[template] = self.histogram.labels(template)
                child.observe(time.perf_counter() - start)

        return timed


# Provided app-wide by create_app: this process's counters and latencies, summed with its siblings'.
ProcessMetricsDep = NamedDependency[Summed]


class Snapshot(Collector):
    """What one scrape read from the store: the pipeline's health and jobs by status."""

    def __init__(self, health: PipelineHealth, by_status: dict[str, int]) -> None:
        self.health, self.by_status = health, by_status

    def collect(self) -> Iterator[Metric]:
        h = self.health
        gauges: Iterable[tuple[str, str, float | None]] = (
            ("jobreg_consumer_lag", "Events stream entries not yet delivered to the workers' group.", h.consumer_lag),
            ("jobreg_pending_entries", "Entries delivered to a worker but not yet acknowledged.", h.pending),
            ("jobreg_dead_letters", "Entries in the dead-letter stream.", h.dead_letters),
            ("jobreg_events_stream_length", "Entries in the events stream.", h.events),
            ("jobreg_change_log_length", "Changes kept in the change log for watch resumption.", h.changes_retained),
        )
        for name, doc, value in gauges:
            if value is not None:  # Redis cannot always tell the lag: leave it out rather than lie
                yield GaugeMetricFamily(name, doc, value=value)
        jobs = GaugeMetricFamily("jobreg_jobs", "Listed jobs by status.", labels=["status"])
        for status, n in self.by_status.items():
            jobs.add_metric([status], n)
        yield jobs


class ProcessCounters(Collector):
    """One API process's live counters and shed requests (summed over the API's processes by api/siblings.py)."""

    def __init__(self, live: LiveMetrics, in_flight: InFlight) -> None:
        self.live, self.in_flight = live, in_flight

    def collect(self) -> Iterator[Metric]:
        m = self.live
        yield GaugeMetricFamily("jobreg_watch_connections", "Open watch streams.", value=m.watch_connections)
        sent = CounterMetricFamily("jobreg_watch_events_sent", "Watch events sent, by kind.", labels=["kind"])
        for kind in ("added", "modified", "removed"):
            sent.add_metric([kind], m.kinds.get(kind, 0))
        yield sent
        yield CounterMetricFamily("jobreg_watch_gone", "Watches told their resume point is gone.", value=m.watch_gone)
        yield from feed_metrics(m.feeds)
        yield CounterMetricFamily(
            "jobreg_requests_shed",
            "Requests answered 503 at once because their API process had api_max_in_flight in progress.",
            value=self.in_flight.shed,
        )


def feed_metrics(feeds: Iterable[ChangeFeed]) -> Iterator[Metric]:
    """The live view per partition and per node (issue 14): each change feed's subscribers (by partition and the
    node it reads from now: sum by node for a node's load), its reads and reconnects (by partition: a counter
    keeps its series when a failover or a reshard moves the feed), and how many feeds read from each node."""
    subscribers = GaugeMetricFamily(
        "jobreg_change_feed_subscribers", "Watches following a partition's change feed.", labels=["partition", "node"]
    )
    on_node = GaugeMetricFamily("jobreg_change_feeds", "Change feeds reading from each node.", labels=["node"])
    reads = CounterMetricFamily(
        "jobreg_change_feed_reads", "Change log reads that brought changes.", labels=["partition"]
    )
    reconnects = CounterMetricFamily(
        "jobreg_change_feed_reconnects",
        "Change feed connections rebuilt after a failed read (on a cluster, at the partition's master then).",
        labels=["partition"],
    )
    lost = CounterMetricFamily(
        "jobreg_change_feed_lost",
        "Reconnects that found a partition's change log behind changes already delivered (lost in a failover).",
        labels=["partition"],
    )
    nodes: dict[str, int] = {}
    for feed in feeds:
        part = str(feed.partition)
        reads.add_metric([part], feed.reads)
        reconnects.add_metric([part], feed.reconnects)
        lost.add_metric([part], feed.lost)
        if feed.node:  # a feed starts with its process's first watch: no node (and no subscriber) before
            subscribers.add_metric([part, feed.node], feed.subscribers)
            nodes[feed.node] = nodes.get(feed.node, 0) + 1
    for node, n in sorted(nodes.items()):
        on_node.add_metric([node], n)
    yield from (subscribers, on_node, reads, reconnects, lost)


class Scrape(Collector):
    """The collectors of one scrape, in exposition order."""

    def __init__(self, *parts: Collector) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield from part.collect()


@get("/metrics", summary="Prometheus metrics", tags=["ops"], include_in_schema=True, media_type=CONTENT_TYPE)
async def metrics(
    services: ServicesDep, process_metrics: ProcessMetricsDep, principal: CurrentPrincipal
) -> Response[bytes]:
    if not principal.is_admin:
        # Fleet-wide counts of every project's jobs: for operators (an admin token), not users.
        raise PermissionDeniedException("metrics need an operator (admin) token")
    route = services.executor.route  # with partitions, summed over every partition and the router
    workers = WorkerCollector(
        await read_worker_counters(services.redis, services.keys, route), [t.value for t in EventType]
    )
    health = await pipeline_health(services.redis, services.keys, services.settings.group, route)
    counts = await services.executor.counts(JobQuery())
    body = generate_latest(Scrape(workers, Snapshot(health, dict(counts.by_status)), process_metrics))
    return Response(body, media_type=CONTENT_TYPE)
