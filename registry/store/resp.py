"""Commands packed in RESP by hand and streamed on one connection: the write path's bulk round trips.

redis-py packs each command argument by argument (about a microsecond each) and runs a
pipeline's bookkeeping per command; the apply path sends thousands of arguments per batch (the
apply calls' key names and ops, one HMGET per job), so it packs them itself and reads the
replies in order. Replies come back as hiredis parses them, without redis-py's callbacks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

Arg = str | int | bytes


class Bulk(NamedTuple):
    """Arguments packed once as RESP bulk strings, to end several commands (a batch's entry ids are
    acknowledged and forgotten by three)."""

    n: int
    data: bytes


NO_TAIL = Bulk(0, b"")


def bulk(args: Sequence[bytes]) -> Bulk:
    return Bulk(len(args), b"".join([b"$%d\r\n%b\r\n" % (len(a), a) for a in args]))


def _bulk_strings(args: Iterable[Arg]) -> bytes:
    # Two comprehensions: an apply call packs a few hundred arguments, and a loop's appends cost more.
    data = [a.encode() if isinstance(a, str) else b"%d" % a if isinstance(a, int) else a for a in args]
    return b"".join([b"$%d\r\n%b\r\n" % (len(d), d) for d in data])


def pack_command(*args: Arg, tail: Bulk = NO_TAIL) -> bytes:
    """A command as a RESP array of bulk strings: ``args``, then the arguments packed in ``tail``."""
    return b"*%d\r\n%b%b" % (len(args) + tail.n, _bulk_strings(args), tail.data)


def pack_each(head: Sequence[Arg], varying: Sequence[str], rest: Sequence[Arg]) -> bytes:
    """One command per element of ``varying``: ``*head, element, *rest`` (an HMGET of each job's
    record), the common parts packed once."""
    pre = b"*%d\r\n%b" % (len(head) + 1 + len(rest), _bulk_strings(head))
    post = _bulk_strings(rest)
    return b"".join([b"%b$%d\r\n%b\r\n%b" % (pre, len(e), e, post) for e in (v.encode() for v in varying)])


async def stream(redis: aioredis.Redis, packed: Iterable[bytes], commands_each: int = 1) -> tuple[int, list[Any]]:
    """Send each packed blob (of ``commands_each`` commands) as it comes, so Redis runs one while
    the caller builds the next; then read every reply in order, an error reply as its exception.
    Returns (blobs sent, replies). One connection, so commands run in the order given.
    """
    pool = redis.connection_pool
    conn = await pool.get_connection()
    sent = 0
    try:
        for blob in packed:
            await conn.send_packed_command(blob)
            sent += 1
        replies: list[Any] = []
        for _ in range(sent * commands_each):
            try:
                replies.append(await conn.read_response())
            except ResponseError as exc:
                replies.append(exc)
    except BaseException:
        # Replies may be left unread on it: never hand it back as it is.
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)
    return sent, replies


async def run_all(redis: aioredis.Redis, commands: Sequence[Sequence[Arg]]) -> list[Any]:
    """Run ``commands`` in one round trip (one write); their replies, raising the first error reply."""
    return await run_packed(redis, b"".join([pack_command(*c) for c in commands]), len(commands))


async def run_packed(redis: aioredis.Redis, packed: bytes, count: int) -> list[Any]:
    """Run ``count`` commands already packed in one blob, in one round trip; their replies, raising the
    first error reply."""
    if not count:
        return []
    _, replies = await stream(redis, [packed], count)
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies
