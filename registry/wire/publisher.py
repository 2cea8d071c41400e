"""Publishing lifecycle events: build wire fields, validate them like a worker would, XADD (and, on request,
WAIT for replicas before calling them published).

WAIT-based publishing (``replicas=N``): Redis replicates asynchronously, so an entry a master acknowledged
can be lost when that master dies before its replica copied it (a failover promotes the replica without
it). With ``replicas=N`` the publisher sends, after its XADDs to one master and on the same connection
(one pipeline: XADD..., ``WAIT N timeout``), Redis's ``WAIT``, which answers how many replicas hold every
write that connection made; fewer than N raises ``NotDurable`` naming the events to publish again. Once
``publish`` returns, its events are on the master and N replicas: a ``kill -9`` of the master and the
failover that follows lose none of them. A repeat is harmless (the fold ignores an ``event_id`` it has
seen), so the fix for ``NotDurable`` or a connection error is always "publish the same events again".
WAIT makes no write synchronous: an event WAIT did not confirm may still be applied, once or again.
"""

from __future__ import annotations

import contextlib
import enum
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, Generic, TypeVar, cast

import msgspec
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import RedisClusterException

from registry.errors import NotDurable
from registry.keys import Keys
from registry.partition import Partitions
from registry.wire.events import decode_event

R = TypeVar("R")
_json = msgspec.json.Encoder()

RawFields = Mapping[str, str | bytes | int | float] | Mapping[bytes, str | bytes | int | float]

# How long WAIT waits for the replicas by default. Never 0: to Redis, WAIT ... 0 means "block until they
# answer", which on a master without a replica is forever.
WAIT_TIMEOUT_MS = 1000


def wire_value(value: object) -> str:
    """One field value as the wire format wants it (all text; complex values as JSON)."""
    if isinstance(value, enum.Enum):  # before str: StrEnum members are str too
        value = value.value
    if isinstance(value, str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    try:
        return _json.encode(value).decode()
    except TypeError:
        raise TypeError(f"cannot publish a {type(value).__name__} as an event field") from None


def build_fields(
    type: str,
    job_id: str | uuid.UUID,
    occurred_at: datetime | str | None = None,
    event_id: str | None = None,
    **fields: object,
) -> dict[str, str]:
    """Wire fields for one event (None values omitted), validated: raises InvalidEvent if a worker would refuse it."""
    wire = {
        "event_id": event_id or str(uuid.uuid4()),
        "type": wire_value(type),
        "job_id": wire_value(job_id),
        "occurred_at": wire_value(occurred_at if occurred_at is not None else datetime.now(UTC)),
    }
    wire.update({name: wire_value(value) for name, value in fields.items() if value is not None})
    decode_event(cast(Mapping[bytes | str, bytes | str], wire))
    return wire


def stream_for(keys: Keys, partitions: Partitions | None, fields: RawFields) -> str:
    """The stream an event goes to: its job's partition stream (``{<tag>}:events``) on a registry of
    several partitions, else the contract's ``<prefix>:events``. An entry without a readable job id goes to
    ``<prefix>:events`` too, where the workers' router dead-letters it with its reason."""
    if partitions is None or partitions.count == 1:
        return keys.events
    raw = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}.get("job_id")
    try:
        job_id = str(uuid.UUID(raw.decode() if isinstance(raw, bytes) else str(raw)))
    except (ValueError, UnicodeDecodeError):
        return keys.ingress
    return partitions.keys_of(job_id).events


