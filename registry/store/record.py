"""The job record: one hash per job (``Keys.job``), its fields and the codec of the state it stores.

Fields:
  ``v``  version, a decimal counter bumped by every write; the compare-and-set token of the projection
  ``h``  handle (creation_order), set once when the job is first listed; absent before
  ``s``  the folded JobState in the compact codec below (or, written before layout 6, msgpack JobState)

Python reads records only through this module. Lua that reads or writes them:
``registry/store/lua/apply.lua`` (writes all three) and the query package's RECORDS script
(reads ``h`` and ``s``); neither looks inside ``s``. The change log's ``s`` and ``o`` fields carry
states in the same codec (registry/live/changes.py), with the job's id beside them in ``u``.

The compact codec (layout 6): the byte 0xC1, then a msgpack array
  [created, updated_at, start_timestamp, terminal, canceling]
  created  = [event_id, occurred_at, batch_id, project_id, user_id, runs, origin, variables, parent_id, sequence]
  terminal = [event_id, occurred_at, status, errors, results_link]
- the job id is not stored: it is the record's key (and the change log's ``u``);
- an id in canonical uuid text (lowercase, hyphenated) is stored as its 16 bytes (msgpack bin), any other
  string as msgpack str, so every string comes back exactly as it was written;
- updated_at, start_timestamp and the terminal's occurred_at are stored as differences from the created
  event's occurred_at (from 0 without one): small numbers, 5 bytes instead of 9;
- origin and status are small ints (positions in _ORIGINS, _STATUSES: append only, never reorder);
- trailing fields holding their default (None, empty errors, not canceling) are left out.
0xC1 is the one byte msgpack never uses, and a legacy blob starts with an array header, so both
decode: records and change-log entries written before layout 6 stay readable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis

from registry.domain.model import Created, JobState, Origin, Status, Terminal
from registry.keys import Keys
from registry.store import resp

VERSION = "v"
HANDLE = "h"
STATE = "s"

# What the server should be told so a record stays one listpack (about 320 B per job at 1M jobs)
# instead of a hash table (about 480 B): Redis keeps a hash as a listpack only while every value
# fits hash-max-listpack-value (64 B by default), and a state is 100-400 B. The jobreg-started
# servers (`jobreg up`, compose.yaml, the benchmarks) pass it; see the README, Redis settings.
REDIS_ARGS = ("--hash-max-listpack-value", "512")

TAG = 0xC1
_TAG = bytes([TAG])
# Codes of the stored small ints: append only, never reorder (stored records depend on them).
_ORIGINS = (Origin.CLIENT, Origin.AZURE, Origin.OVH, Origin.UNKNOWN)
_STATUSES = (Status.PENDING, Status.RUNNING, Status.CANCELING, Status.DONE, Status.ERROR, Status.CANCELED)
_ORIGIN_CODE = {o: i for i, o in enumerate(_ORIGINS)}
_STATUS_CODE = {s: i for i, s in enumerate(_STATUSES)}


class _Created(msgspec.Struct, array_like=True):
    """Created in the compact codec; ids are bytes (a canonical uuid) or str (anything else)."""

    event_id: Any
    occurred_at: int
    batch_id: Any
    project_id: Any
    user_id: Any
    runs: int
    origin: int
    variables: dict[str, Any] | None = None
    parent_id: Any = None
    sequence: str | None = None


class _Terminal(msgspec.Struct, array_like=True):
    event_id: Any
    occurred_at: int  # minus the created event's
    status: int
    errors: tuple[str, ...] = ()
    results_link: str | None = None


class _State(msgspec.Struct, array_like=True):
    created: _Created | None = None
    updated_at: int | None = None  # the three: minus the created event's occurred_at
    start_timestamp: int | None = None
    terminal: _Terminal | None = None
    canceling: bool = False


_encode = msgspec.msgpack.Encoder().encode
_decode_compact = msgspec.msgpack.Decoder(_State).decode
_decode_legacy = msgspec.msgpack.Decoder(JobState).decode


def _uuid_bytes(text: str) -> bytes | None:
    """The 16 bytes of a uuid in canonical text (lowercase, hyphenated); None for any other string."""
    if len(text) != 36 or text[8] != "-" or text[13] != "-" or text[18] != "-" or text[23] != "-":
        return None
    try:
        raw = bytes.fromhex(text[:8] + text[9:13] + text[14:18] + text[19:23] + text[24:])
    except ValueError:
        return None
    # fromhex skips whitespace and reads upper case: only the one canonical spelling round-trips.
    return raw if len(raw) == 16 and text.islower() else None


# Recently seen ids, both ways: a page's (and a write batch's) jobs share batches, projects, users
# and parents, pages are read again (pollers), and a dict lookup costs a fraction of converting
# again. Cleared when full, so they stay a few hundred KB.
_BYTES: dict[str, str | bytes] = {}
_TEXTS: dict[bytes, str] = {}
_CACHE_MAX = 4096


def _id(text: str) -> str | bytes:
    """How an id is stored: a canonical uuid as its 16 bytes, any other string as it is."""
    stored = _BYTES.get(text)
    if stored is None:
        stored = _uuid_bytes(text) or text
        if len(_BYTES) >= _CACHE_MAX:
            _BYTES.clear()
        _BYTES[text] = stored
    return stored


def _event_id(text: str) -> str | bytes:
    """Like _id, without the cache: event ids are unique."""
    return _uuid_bytes(text) or text


def _format(value: bytes) -> str:
    """The canonical text of a uuid's 16 bytes, remembered in _TEXTS."""
    h = value.hex()
    text = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    if len(_TEXTS) >= _CACHE_MAX:
        _TEXTS.clear()
    _TEXTS[value] = text
    return text


