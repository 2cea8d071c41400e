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

from registry.domain.model import (
    Created,
    Job,
    JobDetail,
    JobState,
    LinkedJob,
    Origin,
    Status,
    Terminal,
    render_instant,
)
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


# ---------------------------------------------------------------- the public job, straight from a stored state
#
# What GET /api/v2/jobs, GET /api/v2/jobs/{id} and the watch stream send, rendered from the compact
# fields without building the JobState and its Created/Terminal first (a page of 100 jobs cost
# ~0.9 ms that way, most of the list request's Python). registry/domain/fold.py's to_job is the
# reference: tests/unit/test_render_job.py checks that both give the same job for any state.


def _compact(blob: bytes, job_id: str) -> tuple[_State, str]:
    """The compact fields of a stored state, and the job's id; a legacy blob (written before
    layout 6, and carrying its id) goes through the compact codec first, so one renderer serves both."""
    if blob[0] != TAG:
        legacy = _decode_legacy(blob)
        job_id, blob = legacy.job_id, encode_state(legacy)
    return _decode_compact(memoryview(blob)[1:]), job_id


def _render(s: _State, job_id: str, handle: int) -> Job | None:
    """The public job of a listed job's compact fields; None when the job is not listed (its `created`
    not applied: JobState.listed). Job's constructor is called with its fields and nothing else: a
    ``**`` in the call doubles its cost."""
    c, updated = s.created, s.updated_at
    if c is None or updated is None:
        return None
    t, anchor, started = s.terminal, c.occurred_at, s.start_timestamp
    ended = None if t is None else t.occurred_at
    created_at = render_instant(anchor)
    start = None if started is None else render_instant(started + anchor)
    end = None if ended is None else render_instant(ended + anchor)
    # updated_at is the latest event's time: for most jobs that of the terminal event, the start or
    # the creation (differences from it, so 0), rendered just above: 3 timestamps a job instead of 4.
    if updated == ended and end is not None:
        updated_at = end
    elif updated == started and start is not None:
        updated_at = start
    else:
        updated_at = created_at if updated == 0 else render_instant(updated + anchor)
    # The status rule of JobState.status: terminal, else canceling, else started, else pending.
    if t is not None:
        status, errors = _STATUSES[t.status], list(t.errors)
    else:
        status = Status.CANCELING if s.canceling else Status.PENDING if started is None else Status.RUNNING
        errors = []
    return Job(
        id=job_id,
        parent_id=None if c.parent_id is None else _text(c.parent_id),
        batch_id=_text(c.batch_id),
        project_id=_text(c.project_id),
        user_id=_text(c.user_id),
        status=status,
        runs=c.runs,
        origin=_ORIGINS[c.origin],
        errors=errors,
        variables=c.variables,
        creation_order=handle,
        created_at=created_at,
        updated_at=updated_at,
        start_timestamp=start,
        end_timestamp=end,
    )


def render_job(blob: bytes, job_id: str, handle: int) -> Job | None:
    """The job as the list returns it, from its stored state and handle; None while it is not listed."""
    s, job_id = _compact(blob, job_id)
    return _render(s, job_id, handle)


def render_linked(blob: bytes, job_id: str, handle: int) -> LinkedJob | None:
    """The job with its results link (the watch stream's shape); None while it is not listed."""
    s, job_id = _compact(blob, job_id)
    job = _render(s, job_id, handle)
    if job is None:
        return None
    link = None if s.terminal is None else s.terminal.results_link
    return LinkedJob(**msgspec.structs.asdict(job), results_link=link)


def render_detail(blob: bytes, job_id: str, handle: int) -> JobDetail | None:
    """The job in full, results link and sequence included (GET /api/v2/jobs/{id}); None while it is not listed."""
    s, job_id = _compact(blob, job_id)
    job = _render(s, job_id, handle)
    if job is None or s.created is None:
        return None
    link = None if s.terminal is None else s.terminal.results_link
    return JobDetail(**msgspec.structs.asdict(job), results_link=link, sequence=s.created.sequence)


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
