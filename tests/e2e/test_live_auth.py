"""The live view under authentication: watch and stats scoped to the caller's projects, /metrics for
operators, the dashboard's page public, and watch streams that end when their token does."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry.auth.tokens import mint
from registry.settings import load_settings
from tests.e2e.stack import Stack, running_stack
from tests.reference import Reference, make_traffic, render_watched
from tests.sse import SseMessage, SseStream, open_stream
from tests.topology import Store, both_topologies, position_reached

SECRET = "live-auth-test-secret-" + "q" * 32
WATCH = "/api/v2/jobs/watch"
STATS = "/api/v2/jobs/stats"

pytestmark = both_topologies


@pytest.fixture
def stack(store: Store, tmp_path: Path) -> Iterator[Stack]:
    env = {"JOBREG_AUTH_SECRET": SECRET, "JOBREG_AUTH_LEEWAY_S": "0", "JOBREG_WATCH_HEARTBEAT_S": "0.3"}
    with running_stack(store, tmp_path, env=env) as s:
        yield s


def token(user: str, projects: list[str], *, admin: bool = False, ttl_s: int | None = None) -> str:
    return mint(load_settings({}, auth_secret=SECRET), user, projects, admin=admin, ttl_s=ttl_s)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def follow(resp: httpx.Response, until: str) -> dict[str, dict[str, Any]]:
    """Apply a watch's events until its position reaches ``until``; the job view it built."""
    view: dict[str, dict[str, Any]] = {}
    stream = SseStream()
    async for msg in stream.messages(resp):
        if msg.event in ("added", "modified"):
            job = msg.json()["job"]
            view[job["id"]] = job
        if position_reached(stream.last_event_id, until):
            return view
    raise AssertionError("stream ended")


async def test_watch_and_stats_are_scoped_to_the_callers_projects(stack: Stack) -> None:
    traffic = make_traffic(random.Random(41), 150, n_projects=4, bad_rate=0)
    ref = Reference()
    for entry in traffic:
        ref.add(entry)
    projects = sorted({j["project_id"] for j in ref.jobs().values()})
    mine = projects[:2]
    alice, root = token("alice", mine), token("root", [], admin=True)

    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as client:
        assert (await client.get(WATCH)).status_code == 401
        assert (await client.get(STATS)).status_code == 401
        streams = {}
        for name, tok in (("alice", alice), ("root", root)):
            streams[name], _ = await open_stream(client, WATCH, headers=bearer(tok))
            assert streams[name].status_code == 200
        stack.publish(traffic)
        await asyncio.to_thread(stack.wait_drained)
        final = stack.position()
        alice_view, root_view = await asyncio.wait_for(
            asyncio.gather(follow(streams["alice"], final), follow(streams["root"], final)), 30
        )
        for resp in streams.values():
            await resp.aclose()

        orders = {i: j["creation_order"] for i, j in root_view.items()}
        want = {i: render_watched(j, orders[i]) for i, j in ref.jobs().items()}
        assert root_view == want
        assert alice_view == {i: j for i, j in want.items() if j["project_id"] in mine}
        assert alice_view, "alice's projects have jobs"

        stats = (await client.get(STATS, headers=bearer(alice))).json()["data"]
        assert stats["total"] == len(alice_view)
        other = await client.get(STATS, headers=bearer(alice), params={"project_id": projects[3]})
        assert other.json()["data"]["total"] == 0  # someone else's project: nothing, not an error

        # /metrics counts every project's jobs: operators only.
        assert (await client.get("/metrics", headers=bearer(alice))).status_code == 403
        assert (await client.get("/metrics", headers=bearer(root))).status_code == 200
        # The page and its assets hold no data and need no token.
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/static/dashboard.js")).status_code == 200


async def test_a_watch_ends_when_its_token_expires(stack: Stack) -> None:
    short = token("root", [], admin=True, ttl_s=2)
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as client:
        resp, stream = await open_stream(client, WATCH, headers=bearer(short))
        assert resp.status_code == 200
        started = time.monotonic()
        messages: list[SseMessage] = []

        async def read() -> None:
            async for msg in stream.messages(resp):
                messages.append(msg)

        await asyncio.wait_for(read(), 15)  # returns when the server ends the stream
        await resp.aclose()
        assert messages[-1].event == "expired"
        assert messages[-1].json()["code"] == "401"
        assert time.monotonic() - started < 6
        again, _ = await open_stream(client, WATCH, headers=bearer(short))
        assert again.status_code == 401  # and the same token cannot reconnect
        await again.aclose()
