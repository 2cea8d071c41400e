"""Several API processes: per-process metrics summed through shared slots, and the in-flight bound."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import ProcessCounters, QueryTimes
from api.services import LiveMetrics
from api.shedding import RETRY_AFTER_S, InFlight
from api.siblings import Sibling, Slots, Summed


def _values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def _process(live: LiveMetrics, shed: int, latencies: dict[str, list[float]]) -> tuple[ProcessCounters, QueryTimes]:
    in_flight = InFlight(1)
    in_flight.shed = shed
    times = QueryTimes()
    for endpoint, seconds in latencies.items():
        for s in seconds:
            times.histogram.labels(endpoint).observe(s)
    return ProcessCounters(live, in_flight), times


def test_a_scrape_of_one_process_sums_every_process_including_a_forked_one() -> None:
    slots = Slots(2)
    # Process 1 (forked, so the slot really crosses processes): 2 watchers, one endpoint only it served.
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        live = LiveMetrics(watch_connections=2, kinds={"added": 5}, watch_gone=1)
        child = Summed(_process(live, 3, {"/api/v2/jobs/{id}": [0.2]}), Sibling(slots, 1))
        child.publish()
        os._exit(0)
    os.waitpid(pid, 0)
    mine = Summed(
        _process(LiveMetrics(watch_connections=1, kinds={"added": 1, "removed": 4}), 0, {"/api/v2/jobs": [0.001, 0.3]}),
        Sibling(slots, 0),
    )
    values = _values(generate_latest(mine).decode())  # type: ignore[arg-type]
    assert values[("jobreg_watch_connections", ())] == 3
    assert values[("jobreg_watch_events_sent_total", (("kind", "added"),))] == 6
    assert values[("jobreg_watch_events_sent_total", (("kind", "removed"),))] == 4
    assert values[("jobreg_watch_gone_total", ())] == 1
    assert values[("jobreg_requests_shed_total", ())] == 3
    assert values[("jobreg_query_duration_seconds_count", (("endpoint", "/api/v2/jobs"),))] == 2
    assert values[("jobreg_query_duration_seconds_count", (("endpoint", "/api/v2/jobs/{id}"),))] == 1
    assert values[("jobreg_query_duration_seconds_bucket", (("endpoint", "/api/v2/jobs/{id}"), ("le", "+Inf")))] == 1


def test_one_process_alone_reports_its_own_figures() -> None:
    alone = Summed(_process(LiveMetrics(watch_connections=4), 2, {"/api/v2/jobs": [0.01]}), None)
    values = _values(generate_latest(alone).decode())  # type: ignore[arg-type]
    assert values[("jobreg_watch_connections", ())] == 4
    assert values[("jobreg_requests_shed_total", ())] == 2
    assert values[("jobreg_query_duration_seconds_count", (("endpoint", "/api/v2/jobs"),))] == 1


def test_a_slot_holds_the_latest_write() -> None:
    slots = Slots(3)
    assert slots.read(2) == b""
    slots.write(2, b"first")
    slots.write(2, b"second, longer")
    assert slots.read(2) == b"second, longer"
    assert slots.read(1) == b""


async def test_past_the_bound_requests_get_503_with_retry_after_at_once_and_the_rest_go_through() -> None:
    release = asyncio.Event()
    served = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal served
        await release.wait()
        served += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    in_flight = InFlight(2)
    bounded = in_flight.middleware(app)

    async def request(path_template: str = "/api/v2/jobs") -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "path_template": path_template}
        await bounded(scope, None, send)  # type: ignore[arg-type]
        return sent

    held = [asyncio.create_task(request()) for _ in range(2)]
    await asyncio.sleep(0.01)
    refused = await asyncio.wait_for(request(), 1)  # answered while the other two still wait
    assert refused[0]["status"] == 503
    assert (b"retry-after", str(RETRY_AFTER_S).encode()) in refused[0]["headers"]
    assert in_flight.shed == 1
    watch = asyncio.create_task(request("/api/v2/jobs/watch"))  # streams are not counted
    await asyncio.sleep(0.01)
    assert not watch.done()
    release.set()
    for task in [*held, watch]:
        assert (await task)[0]["status"] == 200
    assert (await request())[0]["status"] == 200
    assert served == 4 and in_flight.current == 0
