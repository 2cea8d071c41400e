"""Watch fan-out: how many concurrent watchers one API process serves with change latency p99 under 100 ms.

    .venv/bin/python -m tests.benchmarks.watch_fanout --watchers 100,250,500,1000 --rate 10 --seconds 8

Starts a private redis-server and one `jobreg api` process, opens N SSE watches from
client processes (raw sockets, minimal parsing, so the clients cost little CPU), then
applies ``rate`` job changes per second through the real projection for ``seconds``.
A change's latency is the time from its change-log entry (the entry id's millisecond
timestamp, Redis's clock on this same machine) to a watcher reading it off its socket.
Clients share the machine with the API, so the numbers are a floor on what one API
process does with the CPU it really gets.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.store.projection import Projection
from registry.wire.events import decode_event
from tests.conftest import free_port, start_redis_server

ROOT = Path(__file__).resolve().parents[2]


# -- clients (separate processes) -----------------------------------------------------------


async def _watch(
    port: int, latencies: list[float], counts: list[int], ready: asyncio.Event, stop: asyncio.Event
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/v2/jobs/watch HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head
    ready.set()
    buf = b""
    try:
        while not stop.is_set():
            chunk = await reader.read(65536)
            if not chunk:
                return
            now_ms = time.time() * 1000
            buf += chunk
            # Events are "id: <ms>-<seq>\nevent: ..."; heartbeats carry an id but no event line.
            while True:
                i = buf.find(b"\nevent: ")
                if i < 0:
                    break
                j = buf.rfind(b"id: ", 0, i)
                ms = int(buf[j + 4 : i].split(b"-")[0])
                latencies.append((ms, now_ms - ms))
                counts[0] += 1
                buf = buf[i + 8 :]
            buf = buf[-4096:]
    finally:
        writer.close()


def _client(port: int, n: int, conn: Connection) -> None:
    async def run() -> None:
        latencies: list[float] = []
        counts = [0]
        stop = asyncio.Event()
        readies = [asyncio.Event() for _ in range(n)]
        tasks = [asyncio.create_task(_watch(port, latencies, counts, r, stop)) for r in readies]
        for r in readies:
            await r.wait()
        conn.send("ready")
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        conn.send((counts[0], latencies))

    asyncio.run(run())


# -- producer ---------------------------------------------------------------------------------


def _created(i: int) -> dict[str, str]:
    job = f"{random.getrandbits(32):08x}-0000-4000-8000-{i:012d}"
    return {
        "event_id": f"bench-{i}",
        "type": "created",
        "job_id": job,
        "occurred_at": "2026-11-23T10:00:00Z",
        "batch_id": "11111111-1111-4111-8111-111111111111",
        "project_id": "22222222-2222-4222-8222-222222222222",
        "user_id": "bench",
        "runs": "10",
    }


async def _produce(url: str, prefix: str, rate: float, seconds: float, start: int) -> int:
    redis = aioredis.Redis.from_url(url)
    proj = Projection(redis, Keys(prefix))
    n = int(rate * seconds)
    t0 = time.monotonic()
    for k in range(n):
        await asyncio.sleep(max(0.0, t0 + k / rate - time.monotonic()))
        await proj.apply([decode_event(_created(start + k))])
    await redis.aclose()
    return n


# -- one step ---------------------------------------------------------------------------------


def step(
    port: int, url: str, prefix: str, watchers: int, rate: float, seconds: float, clients: int, start: int
) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    per = [watchers // clients + (1 if i < watchers % clients else 0) for i in range(clients)]
    for n in per:
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_client, args=(port, n, child), daemon=True)
        p.start()
        pipes.append(parent)
        procs.append(p)
    for parent in pipes:
        assert parent.recv() == "ready"
    time.sleep(0.5)
    changes = asyncio.run(_produce(url, prefix, rate, seconds, start))
    time.sleep(1.0)
    received, latencies = 0, []
    for parent in pipes:
        parent.send("stop")
    for parent in pipes:
        n, lat = parent.recv()
        received += n
        latencies += lat
    for p in procs:
        p.join(timeout=10)
    by_change: dict[int, list[float]] = {}
    for ms, lat in latencies:
        by_change.setdefault(ms, []).append(lat)
    worst = sorted(((max(v), ms) for ms, v in by_change.items()), reverse=True)[:8]
    first = min(by_change)
    print("  worst changes (ms after first change, max latency):", [(ms - first, round(w)) for w, ms in worst])
    latencies = sorted(lat for _, lat in latencies)
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "watchers": watchers,
        "changes": changes,
        "expected": changes * watchers,
        "received": received,
        "p50": q[49],
        "p99": q[98],
        "max": latencies[-1] if latencies else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--watchers", default="100,250,500,1000")
    ap.add_argument("--rate", type=float, default=10.0, help="job changes per second")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--clients", type=int, default=2, help="client processes sharing the watchers")
    args = ap.parse_args()

    server = start_redis_server()
    prefix = f"fan{os.urandom(3).hex()}"
    port = free_port()
    env = {**os.environ, "JOBREG_REDIS_URL": server.url, "JOBREG_PREFIX": prefix, "JOBREG_LOG_LEVEL": "WARNING"}
    # Every watcher comes from this one address: lift the per-caller and per-process stream bounds.
    most = str(max(int(n) for n in args.watchers.split(",")))
    env |= {"JOBREG_WATCH_MAX_PER_CALLER": most, "JOBREG_WATCH_MAX_STREAMS": most}
    # JOBREG_BENCH_PROFILE=FILE profiles the API process (cProfile) for a look at where fan-out time goes.
    profile = (
        ["-m", "cProfile", "-o", os.environ["JOBREG_BENCH_PROFILE"]] if "JOBREG_BENCH_PROFILE" in os.environ else []
    )
    api = subprocess.Popen(
        [sys.executable, *profile, "-m", "registry.ops.cli", "api", "--port", str(port), "--no-auth"], env=env, cwd=ROOT
    )
    try:
        for _ in range(200):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        print(f"rate {args.rate:g} changes/s for {args.seconds:g} s; latency = change logged -> read by a watcher")
        print(f"{'watchers':>8} {'events':>9} {'received':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        start = 0
        for n in (int(x) for x in args.watchers.split(",")):
            r = step(port, server.url, prefix, n, args.rate, args.seconds, args.clients, start)
            start += int(r["changes"])
            print(
                f"{n:>8} {int(r['expected']):>9} {int(r['received']):>9} "
                f"{r['p50']:>8.1f} {r['p99']:>8.1f} {r['max']:>8.1f}",
                flush=True,
            )
    finally:
        # SIGINT rather than SIGTERM: uvicorn re-raises the signal after its shutdown, and only
        # a KeyboardInterrupt lets cProfile write its file.
        api.send_signal(signal.SIGINT if profile else signal.SIGTERM)
        try:
            api.wait(timeout=10)
        except subprocess.TimeoutExpired:
            api.kill()
        server.stop()


if __name__ == "__main__":
    main()
