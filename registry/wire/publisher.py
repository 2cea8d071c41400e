"""Publishing lifecycle events: build wire fields, validate them like a worker would, XADD."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Awaitable, Mapping
from datetime import UTC, date, datetime
from typing import Any, Generic, TypeVar, cast

import msgspec
import redis
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.partition import Partitions
from registry.wire.events import decode_event

R = TypeVar("R")
_json = msgspec.json.Encoder()

RawFields = Mapping[str, str | bytes | int | float] | Mapping[bytes, str | bytes | int | float]


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


class Publisher(_Lifecycle[str]):
    """Blocking publisher for backends and scripts; methods return the stream entry id.

    Given the registry's ``partitions`` (registry/store/partitions.py ``stored_sync``), each event goes
    straight to its job's partition stream (the high-rate path: no router hop); without them, to the
    contract's ``<prefix>:events``, which works whatever P is.
    """

    def __init__(self, redis: redis.Redis, keys: Keys | None = None, partitions: Partitions | None = None) -> None:
        self.redis = redis
        self.keys = keys or Keys(partitions.prefix if partitions else "jobreg")
        self.partitions = partitions

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
        stream = stream_for(self.keys, self.partitions, fields)
        return _entry_id(self.redis.xadd(stream, dict(fields)))  # type: ignore[arg-type]


class AsyncPublisher(_Lifecycle[Awaitable[str]]):
    """The same publisher on redis.asyncio; methods are awaitable (``partitions``: see ``Publisher``)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys | None = None, partitions: Partitions | None = None) -> None:
        self.redis = redis
        self.keys = keys or Keys(partitions.prefix if partitions else "jobreg")
        self.partitions = partitions

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
        stream = stream_for(self.keys, self.partitions, fields)
        return _entry_id(await self.redis.xadd(stream, dict(fields)))  # type: ignore[arg-type]
