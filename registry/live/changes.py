"""The change log: one stream entry per change of a listed job; its fields, positions, reads and the retention check.

The writer is ``registry/store/lua/apply.lua``, in the same atomic step as the change; the
fields below and their parser (``decode_entry``) are the reader. Change one, change both.
"""

from __future__ import annotations

import re
import uuid as _uuid
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from registry.domain.model import JobState, LinkedJob
from registry.errors import JobregError
from registry.keys import Keys
from registry.store.record import decode_state, encode_state, render_linked

# A stream entry id, "<ms>-<seq>"; compared as a pair of integers.
Position = tuple[int, int]
ORIGIN: Position = (0, 0)
_POSITION_RE = re.compile(r"^([0-9]{1,19})(?:-([0-9]{1,19}))?$")

# An entry's fields. States are in the job record's codec (registry/store/record.py).
KIND = b"k"  # ADDED (the change listed the job) or MODIFIED
ADDED = b"a"
MODIFIED = b"m"
HANDLE = b"h"  # the job's handle (creation_order)
STATE = b"s"  # the job's state after the change
OLD_STATE = b"o"  # its state before, on MODIFIED entries only: tells when a job leaves a filtered selection
UUID = b"u"  # the job's id as 16 bytes (layout 6: the states leave it out); absent on older entries


class ResumeGone(JobregError):
    """The resume point is no longer covered by the change log: list again, then watch from the new position."""


def parse_position(text: str) -> Position | None:
    """``<ms>-<seq>`` (or ``<ms>``) as a Position; None when malformed."""
    m = _POSITION_RE.match(text.strip())
    if m is None:
        return None
    pos = (int(m.group(1)), int(m.group(2) or 0))
    return pos if pos[0] < 1 << 64 and pos[1] < 1 << 64 else None


def format_position(pos: Position) -> str:
    return f"{pos[0]}-{pos[1]}"


def _pos(raw: bytes | str) -> Position:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class Change:
    """One logged change: the job's state after it and, unless the change listed the job, before it."""

    __slots__ = ("_job", "_json", "blob", "handle", "old", "position", "size", "state")

    def __init__(
        self,
        position: Position,
        handle: int,
        state: JobState,
        old: JobState | None,
        size: int = 0,
        blob: bytes | None = None,
    ) -> None:
        self.position = position
        self.handle = handle
        self.state = state
        self.old = old
        # The state as logged (``state`` decoded from it): the job is rendered from these bytes, by the
        # renderer the list and the single-job read use; encoded from ``state`` when not given.
        self.blob = blob
        # Bytes of the stored states: what holding this change costs, give or take a small factor
        # (the decoded states and the rendered JSON). Watchers bound their buffers by it.
        self.size = size
        self._job: LinkedJob | None = None
        self._json: bytes | None = None

    @property
    def id(self) -> str:
        return format_position(self.position)

    @property
    def job(self) -> LinkedJob:
        if self._job is None:
            job = render_linked(self.blob or encode_state(self.state), self.state.job_id, self.handle)
            assert job is not None  # only listed jobs are logged
            self._job = job
        return self._job

    @property
    def job_json(self) -> bytes:
        """The job rendered once as JSON, however many watchers receive it."""
        if self._json is None:
            self._json = msgspec.json.encode(self.job)
        return self._json


def decode_entry(entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> Change:
    old = fields.get(OLD_STATE)
    state = fields[STATE]
    raw_id = fields.get(UUID)
    # An entry written before layout 6 has no 'u': its states are legacy blobs that carry the id.
    job_id = str(_uuid.UUID(bytes=raw_id)) if raw_id else ""
    return Change(
        _pos(entry_id),
        int(fields[HANDLE]),
        decode_state(state, job_id),
        decode_state(old, job_id) if old else None,
        len(state) + len(old or b""),
        state,
    )


class LogInfo(msgspec.Struct, frozen=True):
    """What the retention check needs from XINFO STREAM; None fields where the server does not say."""

    exists: bool
    last: Position
    length: int = 0
    first: Position | None = None
    entries_added: int | None = None


def log_info(info: Mapping[str, Any] | Exception) -> LogInfo:
    """From an XINFO STREAM reply (or the "no such key" error it gives before the first change)."""
    if isinstance(info, Exception):
        if isinstance(info, ResponseError) and "no such key" in str(info).lower():
            return LogInfo(exists=False, last=ORIGIN)
        raise info
    first_id = info.get("recorded-first-entry-id")
    if first_id is None and info.get("first-entry"):
        first_id = info["first-entry"][0]
    added = info.get("entries-added")
    return LogInfo(
        exists=True,
        last=_pos(info["last-generated-id"]),
        length=int(info["length"]),
        first=_pos(first_id) if first_id is not None and int(info["length"]) else None,
        entries_added=None if added is None else int(added),
    )


def check_retained(info: LogInfo, after: Position) -> None:
    """Raise ResumeGone unless every change after ``after`` is still in the log.

    The log is only ever trimmed from its head, so the changes after ``after`` are all
    there when nothing was ever trimmed, or when ``after`` is at or past the first
    retained entry (or immediately before it). A position past the last entry ever
    written comes from a log that has since been reset.
    """
    if after > info.last:
        raise ResumeGone(
            f"position {format_position(after)} is ahead of the change log ({format_position(info.last)}): "
            "the log was reset; list again"
        )
    if not info.exists or after == info.last:
        return
    trimmed = True if info.entries_added is None else info.entries_added > info.length
    if not trimmed:
        return
    if info.first is not None and (after >= info.first or (after[0], after[1] + 1) == info.first):
        return
    raise ResumeGone(f"changes after {format_position(after)} are no longer retained; list again")


async def current_position(redis: aioredis.Redis, keys: Keys) -> Position:
    """Position of the latest change (ORIGIN before the first); every later change is logged after it."""
    last = await redis.xrevrange(keys.changes, count=1)
    return _pos(last[0][0]) if last else ORIGIN


async def read_after(
    redis: aioredis.Redis, keys: Keys, after: Position, until: Position | None, count: int
) -> list[Change]:
    """Up to ``count`` changes strictly after ``after`` (up to ``until`` inclusive), in order.

    The read and the retention check run in one MULTI, so a trim can never slip between
    them: either every change after ``after`` is returned in turn, or ResumeGone.
    """
    pipe = redis.pipeline(transaction=True)
    pipe.xrange(
        keys.changes,
        min="(" + format_position(after),
        max="+" if until is None else format_position(until),
        count=count,
    )
    pipe.xinfo_stream(keys.changes)
    entries, info = await pipe.execute(raise_on_error=False)
    if isinstance(entries, Exception):
        raise entries
    check_retained(log_info(info), after)
    return decode_entries(entries)


def decode_entries(entries: Sequence[tuple[bytes, Mapping[bytes, bytes]]]) -> list[Change]:
    return [decode_entry(entry_id, fields) for entry_id, fields in entries]
