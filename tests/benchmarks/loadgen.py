"""The under-load traffic, cheap enough not to be the bottleneck: queries and events, each in its own process.

- :func:`run_queries`: an open-loop HTTP/1.1 client on raw asyncio streams (uvloop when present).
  Request ``i`` is due at ``start + i / qps``; its latency counts from that scheduled time, so a
  server that falls behind is charged for the wait (no coordinated omission). Requests go out
  over keep-alive connections, opened as needed up to ``max_connections``; past that a due
  request waits for a free connection, and that wait is part of its latency too. Every failure
  is classified (HTTP status, 503 shed with Retry-After, timeout, refused, reset, ...).
- :func:`run_publisher`: XADDs pre-generated, pre-encoded events (RESP bytes built before the
  start) over one socket at a fixed rate, catching up when it falls behind, so the cost measured
  while publishing is the sockets', not the data generator's.

Both run in a spawned process started before the measured period (``start_at`` is wall-clock
time), and report their own CPU time over it, so it is plain whether the load generator
itself was what saturated the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from tests.benchmarks.datagen import iter_jobs, job_events, make_plan
from tests.benchmarks.tailload import Load, tail_events

Params = list[tuple[str, str]]
_TICK_S = 0.01
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Outcome:
    """What one load-generating process saw: latencies (ms) of answered-or-failed requests, failures by kind."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    connections: int = 0