def _entry_id(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


class _Lifecycle(Generic[R]):
    """Convenience methods, one per event type, over ``publish`` (sync or async)."""

    def publish(
        self,
        type: str,
        job_id: str | uuid.UUID,
        occurred_at: datetime | str | None = None,
        event_id: str | None = None,
        **fields: object,
    ) -> R:
        raise NotImplementedError

    def created(
        self,
        job_id: str | uuid.UUID,
        *,
        batch_id: str | uuid.UUID,
        project_id: str | uuid.UUID,
        user_id: str,
        runs: int,
        origin: str | None = None,
        parent_id: str | uuid.UUID | None = None,
        variables: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> R:
        return self.publish(
            "created",
            job_id,
            batch_id=batch_id,
            project_id=project_id,
            user_id=user_id,
            runs=runs,
            origin=origin,
            parent_id=parent_id,
            variables=variables,
            **extra,
        )

    def started(self, job_id: str | uuid.UUID, **extra: Any) -> R:
        return self.publish("started", job_id, **extra)

    def canceling(self, job_id: str | uuid.UUID, **extra: Any) -> R:
        return self.publish("canceling", job_id, **extra)

    def finished(self, job_id: str | uuid.UUID, *, errors: list[str] | None = None, **extra: Any) -> R:
        return self.publish("finished", job_id, errors=errors, **extra)

    def failed(self, job_id: str | uuid.UUID, *, errors: list[str] | None = None, **extra: Any) -> R:
        return self.publish("failed", job_id, errors=errors, **extra)

    def canceled(self, job_id: str | uuid.UUID, *, errors: list[str] | None = None, **extra: Any) -> R:
        return self.publish("canceled", job_id, errors=errors, **extra)


def _check_wait(replicas: int, wait_timeout_ms: int) -> None:
    if replicas < 0:
        raise ValueError(f"replicas must be 0 (no WAIT) or more, got {replicas}")
    if replicas and wait_timeout_ms < 1:
        # WAIT n 0 blocks until n replicas answer: forever on a master with fewer.
        raise ValueError(f"wait_timeout_ms must be at least 1 with replicas > 0, got {wait_timeout_ms}")


def _groups(streams: list[str], node_of: Callable[[str], str]) -> dict[str, list[int]]:
    """Event indexes grouped by the node serving their stream, in order."""
    out: dict[str, list[int]] = {}
    for i, stream in enumerate(streams):
        out.setdefault(node_of(stream), []).append(i)
    return out


def _short(node: str, acked: int, wanted: int, timeout_ms: int, pending: list[int]) -> NotDurable:
    return NotDurable(
        f"WAIT on {node}: {acked} of {wanted} replicas confirmed {len(pending)} events within {timeout_ms} ms "
        "(does that master have a replica that is connected and in sync? INFO replication); they are on the "
        "master but not durable yet: publish them again (a repeated event_id is a no-op)",
        pending,
        acked,
        wanted,
    )


def _failed(node: str, exc: BaseException, pending: list[int], wanted: int) -> NotDurable:
    return NotDurable(
        f"publishing {len(pending)} events to {node} failed ({type(exc).__name__}: {exc}); some may be written: "
        "publish them again (a repeated event_id is a no-op)",
        pending,
        0,
        wanted,
    )


class Publisher(_Lifecycle[str]):
    """Blocking publisher for backends and scripts; methods return the stream entry id.

    Given the registry's ``partitions`` (registry/store/partitions.py ``stored_sync``), each event goes
    straight to its job's partition stream (the high-rate path: no router hop); without them, to the
    contract's ``<prefix>:events``, which works whatever P is. ``redis`` may be a ``redis.RedisCluster``:
    each stream's events go to its slot's master.

    ``replicas=N`` (N >= 1) waits, after the XADDs to each master, for N of its replicas to hold them
    (``WAIT N wait_timeout_ms`` on the same connection) and raises ``NotDurable`` when fewer did (module
    docstring). ``publish_many`` pipelines a batch per master with one WAIT each: the high-rate form.
    """

    def __init__(
        self,
        redis: redis.Redis,
        keys: Keys | None = None,
        partitions: Partitions | None = None,
        *,
        replicas: int = 0,
        wait_timeout_ms: int = WAIT_TIMEOUT_MS,
    ) -> None:
        _check_wait(replicas, wait_timeout_ms)
        self.redis = redis
        self.keys = keys or Keys(partitions.prefix if partitions else "jobreg")
        self.partitions = partitions
        self.replicas, self.wait_timeout_ms = replicas, wait_timeout_ms

    def publish(
        self,
        type: str,
        job_id: str | uuid.UUID,
        occurred_at: datetime | str | None = None,
        event_id: str | None = None,
        **fields: object,
    ) -> str:
        """Validate and XADD one event; raises InvalidEvent (publishing nothing) if it breaks the wire format."""
        return self.publish_raw(build_fields(type, job_id, occurred_at, event_id, **fields))

    def publish_raw(self, fields: RawFields) -> str:
        """XADD these fields as they are, unvalidated (for other producers' payloads and tests)."""
        if self.replicas:
            return self.publish_many([fields])[0]
        stream = stream_for(self.keys, self.partitions, fields)
        return _entry_id(self.redis.xadd(stream, dict(fields)))  # type: ignore[arg-type]

    def publish_many(self, events: Sequence[RawFields]) -> list[str]:
        """XADD each of ``events`` (unvalidated, as ``publish_raw``) to its stream, one pipeline per master
        (then ``WAIT`` on it with ``replicas``); their entry ids, in order. Raises ``NotDurable`` naming the
        events a master did not take or did not get to enough replicas; the others were published."""
        streams = [stream_for(self.keys, self.partitions, fields) for fields in events]
        out: list[str] = [""] * len(events)
        pending: list[int] = []
        error: NotDurable | None = None
        try:
            groups = self._by_node(streams)
        except (redis.RedisError, RedisClusterException) as exc:  # a cluster whose map has holes, mid-failover
            self._forget_map()
            raise _failed("the cluster", exc, list(range(len(events))), self.replicas) from exc
        for node, (client, indexes) in groups.items():
            try:
                pipe = client.pipeline(transaction=False)
                for i in indexes:
                    pipe.xadd(streams[i], dict(events[i]))  # type: ignore[arg-type]
                if self.replicas:
                    pipe.execute_command("WAIT", self.replicas, self.wait_timeout_ms)  # type: ignore[no-untyped-call]
                replies = pipe.execute()
            except redis.RedisError as exc:
                self._forget_map()
                pending += indexes
                error = error or _failed(node, exc, indexes, self.replicas)
                continue
            for i, reply in zip(indexes, replies, strict=False):
                out[i] = _entry_id(reply)
            if self.replicas and int(replies[-1]) < self.replicas:
                pending += indexes
                error = error or _short(node, int(replies[-1]), self.replicas, self.wait_timeout_ms, indexes)
        if error is not None:
            raise NotDurable(str(error), sorted(pending), error.acknowledged, self.replicas, out) from error
        return out

    def _by_node(self, streams: list[str]) -> dict[str, tuple[redis.Redis, list[int]]]:
        """Event indexes by the master serving their stream, with a plain client of that master (the
        pipeline and its WAIT must share one connection, which a cluster client's pipeline does not give)."""
        cluster = self.redis
        if not isinstance(cluster, redis.RedisCluster):
            return {"the server": (self.redis, list(range(len(streams))))}
        nodes = {stream: cluster.get_node_from_key(stream) for stream in set(streams)}
        groups = _groups(streams, lambda stream: str(nodes[stream].name))
        first = {node: streams[indexes[0]] for node, indexes in groups.items()}
        return {node: (cluster.get_redis_connection(nodes[first[node]]), indexes) for node, indexes in groups.items()}

    def _forget_map(self) -> None:
        """After a failure on a cluster, read its slot map again (a failover or a move may be why), so
        that the retry goes to the slot's master now; a cluster that cannot answer yet is left for the retry."""
        if isinstance(self.redis, redis.RedisCluster):
            with contextlib.suppress(redis.RedisError, RedisClusterException):
                self.redis.nodes_manager.initialize()


class AsyncPublisher(_Lifecycle[Awaitable[str]]):
    """The same publisher on redis.asyncio; methods are awaitable (``partitions``: see ``Publisher``)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys | None = None,
        partitions: Partitions | None = None,
        *,
        replicas: int = 0,
        wait_timeout_ms: int = WAIT_TIMEOUT_MS,
    ) -> None:
        _check_wait(replicas, wait_timeout_ms)
        if replicas and isinstance(redis, AsyncRedisCluster):
            # Its pipeline spreads commands over connections; WAIT must follow the XADDs on theirs.
            raise TypeError("WAIT-based publishing needs a plain redis.asyncio.Redis (one server), or use Publisher")
        self.redis = redis
        self.keys = keys or Keys(partitions.prefix if partitions else "jobreg")
        self.partitions = partitions
        self.replicas, self.wait_timeout_ms = replicas, wait_timeout_ms

    async def publish(
        self,
        type: str,
        job_id: str | uuid.UUID,
        occurred_at: datetime | str | None = None,
        event_id: str | None = None,
        **fields: object,
    ) -> str:
        """Validate and XADD one event; raises InvalidEvent (publishing nothing) if it breaks the wire format."""
        return await self.publish_raw(build_fields(type, job_id, occurred_at, event_id, **fields))

    async def publish_raw(self, fields: RawFields) -> str:
        """XADD these fields as they are, unvalidated (for other producers' payloads and tests)."""
        if self.replicas:
            return (await self.publish_many([fields]))[0]
        stream = stream_for(self.keys, self.partitions, fields)
        return _entry_id(await self.redis.xadd(stream, dict(fields)))  # type: ignore[arg-type]

    async def publish_many(self, events: Sequence[RawFields]) -> list[str]:
        """As ``Publisher.publish_many``, on the one server of ``redis``: one pipeline (and WAIT)."""
        streams = [stream_for(self.keys, self.partitions, fields) for fields in events]
        indexes = list(range(len(events)))
        try:
            pipe = self.redis.pipeline(transaction=False)
            for i in indexes:
                pipe.xadd(streams[i], dict(events[i]))  # type: ignore[arg-type]
            if self.replicas:
                pipe.execute_command("WAIT", self.replicas, self.wait_timeout_ms)
            replies = await pipe.execute()
        except redis.RedisError as exc:
            raise _failed("the server", exc, indexes, self.replicas) from exc
        out = [_entry_id(reply) for reply in replies[: len(events)]]
        if self.replicas and int(replies[-1]) < self.replicas:
            short = _short("the server", int(replies[-1]), self.replicas, self.wait_timeout_ms, indexes)
            short.entries = out
            raise short
        return out
