"""GET /metrics in Prometheus text format, and the middleware that times query endpoints."""

from __future__ import annotations

import time
from collections import defaultdict

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.exceptions import PermissionDeniedException
from litestar.types import ASGIApp, Receive, Scope, Send

from api.auth import CurrentPrincipal
from api.services import LiveDep, ServicesDep
from registry.domain.model import EventType
from registry.ops.health import pipeline_health
from registry.ops.metrics import Exposition, Histogram, read_worker_counters, render_worker_counters
from registry.query.planner import plan
from registry.query.spec import JobQuery

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Streams and the page itself are not queries; their duration means nothing as a latency.
UNTIMED = ("/api/v2/jobs/watch",)


class QueryTimes:
    """Latency histograms of this API process, by endpoint (the route's path template)."""

    def __init__(self) -> None:
        self.by_endpoint: dict[str, Histogram] = defaultdict(Histogram)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def timed(scope: Scope, receive: Receive, send: Send) -> None:
            template = str(scope.get("path_template") or "")
            if not template.startswith("/api/") or template in UNTIMED:
                await app(scope, receive, send)
                return
            start = time.perf_counter()
            try:
                await app(scope, receive, send)
            finally:
                self.by_endpoint[template].observe(time.perf_counter() - start)

        return timed


# Provided app-wide by create_app (the middleware and the handler share one instance).
QueryTimesDep = NamedDependency[QueryTimes]


@get("/metrics", summary="Prometheus metrics", tags=["ops"], include_in_schema=True, media_type=CONTENT_TYPE)
async def metrics(
    services: ServicesDep, live: LiveDep, query_times: QueryTimesDep, principal: CurrentPrincipal
) -> Response[str]:
    if not principal.is_admin:
        # Fleet-wide counts of every project's jobs: for operators (an admin token), not users.
        raise PermissionDeniedException("metrics need an operator (admin) token")
    out = Exposition()
    render_worker_counters(out, await read_worker_counters(services.redis, services.keys), [t.value for t in EventType])
    health = await pipeline_health(services.redis, services.keys, services.settings.group)
    gauges: list[tuple[str, str, float | None]] = [
        ("jobreg_consumer_lag", "Events stream entries not yet delivered to the workers' group.", health.consumer_lag),
        ("jobreg_pending_entries", "Entries delivered to a worker but not yet acknowledged.", health.pending),
        ("jobreg_dead_letters", "Entries in the dead-letter stream.", health.dead_letters),
        ("jobreg_events_stream_length", "Entries in the events stream.", health.events),
        ("jobreg_change_log_length", "Changes kept in the change log for watch resumption.", health.changes_retained),
    ]
    for name, help_text, value in gauges:
        if value is not None:
            out.family(name, "gauge", help_text)
            out.sample(name, value)
    counts = await services.executor.counts(plan(JobQuery(), services.keys))
    out.family("jobreg_jobs", "gauge", "Listed jobs by status.")
    for status, n in counts.by_status.items():
        out.sample("jobreg_jobs", n, {"status": status})
    out.family("jobreg_query_duration_seconds", "histogram", "Time to answer a query endpoint (this API process).")
    for endpoint, hist in sorted(query_times.by_endpoint.items()):
        out.histogram("jobreg_query_duration_seconds", hist, {"endpoint": endpoint})
    m = live.metrics
    out.family("jobreg_watch_connections", "gauge", "Open watch streams (this API process).")
    out.sample("jobreg_watch_connections", m.watch_connections)
    out.family("jobreg_watch_events_sent_total", "counter", "Watch events sent, by kind (this API process).")
    for kind in ("added", "modified", "removed"):
        out.sample("jobreg_watch_events_sent_total", m.kinds.get(kind, 0), {"kind": kind})
    out.family("jobreg_watch_gone_total", "counter", "Watches told their resume point is gone (this API process).")
    out.sample("jobreg_watch_gone_total", m.watch_gone)
    return Response(out.text(), media_type=CONTENT_TYPE)