def request_bytes(host: str, path: str, params: Params, headers: dict[str, str]) -> bytes:
    """One GET request, encoded once up front."""
    lines = [f"GET {path}?{urlencode(params)} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and head of one response; its body is read and dropped (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    match = _CONTENT_LENGTH.search(head)
    if match:
        await reader.readexactly(int(match[1]))
    elif b"chunked" in head.lower():
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, head


def _failure(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | asyncio.IncompleteReadError):
        return "connection reset/closed by the server"
    return f"client error: {type(exc).__name__}"


class _Pool:
    """Keep-alive connections to one server, opened on demand up to a bound."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.slots = asyncio.Semaphore(limit)
        self.opened = 0

    async def get(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        await self.slots.acquire()
        while self.idle:
            conn = self.idle.pop()
            if not conn[0].at_eof():
                return conn
            conn[1].close()  # the server closed it while idle (its keep-alive timeout): not a failure
        try:
            conn = await asyncio.open_connection(self.host, self.port)
        except BaseException:
            self.slots.release()
            raise
        self.opened += 1
        return conn

    def put(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], reusable: bool) -> None:
        if reusable:
            self.idle.append(conn)
        else:
            conn[1].close()
        self.slots.release()

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def _open_loop(
    base: str, requests: Sequence[bytes], qps: float, seconds: float, start_at: float, limit: int, timeout_s: float
) -> Outcome:
    url = urlsplit(base)
    pool = _Pool(url.hostname or "127.0.0.1", url.port or 80, limit)
    out = Outcome()
    loop = asyncio.get_running_loop()

    async def one(request: bytes, due: float) -> None:
        conn = None
        try:
            async with asyncio.timeout_at(due + timeout_s):
                conn = await pool.get()
                conn[1].write(request)
                status, head = await _read_response(conn[0])
            pool.put(conn, b"connection: close" not in head.lower())
            conn = None
            if status == 503 and b"retry-after" in head.lower():
                out.errors["503 shed (Retry-After)"] += 1
            elif status != 200:
                out.errors[f"HTTP {status}"] += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            out.errors[_failure(exc)] += 1
            if conn is not None:
                pool.put(conn, False)
        out.latencies_ms.append((loop.time() - due) * 1e3)

    await asyncio.sleep(max(0.0, start_at - time.time()))
    cpu0, t0 = _cpu_s(), loop.time()
    tasks = []
    for i in range(int(qps * seconds)):
        due = t0 + i / qps
        if (delay := due - loop.time()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(requests[i % len(requests)], due)))
    await asyncio.gather(*tasks)
    out.sent = len(tasks)
    out.cpu_s, out.wall_s = _cpu_s() - cpu0, loop.time() - t0
    out.connections = pool.opened
    pool.close()
    return out


def query_requests(base: str, headers: dict[str, str], queries: Sequence[Params]) -> list[bytes]:
    host = urlsplit(base).netloc
    return [request_bytes(host, "/api/v2/jobs", params, headers) for params in queries]


def run_queries(
    base: str, requests: Sequence[bytes], qps: float, seconds: float, start_at: float, limit: int = 256
) -> Outcome:
    """Send ``qps`` of ``requests`` (cycled) per second for ``seconds`` from ``start_at`` (wall clock), open loop.

    A request unanswered 10 s after it was due counts as a timeout.
    """
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.run(_open_loop(base, requests, qps, seconds, start_at, limit, 10.0))
    return asyncio.run(_open_loop(base, requests, qps, seconds, start_at, limit, 10.0))


# --------------------------------------------------------------------------- the publisher


def _resp(args: Sequence[str | bytes]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _xadd(stream: str, fields: dict[str, str]) -> bytes:
    return _resp(["XADD", stream, "*", *(x for kv in fields.items() for x in kv)])


def encoded_events(stream: str, n: int, seed: int) -> list[bytes]:
    """``n`` events of fresh jobs (their whole lifecycles, in order), each an encoded XADD: the ``spread``
    load shape, a second plan whose projects are new and whose times spread over the stored range."""
    plan = make_plan(max(1000, n), seed)
    out: list[bytes] = []
    for chunk in iter_jobs(plan, chunk_size=1000):
        for job in chunk:
            for fields in job_events(job):
                out.append(_xadd(stream, fields))
                if len(out) == n:
                    return out
    return out


def encoded_load(stream: str, load: Load, n: int, rate: float, seed: int) -> list[bytes]:
    """``n`` events of ``load`` (tests/benchmarks/tailload.py), each an encoded XADD."""
    if load.shape == "spread":
        return encoded_events(stream, n, seed)
    assert load.plan is not None
    return [_xadd(stream, fields) for fields in tail_events(load.plan, load.unfinished, n, rate, seed)]


class _Replies:
    """Counts RESP replies to XADD (a bulk string id, or an error line) as they come in."""

    def __init__(self) -> None:
        self.buffer = b""
        self.errors: Counter[str] = Counter()

    def feed(self, data: bytes) -> int:
        self.buffer += data
        done, pos = 0, 0
        while (end := self.buffer.find(b"\r\n", pos)) >= 0:
            line = self.buffer[pos:end]
            if line.startswith(b"$"):
                body_end = self.buffer.find(b"\r\n", end + 2)
                if body_end < 0:
                    break
                pos = body_end + 2
            else:
                if line.startswith(b"-"):
                    self.errors[line[1:].split(b" ")[0].decode(errors="replace")] += 1
                pos = end + 2
            done += 1
        self.buffer = self.buffer[pos:]
        return done


def run_publisher(url: str, events: Sequence[bytes], rate: float, start_at: float) -> Outcome:
    """XADD ``events`` (encoded) at ``rate`` events/s from ``start_at``: every 10 ms, all those due by then."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    replies = _Replies()
    out = Outcome(connections=1)
    time.sleep(max(0.0, start_at - time.time()))
    cpu0, t0 = _cpu_s(), time.perf_counter()
    sent, tick = 0, 0
    while sent < len(events):
        # Everything due by now in one write: a batch per 10 ms tick, more after a stall (catching up).
        due = min(len(events), int((time.perf_counter() - t0) * rate) + 1)
        if due > sent:
            batch = events[sent:due]
            sock.sendall(b"".join(batch))
            waiting = len(batch)
            while waiting:
                waiting -= replies.feed(sock.recv(1 << 16))
            sent = due
        tick = max(tick + 1, int((time.perf_counter() - t0) / _TICK_S))
        time.sleep(max(0.0, t0 + tick * _TICK_S - time.perf_counter()))
    out.cpu_s, out.wall_s, out.sent = _cpu_s() - cpu0, time.perf_counter() - t0, sent
    out.errors = replies.errors
    sock.close()
    return out


def child(
    kind: str, setup: tuple[Any, ...], rate: float, seconds: float, ready: Any, go: Any, start_at: Any, results: Any
) -> None:
    """A load-generating process: prepare (``ready``), wait for ``go``, run from ``start_at``, put its Outcome."""
    if kind == "queries":
        base, headers, queries = setup
        requests = query_requests(base, headers, queries)
        ready.set()
        go.wait()
        results.put((kind, run_queries(base, requests, rate, seconds, start_at.value)))
    else:
        url, stream, seed, load = setup
        events = encoded_load(stream, load, int(rate * seconds), rate, seed)
        ready.set()
        go.wait()
        results.put((kind, run_publisher(url, events, rate, start_at.value)))
