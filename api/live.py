"""HTTP handlers for operators: the watch stream (Server-Sent Events) and counts by status and origin."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Controller, Request, get
from litestar.background_tasks import BackgroundTask
from litestar.exceptions import ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import QueryParameter
from litestar.response import Stream
from redis.exceptions import RedisError

from api.auth import CurrentPrincipal
from api.controllers import _INVALID, _UNAUTHORIZED, _UNAVAILABLE, Success
from api.errors import JSendError
from api.params import parse_query
from api.query_docs import JOB_QUERY_PARAMETERS
from api.services import LiveDep, LiveMetrics, ServicesDep
from api.sessions import Slot, Streams
from registry.auth.principal import Principal, scope
from registry.errors import InvalidQuery
from registry.live.changes import ResumeGone, parse_position
from registry.live.merged import MergedWatch, VectorBookmark, parse_vector
from registry.live.watch import Bookmark, Watch
from registry.ops.health import PipelineHealth, pipeline_health
from registry.ops.text import printable
from registry.query.spec import JobQuery
from registry.route import OnPartition

log = logging.getLogger("jobreg.api.live")

# Reconnect delay EventSource clients are told to use, in milliseconds.
RETRY_MS = 2000
RESUME_PARAM = "resource_version"
_POSITION_MSG = "must be a change log position like 1700000000000-0"
_GONE = ResponseSpec(JSendError, description="The resume point is older than the change log keeps: list again")
_TOO_MANY = ResponseSpec(JSendError, description="The caller holds its maximum of open watch streams (Retry-After)")
_FULL = ResponseSpec(JSendError, description="Redis unreachable, or this server holds its maximum of watch streams")


class StatsData(msgspec.Struct, kw_only=True):
    total: int
    by_status: dict[str, int]
    by_origin: dict[str, int]
    pipeline: PipelineHealth


class StatsResponse(Success, kw_only=True):
    data: StatsData


def job_query(request: Request[Any, Any, Any], principal: Principal) -> JobQuery:
    """The one place the live endpoints turn a request into a JobQuery, scoped to the caller's projects."""
    pairs = ((k, v) for k, v in request.query_params.multi_items() if k != RESUME_PARAM)
    return scope(parse_query(pairs), principal)


def resume_position(request: Request[Any, Any, Any], partitions: int = 1) -> Any:
    """Last-Event-ID (an EventSource reconnecting) wins over ``resource_version`` (the URL it first opened):
    a Position, or with partitions a list of them (registry/live/merged.py); None for "from now"."""

    def parse(text: str) -> Any:
        return parse_position(text) if partitions == 1 else parse_vector(text.strip(), partitions)

    header = request.headers.get("last-event-id")
    if header is not None and header.strip():
        pos = parse(header)
        if pos is None:
            raise ValidationException(
                detail="invalid Last-Event-ID",
                extra=[{"source": "header", "key": "Last-Event-ID", "message": _POSITION_MSG, "type": "value_error"}],
            )
        return pos
    raw = request.query_params.get(RESUME_PARAM)
    if raw is None:
        return None
    pos = parse(raw)
    if pos is None:
        raise InvalidQuery([(RESUME_PARAM, _POSITION_MSG, "value_error")])
    return pos


# What a stream ended by a shutdown says last: the client reconnects (to another process, or
# this one restarted) with its Last-Event-ID and misses nothing.
_RECONNECT = msgspec.json.encode(
    {"status": "fail", "code": "503", "message": "server shutting down; reconnect with Last-Event-ID", "data": None}
)


class _Session:
    """One open watch: its SSE body, and a cleanup that runs once however the stream ends."""

    def __init__(
        self,
        watch: Watch | MergedWatch,
        metrics: LiveMetrics,
        expires_at: int | None = None,
        streams: Streams | None = None,
        slot: Slot | None = None,
    ) -> None:
        self.watch = watch
        self.metrics = metrics
        self.expires_at = expires_at  # the caller's token expiry: the stream ends there
        self.streams, self.slot = streams, slot
        self.closed = False
        self.stopped = False
        metrics.watch_connections += 1
        if streams is not None and slot is not None:
            streams.attach(slot, self)

    def stop(self) -> None:
        """End the stream with a reconnect event (the server is shutting down)."""
        self.stopped = True
        self.watch.stop()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.watch.close()
            self.metrics.watch_connections -= 1
            if self.streams is not None and self.slot is not None:
                self.streams.release(self.slot)

    async def body(self) -> AsyncIterator[bytes]:
        w, m = self.watch, self.metrics
        try:
            # The position first: a client that reconnects before any event resumes from here.
            yield f"retry: {RETRY_MS}\nid: {w.id}\n: watching\n\n".encode()
            async for item in w.batches():
                if self.expires_at is not None and time.time() >= self.expires_at:
                    # A stream outliving its token would keep serving a caller no longer
                    # authenticated; the client reconnects with a fresh token and its Last-Event-ID.
                    body = msgspec.json.encode(
                        {"status": "fail", "code": "401", "message": "token expired; reconnect with a fresh token"}
                    )
                    yield b"event: expired\ndata: " + body + b"\n\n"
                    return
                if isinstance(item, Bookmark | VectorBookmark):
                    # An id with no data moves the client's Last-Event-ID without an event, so a
                    # filtered watcher's resume point keeps up with changes it was not sent.
                    yield f": heartbeat\nid: {item.id}\n\n".encode()
                    continue
                parts: list[bytes] = []
                for event in item:
                    kind = event.kind.value.encode()
                    parts += (b"id: ", event.change.id.encode(), b"\nevent: ", kind, b'\ndata: {"type":"', kind)
                    parts += (b'","job":', event.change.job_json, b"}\n\n")
                    m.kinds[event.kind.value] = m.kinds.get(event.kind.value, 0) + 1
                m.watch_events_sent += len(item)
                yield b"".join(parts)  # one write for all the events that were waiting (bounded by the watch)
            if self.stopped:
                yield f"id: {w.id}\nevent: reconnect\ndata: ".encode() + _RECONNECT + b"\n\n"
        except ResumeGone as exc:
            m.watch_gone += 1
            body = msgspec.json.encode({"status": "fail", "code": "410", "message": str(exc), "data": None})
            yield b"event: gone\ndata: " + body + b"\n\n"
        except RedisError as exc:
            # The client reconnects with its Last-Event-ID and resumes where it was.
            log.warning("watch stream ended by a store error: %s", printable(str(exc)))
        finally:
            self.close()


def _caller(request: Request[Any, Any, Any], principal: Principal) -> str:
    """Whom a per-caller bound counts: the token's user, or the client's address when auth is off."""
    if principal.user_id:
        return "user:" + principal.user_id
    return "addr:" + (request.client.host if request.client else "")


class LiveController(Controller):
    path = "/api/v2/jobs"
    tags = ["live"]  # noqa: RUF012 (Litestar reads it as a class attribute)
    # Documented here, read by job_query / resume_position.
    parameters = {  # noqa: RUF012 (Litestar reads it as a class attribute)
        **JOB_QUERY_PARAMETERS,
        RESUME_PARAM: QueryParameter(
            annotation=str | None,
            default=None,
            required=False,
            description="watch: resume after this change log position (Last-Event-ID takes precedence)",
        ),
    }

    @get(
        "/watch",
        summary="Watch job changes (Server-Sent Events)",
        description=(
            "One SSE event per job change, in order: `id` is the change's position, `event` is `added`, "
            "`modified` or (filtered watches) `removed`, `data` is `{type, job}` with the job as listed. "
            "Resume with the `Last-Event-ID` header or `resource_version` (e.g. the `X-Resource-Version` "
            "header of a list): every change after it, without gaps or duplicates. A position older than "
            "the change log keeps gives 410 (or, mid-stream, an `event: gone`): list again. Idle streams "
            "get a comment heartbeat that also carries the current position as `id`."
        ),
        media_type="text/event-stream",
        responses={401: _UNAUTHORIZED, 410: _GONE, 422: _INVALID, 429: _TOO_MANY, 503: _FULL},
    )
    async def watch(
        self, request: Request[Any, Any, Any], services: ServicesDep, live: LiveDep, principal: CurrentPrincipal
    ) -> Stream:
        query = job_query(request, principal)
        route = services.executor.route
        count = route.partitions.count
        after = resume_position(request, count)
        settings = services.settings
        # The byte bound is the watcher's, over every partition: each partition's watch gets its share (each
        # buffers and reads on its own, all at once; with the whole bound each, a watcher that never reads
        # held P times the bound: 20 of them took a P = 16 API from 78 to 544 MB).
        share = max(1, settings.watch_buffer_bytes // count)
        watches = [
            Watch(
                live.feeds[i] if live.feeds else live.feed,
                # The catch-up reads through the route: on a cluster, the partition's master at each read.
                OnPartition(route, i),
                route.partitions.keys[i],
                query,
                heartbeat_s=settings.watch_heartbeat_s,
                buffer=settings.watch_buffer,
                max_bytes=share,
            )
            for i in range(count)
        ]
        # With partitions, one stream over every partition's log (ids: a vector of positions).
        watch: Watch | MergedWatch = watches[0] if count == 1 else MergedWatch(watches)
        slot = live.streams.reserve(_caller(request, principal))
        try:
            await watch.open(after)
        except ResumeGone:
            live.streams.release(slot)
            live.metrics.watch_gone += 1
            raise
        except BaseException:
            live.streams.release(slot)
            raise
        session = _Session(watch, live.metrics, principal.expires_at, live.streams, slot)
        return Stream(
            session.body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            background=BackgroundTask(session.close),
        )

    @get(
        "/stats",
        summary="Counts by status and origin, and pipeline health",
        description="Exact counts of the jobs matching the filters (ordering and paging ignored).",
        responses={401: _UNAUTHORIZED, 422: _INVALID, 503: _UNAVAILABLE},
    )
    async def stats(
        self, request: Request[Any, Any, Any], services: ServicesDep, principal: CurrentPrincipal
    ) -> StatsResponse:
        query = job_query(request, principal)
        counts = await services.executor.counts(query)
        health = await pipeline_health(services.redis, services.keys, services.settings.group, services.executor.route)
        return StatsResponse(
            data=StatsData(total=counts.total, by_status=counts.by_status, by_origin=counts.by_origin, pipeline=health)
        )