def _text(value: str | bytes, _get: Callable[[bytes], str | None] = _TEXTS.get) -> str:
    """An id as stored back to its text (called per id of every decoded record: kept to a lookup)."""
    if type(value) is bytes:
        return _get(value) or _format(value)
    return value  # type: ignore[return-value]  # str: stored as it was


def encode_state(state: JobState) -> bytes:
    """The record's ``s`` (and the change log's ``s``/``o``): the state in the compact codec, without the job id."""
    c, t = state.created, state.terminal
    anchor = 0
    fields: list[Any] = [None, None, None, None, state.canceling]
    if c is not None:
        anchor = c.occurred_at
        created = [
            _event_id(c.event_id),
            anchor,
            _id(c.batch_id),
            _id(c.project_id),
            _id(c.user_id),
            c.runs,
            _ORIGIN_CODE[c.origin],
            c.variables,
            None if c.parent_id is None else _id(c.parent_id),
            c.sequence,
        ]
        while created[-1] is None:  # trailing defaults left out (the first seven are never None)
            created.pop()
        fields[0] = created
    if state.updated_at is not None:
        fields[1] = state.updated_at - anchor
    if state.start_timestamp is not None:
        fields[2] = state.start_timestamp - anchor
    if t is not None:
        terminal = [_event_id(t.event_id), t.occurred_at - anchor, _STATUS_CODE[t.status], t.errors, t.results_link]
        if t.results_link is None:
            terminal.pop()
            if not t.errors:
                terminal.pop()
        fields[3] = terminal
    if not state.canceling:
        fields.pop()
        while fields and fields[-1] is None:
            fields.pop()
    return _TAG + _encode(fields)


def decode_state(blob: bytes, job_id: str) -> JobState:
    """A stored state; ``job_id`` names the job (the compact codec leaves it out; a legacy blob carries it)."""
    if blob[0] != TAG:
        return _decode_legacy(blob)
    s = _decode_compact(memoryview(blob)[1:])
    c, t = s.created, s.terminal
    anchor = 0
    created = terminal = None
    if c is not None:
        anchor = c.occurred_at
        created = Created(
            event_id=_text(c.event_id),
            occurred_at=anchor,
            batch_id=_text(c.batch_id),
            project_id=_text(c.project_id),
            user_id=_text(c.user_id),
            runs=c.runs,
            origin=_ORIGINS[c.origin],
            variables=c.variables,
            parent_id=None if c.parent_id is None else _text(c.parent_id),
            sequence=c.sequence,
        )
    if t is not None:
        terminal = Terminal(
            event_id=_text(t.event_id),
            occurred_at=t.occurred_at + anchor,
            status=_STATUSES[t.status],
            errors=t.errors,
            results_link=t.results_link,
        )
    return JobState(
        job_id=job_id,
        created=created,
        start_timestamp=None if s.start_timestamp is None else s.start_timestamp + anchor,
        canceling=s.canceling,
        terminal=terminal,
        updated_at=None if s.updated_at is None else s.updated_at + anchor,
    )


def is_compact(blob: bytes) -> bool:
    """Whether a stored state is in the compact codec (layout 6 onwards) rather than legacy msgpack."""
    return bool(blob) and blob[0] == TAG


async def handles(redis: aioredis.Redis, keys: Keys, job_ids: Sequence[str]) -> list[int | None]:
    """Each job's handle (creation_order); None for unknown or not-yet-listed jobs."""
    pipe = redis.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(keys.job(job_id), HANDLE)
    return [int(h) if h else None for h in await pipe.execute()]


async def versions_and_states(
    redis: aioredis.Redis, keys: Keys, job_ids: Sequence[str]
) -> dict[str, tuple[str, JobState | None]]:
    """Current (version, state) of each job; version '' means no record yet."""
    # Packed by hand: the apply path reads every job of every batch this way.
    job = keys.job
    replies = await resp.run_packed(
        redis, resp.pack_each((b"HMGET",), [job(job_id) for job_id in job_ids], (VERSION, STATE)), len(job_ids)
    )
    out: dict[str, tuple[str, JobState | None]] = {}
    for job_id, (v, s) in zip(job_ids, replies, strict=True):
        out[job_id] = ((v or b"").decode(), decode_state(s, job_id) if s else None)
    return out
