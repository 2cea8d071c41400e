"""Decoding and validation of raw stream entries into typed events (the wire format)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec

from registry.domain.model import Event, EventType, Origin, parse_timestamp
from registry.errors import InvalidEvent
from registry.ops.text import printable

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_RUNS_RE = re.compile(r"^[0-9]+$")
MAX_VALUE_BYTES = 65_536
MAX_RUNS = 2**31 - 1
MAX_EVENT_ID = 200
MAX_USER_ID = 128
# Presigned object-store URLs run to 1-2 KB; 4 KiB leaves room without inviting bulk data.
MAX_RESULTS_LINK = 4096
_PRINTABLE_RE = re.compile(r"[!-~]+\Z")  # printable ASCII: no spaces, controls or raw non-ASCII

_variables = msgspec.json.Decoder(dict[str, Any])
_errors = msgspec.json.Decoder(list[str])
_msgpack = msgspec.msgpack.Encoder()


def canonical_uuid(value: str, field: str) -> str:
    if not UUID_RE.match(value):
        raise InvalidEvent(f"{field} is not a UUID: {value[:60]!r}")
    return value.lower()


# Enum lookups by value without the Enum call machinery (a third of a microsecond each).
_TYPES: dict[str, EventType] = {t.value: t for t in EventType}
_ORIGINS: dict[str, Origin] = {o.value: o for o in Origin}


def _text(fields: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """Every field as text. The common case (bytes from redis-py, valid UTF-8, within the size
    bound) in one comprehension; anything else through the checks below, for the exact reason."""
    try:
        if max(map(len, fields.values()), default=0) <= MAX_VALUE_BYTES:
            return {k.decode(): v.decode() for k, v in fields.items()}  # type: ignore[union-attr]
    except (AttributeError, UnicodeDecodeError):  # str fields (tests, tools) or bad UTF-8
        pass
    out: dict[str, str] = {}
    for k, v in fields.items():
        raw = v if isinstance(v, bytes) else v.encode(errors="surrogatepass")
        try:
            key = k.decode() if isinstance(k, bytes) else k
            val = raw.decode()
        except UnicodeDecodeError:
            raise InvalidEvent("entry is not valid UTF-8") from None
        if len(raw) > MAX_VALUE_BYTES:
            # The field name is the producer's: escaped and cut, it is safe in logs and terminals.
            raise InvalidEvent(f"{printable(key[:60])} exceeds {MAX_VALUE_BYTES} bytes")
        out[key] = val
    return out


def _optional(f: dict[str, str], name: str) -> str | None:
    value = f.get(name)
    return value if value else None  # an empty optional field counts as absent


def _required(f: dict[str, str], name: str) -> str:
    value = f.get(name)
    if not value:
        raise InvalidEvent(f"missing required field {name}")
    return value


def decode_event(fields: Mapping[bytes | str, bytes | str]) -> Event:
    """Validate one stream entry; raise InvalidEvent with a human-readable reason."""
    f = _text(fields)
    get = f.get  # reads inlined below: a worker decodes every event, ~5 us each
    event_id = get("event_id") or _required(f, "event_id")
    if len(event_id) > MAX_EVENT_ID:
        raise InvalidEvent(f"event_id longer than {MAX_EVENT_ID} characters")
    raw_type = get("type") or _required(f, "type")
    etype = _TYPES.get(raw_type)
    if etype is None:
        raise InvalidEvent(f"unknown type {raw_type[:60]!r}")
    job_id = canonical_uuid(get("job_id") or _required(f, "job_id"), "job_id")
    raw_at = get("occurred_at") or _required(f, "occurred_at")
    try:
        if raw_at != raw_at.strip():
            raise ValueError("surrounding whitespace")
        occurred_at = parse_timestamp(raw_at)
    except (ValueError, OverflowError):
        raise InvalidEvent(f"occurred_at is not an RFC 3339 timestamp: {raw_at[:60]!r}") from None
    if occurred_at < 0:
        raise InvalidEvent("occurred_at is before 1970-01-01")

    raw_origin = get("origin")
    origin = _ORIGINS.get(raw_origin) if raw_origin else Origin.UNKNOWN
    if origin is None:
        raise InvalidEvent(f"origin {(raw_origin or '')[:60]!r} is not one of CLIENT, AZURE, OVH, UNKNOWN")
    parent = get("parent_id")
    parent_id = canonical_uuid(parent, "parent_id") if parent else None
    variables = _decode_json(f, "variables", _variables, "a JSON object") if get("variables") else None
    if variables is not None:
        try:
            _msgpack.encode(variables)  # what the projection stores must be storable
        except OverflowError:
            raise InvalidEvent("variables holds an integer outside the 64-bit range") from None
    errors = _decode_json(f, "errors", _errors, "a JSON array of strings") if get("errors") else None
    link = get("results_link")
    results_link = _results_link(link) if link else None
    if etype is not EventType.CREATED:
        return Event(
            event_id=event_id,
            type=etype,
            job_id=job_id,
            occurred_at=occurred_at,
            origin=origin,
            parent_id=parent_id,
            variables=variables,
            errors=tuple(errors) if errors else (),
            results_link=results_link,
        )
    user_id = get("user_id") or _required(f, "user_id")
    if len(user_id) > MAX_USER_ID:
        raise InvalidEvent(f"user_id longer than {MAX_USER_ID} characters")
    raw_runs = get("runs") or _required(f, "runs")
    if not _RUNS_RE.match(raw_runs) or not 1 <= int(raw_runs) <= MAX_RUNS:
        raise InvalidEvent(f"runs must be an integer from 1 to {MAX_RUNS}: {raw_runs[:60]!r}")
    return Event(
        event_id=event_id,
        type=etype,
        job_id=job_id,
        occurred_at=occurred_at,
        origin=origin,
        parent_id=parent_id,
        variables=variables,
        errors=tuple(errors) if errors else (),
        results_link=results_link,
        batch_id=canonical_uuid(get("batch_id") or _required(f, "batch_id"), "batch_id"),
        project_id=canonical_uuid(get("project_id") or _required(f, "project_id"), "project_id"),
        user_id=user_id,
        runs=int(raw_runs),
        # The serialized pulser sequence, opaque to the registry; bounded by MAX_VALUE_BYTES.
        sequence=get("sequence") or None,
    )


def _results_link(raw: str | None) -> str | None:
    """An absolute http(s) URL of printable ASCII, at most MAX_RESULTS_LINK characters."""
    if raw is None:
        return None
    if len(raw) > MAX_RESULTS_LINK:
        raise InvalidEvent(f"results_link longer than {MAX_RESULTS_LINK} characters")
    try:
        parts = urlsplit(raw) if _PRINTABLE_RE.match(raw) else None
        if parts is not None:
            parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidEvent(f"results_link is not an absolute http(s) URL: {raw[:60]!r}")
    return raw


def _decode_json(f: dict[str, str], name: str, decoder: msgspec.json.Decoder[Any], what: str) -> Any:
    raw = _optional(f, name)
    if raw is None:
        return None
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError:
        raise InvalidEvent(f"{name} is not {what}") from None
    except RecursionError:  # deeply nested JSON
        raise InvalidEvent(f"{name} is nested too deeply") from None
