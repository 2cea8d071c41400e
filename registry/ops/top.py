"""`jobreg top`: a live terminal view of job counts, throughput, pipeline health and the latest changes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import redis.asyncio as aioredis

from registry.domain.model import Origin, Status
from registry.keys import Keys
from registry.live.changes import decode_entries
from registry.nodes import close_outside, connect, outside_client
from registry.ops.health import PipelineHealth, pipeline_health
from registry.ops.metrics import read_worker_counters
from registry.ops.screen import Line, Screen, Term, bold, plain, wrap
from registry.ops.text import printable
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.query.spec import Counts, JobQuery
from registry.route import Route
from registry.settings import Settings

CLEAR = "\x1b[H\x1b[2J"
LATEST = 12  # changes shown when the output is not a terminal (on one, as many as fit)
LABEL = 12  # width of the left column

STATUS_COLOUR = {
    Status.PENDING: "33",
    Status.RUNNING: "36",
    Status.CANCELING: "35",
    Status.DONE: "32",
    Status.ERROR: "31",
    Status.CANCELED: "2",
}


@dataclass
class Sample:
    at: float
    consumed: int
    changed: int


@dataclass
class Change:
    at: str
    kind: str
    job_id: str
    status: Status
    origin: str
    runs: int
    user_id: str


@dataclass
class Frame:
    counts: Counts
    health: PipelineHealth
    sample: Sample
    latest: list[Change]


def _n(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _rate(now: Sample, before: Sample | None, field: str) -> str:
    if before is None or now.at <= before.at:
        return "-"
    return f"{(getattr(now, field) - getattr(before, field)) / (now.at - before.at):,.1f}/s"


async def _counts(route: Route, settings: Settings) -> Counts:
    """Counts by status and origin summed over the partitions (each one's own query, one call each)."""
    out = Counts(total=0, by_status={}, by_origin={})
    for i, keys in enumerate(route.partitions.keys):
        one = await Executor(route.client(i), keys, settings).counts(plan(JobQuery(), keys))
        out.total += one.total
        for mine, theirs in ((out.by_status, one.by_status), (out.by_origin, one.by_origin)):
            for name, n in theirs.items():
                mine[name] = mine.get(name, 0) + n
    return out


async def _latest_changes(route: Route, latest: int) -> list[Any]:
    """The ``latest`` newest changes of any partition, newest first (merged by their positions)."""
    merged = []
    for i, keys in enumerate(route.partitions.keys):
        merged += decode_entries(await route.client(i).xrevrange(keys.changes, count=max(1, latest)))
    return sorted(merged, key=lambda change: change.position, reverse=True)[: max(1, latest)]


async def read_frame(
    redis: aioredis.Redis,
    keys: Keys,
    settings: Settings,
    executor: Executor,
    latest: int = LATEST,
    route: Route | None = None,
) -> Frame:
    """One frame of `jobreg top`; ``route``: a registry of several partitions, read partition by partition."""
    if route is None or route.partitions.count == 1:
        counts = await executor.counts(plan(JobQuery(), keys))
        entries = decode_entries(await redis.xrevrange(keys.changes, count=max(1, latest)))
    else:
        counts, entries = await _counts(route, settings), await _latest_changes(route, latest)
    health = await pipeline_health(redis, keys, settings.group, route)
    counters = await read_worker_counters(redis, keys, route)
    changes: list[Change] = []
    for change in entries:
        job = change.job
        stamp = datetime.fromtimestamp(change.position[0] / 1000, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
        kind = "added" if change.old is None else "modified"
        # Event data: escaped, so a crafted user id cannot move the cursor or forge a row.
        changes.append(
            Change(stamp, kind, printable(job.id[:8]), job.status, job.origin.value, job.runs, printable(job.user_id))
        )
    return Frame(counts, health, Sample(time.monotonic(), counters.consumed_total, counters.changed), changes[:latest])


def _status(status: Status, text: str) -> tuple[str, str]:
    return text, STATUS_COLOUR[status]


def _change_line(c: Change) -> Line:
    return [
        plain(f"  {c.at}  {c.kind:<8}  {c.job_id}  "),
        _status(c.status, f"{c.status.value:<9}"),
        plain(f"  {c.origin:<7}  runs {c.runs:<5}  {c.user_id}"),
    ]


def layout(frame: Frame, before: Sample | None, settings: Settings, width: int | None) -> list[Line]:
    """The frame's lines, items wrapped to ``width`` (None: one line per section, as wide as it takes)."""
    c, h = frame.counts, frame.health
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    title = f"jobreg top · prefix {printable(settings.prefix)} · {now}"
    statuses = [_status(s, f"{s.value} {c.by_status[s.value]:,}") for s in Status]
    lines: list[Line] = [[bold(title)], []]
    lines += wrap("jobs", [plain(f"{c.total:,}"), *statuses], LABEL, width, gap=2)
    lines += wrap("origins", [plain(f"{o.value} {c.by_origin[o.value]:,}") for o in Origin], LABEL, width, gap=2)
    rates = [f"events {_rate(frame.sample, before, 'consumed')}", f"changes {_rate(frame.sample, before, 'changed')}"]
    lines += wrap("throughput", [plain(r) for r in rates], LABEL, width, gap=3)
    pipeline = [
        f"lag {_n(h.consumer_lag)}",
        f"pending {_n(h.pending)}",
        f"dead letters {_n(h.dead_letters)}",
        f"change log {h.changes_retained:,} (at {h.changes_position})",
    ]
    lines += wrap("pipeline", [plain(p) for p in pipeline], LABEL, width, gap=3)
    lines.append([])
    lines.append([bold("latest changes")] if frame.latest else [plain("latest changes: none yet")])
    lines += [_change_line(change) for change in frame.latest]
    return lines


def render(frame: Frame, before: Sample | None, settings: Settings) -> str:
    """The frame as plain text (for a pipe or a file)."""
    return "".join(Screen.plain_text(line) + "\n" for line in layout(frame, before, settings, None))


class KeyReader:
    """Keystrokes from a terminal's stdin without Enter (cbreak); `q` asks to quit."""

    def __init__(self, quit_: asyncio.Event, wake: asyncio.Event) -> None:
        self.quit = quit_
        self.wake = wake

    def on_input(self) -> None:
        try:
            data = os.read(sys.stdin.fileno(), 64)
        except OSError:
            data = b""
        if not data or b"q" in data.lower():  # end of input also ends the view
            self.quit.set()
        self.wake.set()


@contextlib.contextmanager
def _keys(loop: asyncio.AbstractEventLoop, quit_: asyncio.Event, wake: asyncio.Event) -> Iterator[bool]:
    """Read keys while inside (yields whether it can: stdin must be a terminal)."""
    if not sys.stdin.isatty():
        yield False
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    loop.add_reader(fd, KeyReader(quit_, wake).on_input)
    with contextlib.suppress(NotImplementedError, ValueError):
        loop.add_signal_handler(signal.SIGWINCH, wake.set)  # a resize redraws at once
    try:
        yield True
    finally:
        loop.remove_reader(fd)
        with contextlib.suppress(NotImplementedError, ValueError):
            loop.remove_signal_handler(signal.SIGWINCH)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _pause(seconds: float, wake: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), seconds)
    wake.clear()


async def run_top(
    settings: Settings,
    *,
    interval: float = 2.0,
    frames: int | None = None,
    once: bool = False,
    out: TextIO | None = None,
) -> int:
    """Refresh every ``interval`` seconds until `q`, interrupted, or ``frames`` frames; ``once`` prints one frame.

    A one-shot frame still samples twice, ``interval`` apart, so it can show throughput. On a terminal the
    view fits the window and is coloured (unless NO_COLOR is set); elsewhere it is plain text.
    """
    out = out or sys.stdout
    options: dict[str, Any] = {"socket_connect_timeout": 3, "socket_timeout": 5}
    # The partitions on their servers (a cluster's masters), the streams and counters through their own.
    route = await connect(settings, stamp=False, **options)
    redis = outside_client(route, settings.redis_url, **options)
    keys = Keys(settings.prefix)
    executor = Executor(route.client(0), keys, settings)
    term = Term.of(out) if not once else None
    before: Sample | None = None
    shown = 0
    quit_, wake = asyncio.Event(), asyncio.Event()
    try:
        with _keys(asyncio.get_running_loop(), quit_, wake) if term else contextlib.nullcontext(False):
            if once:
                before = (await read_frame(redis, keys, settings, executor, latest=1, route=route)).sample
                await asyncio.sleep(interval)
            while not quit_.is_set():
                size = term.size() if term else None
                # On a terminal, as many changes as rows (draw() keeps those that fit under the rest).
                frame = await read_frame(
                    redis, keys, settings, executor, latest=size[1] if size else LATEST, route=route
                )
                if term and size:
                    out.write(CLEAR + term.draw(layout(frame, before, settings, size[0]), *size))
                else:
                    out.write(render(frame, before, settings) + "\n")
                out.flush()
                before = frame.sample
                shown += 1
                if once or (frames is not None and shown >= frames):
                    return 0
                await _pause(interval, wake)
            return 0
    finally:
        if term:
            out.write(term.restore())
            out.flush()
        await close_outside(route, redis)
        await route.aclose()
