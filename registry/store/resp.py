"""Commands packed in RESP by hand and streamed on one connection: the write path's bulk round trips.

redis-py packs each command argument by argument (about a microsecond each) and runs a
pipeline's bookkeeping per command; the apply path sends thousands of arguments per batch (the
apply calls' key names and ops, one HMGET per job), so it packs them itself and reads the
replies in order. Replies come back as hiredis parses them, without redis-py's callbacks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

Arg = str | int | bytes


def pack_command(*args: Arg) -> bytes:
    """A command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    append = out.append
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else b"%d" % arg if isinstance(arg, int) else arg
        append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


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
    if not commands:
        return []
    _, replies = await stream(redis, [b"".join([pack_command(*c) for c in commands])], len(commands))
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies
