"""Watch, list-then-watch and /metrics over real processes and sockets (raw XADD -> 2 workers -> API -> SSE).

While traffic is being published: one watcher is cut off mid-stream and resumes with
Last-Event-ID; one lists with a status filter and watches from the list's position; one
pages through an unfiltered list and watches from its first page's position. Each must
end with every job exactly in its latest state (the reference's), and the resuming one
must have received every logged change once, in order.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.stack import Stack, running_stack
from tests.reference import Reference, decode, make_traffic, render_watched
from tests.sse import SseMessage, SseStream, open_stream
from tests.topology import Store, both_topologies, changes_after, per_partition, position_reached, standalone_only

WATCH = "/api/v2/jobs/watch"
JOBS = "/api/v2/jobs"
FILTER = [("status", "RUNNING"), ("status", "CANCELING")]
TIMEOUT_S = 60.0

pytestmark = both_topologies


@pytest.fixture
def stack(store: Store, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(store, tmp_path, workers=2, env={"JOBREG_WATCH_HEARTBEAT_S": "0.3"}) as s:
        yield s


class Watcher:
    """A client-side view kept from a watch: job id -> job, plus every change id received."""

    def __init__(self, client: httpx.AsyncClient, params: list[tuple[str, str]]) -> None:
        self.client = client
        self.params = params
        self.view: dict[str, dict[str, Any]] = {}
        self.ids: list[str] = []
        self.kinds: Counter[str] = Counter()
        self.stream = SseStream()
        self.resp: httpx.Response | None = None
        self.messages: AsyncIterator[SseMessage] | None = None
        self.reconnects = 0

    async def connect(self, position: str | None = None) -> None:
        params = [*self.params, *([("resource_version", position)] if position else [])]
        self.resp, stream = await open_stream(self.client, WATCH, params, last_event_id=self.stream.last_event_id)
        assert self.resp.status_code == 200, await self.resp.aread()
        assert self.resp.headers["content-type"].startswith("text/event-stream")
        stream.comments = self.stream.comments
        self.stream = stream
        self.messages = stream.messages(self.resp)  # one parser per connection, resumed by each read()
        await self.read(lambda w: True)  # the opening block: retry, and the stream's position as id
        assert self.stream.retry_ms is not None and self.stream.last_event_id

    async def disconnect(self) -> None:
        assert self.resp is not None
        await self.resp.aclose()
        self.resp = self.messages = None

    async def read(self, until: Any) -> None:
        """Apply events until ``until(self)`` holds (checked after every message and heartbeat)."""
        assert self.messages is not None
        async for msg in self.messages:
            if msg.event == "":  # heartbeat: only the position moves
                if until(self):
                    return
                continue
            assert msg.event in ("added", "modified", "removed"), msg
            body = msg.json()
            assert body["type"] == msg.event
            job = body["job"]
            self.ids.append(msg.id)
            self.kinds[msg.event] += 1
            if msg.event == "removed":
                self.view.pop(job["id"], None)
            else:
                self.view[job["id"]] = job
            if until(self):
                return
        raise AssertionError("stream ended")

    async def read_to(self, position: str) -> None:
        """Read until the stream's Last-Event-ID (moved by events or heartbeats) reaches ``position``."""
        await self.read(lambda w: position_reached(w.stream.last_event_id, position))


async def list_all(client: httpx.AsyncClient, params: list[tuple[str, str]]) -> tuple[str, list[dict[str, Any]]]:
    """Page through a list by creation_order (stable under inserts); the first page's position."""
    jobs: list[dict[str, Any]] = []
    position: str | None = None
    while True:
        page_params = [*params, ("order_by", "creation_order"), ("order_by_direction", "ASC")]
        r = await client.get(JOBS, params=[*page_params, ("limit", "100"), ("offset", str(len(jobs)))])
        assert r.status_code == 200, r.text
        if position is None:
            position = r.headers["x-resource-version"]
        page = r.json()["data"]
        if not page:
            return position, jobs
        jobs += page


def reference_of(entries: list[dict[str, str]]) -> Reference:
    ref = Reference()
    for e in entries:
        ref.add(e)
    return ref


def rendered(ref: Reference, orders: dict[str, int]) -> dict[str, dict[str, Any]]:
    return {job_id: render_watched(job, orders[job_id]) for job_id, job in ref.jobs().items()}


async def test_watchers_end_with_every_job_in_its_latest_state(stack: Stack) -> None:
    rng = random.Random(77)
    before = make_traffic(rng, 120)
    during = make_traffic(rng, 240)
    stack.publish(before)
    stack.wait_drained()

    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as client:
        # Resuming watcher: starts now, is cut off mid-stream, resumes with Last-Event-ID.
        resumer = Watcher(client, [])
        await resumer.connect()
        start = resumer.stream.last_event_id
        assert start == stack.position(), "the stream starts by telling its position"

        # Filtered list-then-watch: one page (the filter matches few), then watch from its position.
        r = await client.get(JOBS, params=[*FILTER, ("limit", "100")])
        filtered_position = r.headers["x-resource-version"]
        filtered = Watcher(client, FILTER)
        filtered.view = {j["id"]: j for j in r.json()["data"]}
        assert r.json()["pagination"]["total"] == len(filtered.view) <= 100

        publishing = threading.Thread(target=_publish_slowly, args=(stack, during))
        publishing.start()
        try:
            # Unfiltered list-then-watch, paging while the traffic changes things under it.
            paged_position, paged_jobs = await list_all(client, [])
            paged = Watcher(client, [])
            paged.view = {j["id"]: j for j in paged_jobs}
            await paged.connect(paged_position)
            await filtered.connect(filtered_position)

            await asyncio.wait_for(resumer.read(lambda w: len(w.ids) >= 60), TIMEOUT_S)
            await resumer.disconnect()  # mid-stream, while changes keep coming
            await asyncio.sleep(0.3)
            await resumer.connect()  # sends Last-Event-ID only: the URL has no position
            resumer.reconnects += 1
        finally:
            await asyncio.to_thread(publishing.join)
        await asyncio.to_thread(stack.wait_drained)
        final = stack.position()

        # Each API process publishes its gauges to the others every 0.5 s (api/siblings.py): the
        # resumer's closed first stream may still count on another process for that long.
        await _wait_watch_connections(client, 3)
        metrics = await client.get("/metrics")
        for w in (resumer, filtered, paged):
            await asyncio.wait_for(w.read_to(final), TIMEOUT_S)

        ref = reference_of(before + during)
        orders = {job_id: job["creation_order"] for job_id, job in paged.view.items()}
        want = rendered(ref, orders)
        assert set(orders) == set(want)

        # Every job exactly in its latest state. The list leaves the results link out and the watch
        # carries it, so the list-then-watch view is compared on the list's fields.
        def list_fields(view: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
            return {i: {k: v for k, v in j.items() if k != "results_link"} for i, j in view.items()}

        assert list_fields(paged.view) == list_fields(want)
        assert any(j["results_link"] for j in want.values()), "the traffic carries results links"
        filtered_want = {i: j for i, j in want.items() if j["status"] in {s for _, s in FILTER}}
        assert list_fields(filtered.view) == list_fields(filtered_want)
        assert filtered.kinds["removed"] > 0, "jobs that left the filter must be removed from the view"
        seen_by_resumer = {i: j for i, j in want.items() if i in resumer.view}
        assert resumer.view == seen_by_resumer

        # The resumer got every change after its start exactly once, in order (each partition's log order),
        # across the cut.
        assert per_partition(resumer.ids, start) == changes_after(stack.redis_url, stack.prefix, start)
        assert resumer.reconnects == 1

        _check_metrics(metrics.text, ref, before + during, open_watchers=3)

        for w in (resumer, filtered, paged):
            await w.disconnect()
        await _wait_watch_connections(client, 0)


def _publish_slowly(stack: Stack, entries: list[dict[str, str]]) -> None:
    for i in range(0, len(entries), 40):
        stack.publish(entries[i : i + 40])
        time.sleep(0.02)


def _check_metrics(text: str, ref: Reference, entries: list[dict[str, str]], *, open_watchers: int) -> None:
    families = {f.name: f for f in text_string_to_metric_families(text)}

    def values(name: str, label: str) -> dict[str, float]:
        return {s.labels[label]: s.value for s in families[name].samples if label in s.labels}

    valid = Counter(e["type"] for e in (decode(x) for x in entries) if e is not None)
    assert values("jobreg_events_consumed", "type") == {t: valid[t] for t in values("jobreg_events_consumed", "type")}
    assert values("jobreg_events_dead_lettered", "reason")["invalid"] == ref.invalid
    statuses = Counter(j["status"] for j in ref.jobs().values())
    assert values("jobreg_jobs", "status") == {s: statuses[s] for s in values("jobreg_jobs", "status")}
    single = {f.name: f.samples[0].value for f in families.values() if len(f.samples) == 1}
    assert single["jobreg_watch_connections"] == open_watchers
    assert single["jobreg_consumer_lag"] == 0
    assert single["jobreg_pending_entries"] == 0
    assert single["jobreg_dead_letters"] == ref.invalid
    apply_count = [s.value for s in families["jobreg_apply_duration_seconds"].samples if s.name.endswith("_count")]
    assert apply_count[0] > 0
    list_count = [
        s.value
        for s in families["jobreg_query_duration_seconds"].samples
        if s.name.endswith("_count") and s.labels["endpoint"] == "/api/v2/jobs"
    ]
    assert list_count and list_count[0] >= 4


async def _wait_watch_connections(client: httpx.AsyncClient, want: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        text = (await client.get("/metrics")).text
        line = next(x for x in text.splitlines() if x.startswith("jobreg_watch_connections "))
        if float(line.split()[1]) == want:
            return
        assert time.monotonic() < deadline, f"watch connections stuck at {line}"
        await asyncio.sleep(0.1)


async def test_heartbeats_keep_a_quiet_filtered_watch_resumable(stack: Stack) -> None:
    rng = random.Random(3)
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as client:
        quiet = Watcher(client, [("user_id", "nobody-watches-this")])
        await quiet.connect()
        stack.publish(make_traffic(rng, 30, bad_rate=0))
        await asyncio.to_thread(stack.wait_drained)
        final = stack.position()
        await asyncio.wait_for(quiet.read_to(final), TIMEOUT_S)
        assert quiet.ids == [], "nothing matched the filter"
        assert "heartbeat" in quiet.stream.comments
        # Reconnecting from the bookmarked position is not "gone" and replays nothing.
        await quiet.disconnect()
        await quiet.connect()
        assert quiet.resp is not None and quiet.resp.status_code == 200
        await quiet.disconnect()


@standalone_only("a 100-change log per partition: 200 jobs over 16 partitions trim none of the logs")
async def test_a_resume_point_older_than_the_log_is_410(store: Store, tmp_path: Path) -> None:
    env = {"JOBREG_CHANGE_LOG_RETENTION": "100"}
    with running_stack(store, tmp_path, env=env) as small:
        small.publish(make_traffic(random.Random(9), 200, bad_rate=0))
        small.wait_drained()
        async with httpx.AsyncClient(base_url=small.url, timeout=10) as client:
            for params, headers in (([("resource_version", "0-0")], {}), ([], {"Last-Event-ID": "1-0"})):
                r = await client.get(WATCH, params=params, headers=headers)
                assert r.status_code == 410, r.text
                body = r.json()
                assert (body["status"], body["code"]) == ("fail", "410")
                assert "list again" in body["message"]
            # The position a list gives is always resumable.
            position = (await client.get(JOBS, params=[("limit", "1")])).headers["x-resource-version"]
            resp, _ = await open_stream(client, WATCH, [("resource_version", position)])
            assert resp.status_code == 200
            await resp.aclose()
