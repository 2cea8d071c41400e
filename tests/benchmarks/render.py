"""The API process's own cost per list request: the whole ASGI app in-process, on a real Redis with real data.

    .venv/bin/python -m tests.benchmarks.render [--jobs 20000] [--keep DIR] [--repeat 200] [--profile FILE]

Loads ``--jobs`` generated jobs (datagen.py, through the Projection; ``--keep DIR`` keeps them for the
next run) into a private redis-server, builds the app with ``create_app`` (auth on, one HS256 admin
token) and calls it as an ASGI application, without a server or a socket: what is timed is exactly
the Python the API process runs for a request (middleware, token check, parameter parsing, planning,
the Redis call(s), rendering the page, encoding the body), plus the Redis round trips. Each query is
timed ``--repeat`` times after a warm-up; best and median in µs, wall and this process's CPU. ``floor``
is an id matching nothing (no record read: the per-request cost alone). A second table times what the
handler calls without the framework around it (parse, plan, the executor's listing, the body encoded).
``--profile FILE`` writes a cProfile (CPU time) of the first table's loop instead.
Compare the rows of one run, or runs made back to back: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import statistics
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import redis

from tests.benchmarks.datagen import largest_project, make_plan, mid_project
from tests.benchmarks.harness import PREFIX, SECRET, load_jobreg, start_redis

Params = list[tuple[str, str]]


def queries(plan: Any) -> list[tuple[str, Params]]:
    """Realistic pages: no filter, a status, a project and statuses, another order; limits 100 and 10."""
    big, mid = largest_project(plan).id, mid_project(plan).id
    shapes: list[tuple[str, Params]] = [
        ("no filter", []),
        ("status=DONE", [("status", "DONE")]),
        ("big project & DONE,ERROR", [("project_id", big), ("status", "DONE"), ("status", "ERROR")]),
        ("mid project by runs ASC", [("project_id", mid), ("order_by", "runs"), ("order_by_direction", "ASC")]),
        ("origin=CLIENT by end DESC", [("origin", "CLIENT"), ("order_by", "end_timestamp")]),
    ]
    out: list[tuple[str, Params]] = [("floor (id matching nothing)", [("id", "00000000-0000-4000-8000-000000000000")])]
    for limit in (100, 10):
        out += [(f"{name}, limit {limit}", [*params, ("limit", str(limit))]) for name, params in shapes]
    return out


class _Capture:
    """An ASGI send that keeps the status and the body."""

    def __init__(self) -> None:
        self.status = 0
        self.body = bytearray()

    async def __call__(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")


async def _receive() -> Any:
    return {"type": "http.request", "body": b"", "more_body": False}


def _scope(app: Any, path: str, query: bytes, token: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"bench"), (b"authorization", f"Bearer {token}".encode()), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
        "app": app,
    }


async def request(app: Any, query: bytes, token: str) -> _Capture:
    """One GET /api/v2/jobs through the whole ASGI app."""
    sent = _Capture()
    await app(_scope(app, "/api/v2/jobs", query, token), _receive, sent)
    return sent


async def core(app: Any, params: Params) -> int:
    """What the handler calls, without the framework around it: parse, plan, the store's answer
    rendered, the body encoded (bytes of the body)."""
    import msgspec

    from api.controllers import JobsPage, Pagination
    from api.params import parse_query
    from registry.query.planner import plan

    services = app.state.services
    query = parse_query(params)
    page = await services.executor.listing(plan(query, services.keys))
    end = query.offset + len(page.jobs)
    body = JobsPage(data=page.jobs, pagination=Pagination(total=page.total, start=query.offset, end=end))
    return len(msgspec.json.encode(body))


def _row(name: str, size: int, walls: list[float], cpus: list[float]) -> str:
    return (
        f"{name:40} {size:7d} {min(walls) * 1e6:8.0f} {statistics.median(walls) * 1e6:9.0f}"
        f" {min(cpus) * 1e6:8.0f} {statistics.median(cpus) * 1e6:10.0f}"
    )


async def measure(
    url: str, qs: Sequence[tuple[str, Params]], repeat: int, profile: str | None, only: str | None
) -> None:
    from api.app import create_app
    from registry.auth.tokens import mint
    from registry.settings import load_settings

    settings = load_settings({"JOBREG_REDIS_URL": url, "JOBREG_PREFIX": PREFIX, "JOBREG_AUTH_SECRET": SECRET})
    token = mint(settings, "bench", [], admin=True, ttl_s=86400)
    app = create_app(settings, announce_open=False)
    chosen = [(name, params) for name, params in qs if only is None or only in name]
    encoded = [(name, urlencode(params).encode()) for name, params in chosen]
    async with app.lifespan():
        for name, q in encoded:  # warm-up, and each answer checked
            sent = await request(app, q, token)
            assert sent.status == 200, (name, sent.status, bytes(sent.body[:300]))
        # CPU time (this process's) beside wall time: on a shared machine the wall time includes waiting
        # for a core, and the Redis server's time is in the wall time only.
        profiler = cProfile.Profile(time.process_time) if profile else None
        print(f"{'query':40} {'bytes':>7} {'best µs':>8} {'median µs':>9} {'CPU best':>8} {'CPU median':>10}")
        for name, q in encoded:
            walls, cpus = [], []
            size = 0
            for _ in range(repeat):
                if profiler is not None:
                    profiler.enable()
                t, c = time.perf_counter(), time.process_time()
                sent = await request(app, q, token)
                cpus.append(time.process_time() - c)
                walls.append(time.perf_counter() - t)
                if profiler is not None:
                    profiler.disable()
                size = len(sent.body)
            print(_row(name, size, walls, cpus))
        if profiler is not None:
            profiler.dump_stats(profile)
            print(f"profile written to {profile}")
            return
        print("the same queries without the framework: parse, plan, listing, body encoded (what list_jobs calls)")
        for name, params in chosen:
            walls, cpus = [], []
            for _ in range(repeat):
                t, c = time.perf_counter(), time.process_time()
                size = await core(app, params)
                cpus.append(time.process_time() - c)
                walls.append(time.perf_counter() - t)
            print(_row(name, size, walls, cpus))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", help="keep (and reuse) Redis's data in this directory")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--profile", help="write a cProfile (CPU time) of the timed loop to this file")
    parser.add_argument("--only", help="only the queries whose name contains this")
    args = parser.parse_args(argv)
    plan = make_plan(args.jobs, seed=args.seed)
    server = start_redis(args.keep)
    try:
        load_jobreg(redis.Redis.from_url(server.url), server.url, plan, keep=args.keep is not None)
        asyncio.run(measure(server.url, queries(plan), args.repeat, args.profile, args.only))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
