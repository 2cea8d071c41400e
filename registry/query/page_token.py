"""Page tokens: a Seek sealed (HMAC-SHA256) to the query and the caller it was issued for.

The token is the Seek (the last row's order value and id, the ties and rows served: values the
holder was shown) and a MAC over it and a digest of everything the page depends on except paging:
the filters after scoping to the caller's projects, the order, and who the caller is. A token
altered, made up, or presented with other filters, order or by another caller fails the MAC and is
refused (422 naming ``page_token``) without saying which, so it tells nobody anything. The key is
random, made once per registry and kept in Redis (``Keys.page_token_key``), so every API process
(and a restarted one) accepts the tokens of the others.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

import msgspec
import redis.asyncio as aioredis

from registry.errors import InvalidQuery
from registry.keys import Keys
from registry.query.seek import Seek
from registry.query.spec import JobQuery
from registry.route import Caller, as_caller

MAC_BYTES = 16
KEY_BYTES = 32
# What a token binds besides its Seek: every JobQuery field but these (paging).
_PAGING = frozenset({"limit", "offset", "page_token"})
_encode = msgspec.msgpack.Encoder()
_decode = msgspec.msgpack.Decoder(Seek)


def binding(query: JobQuery, caller: str) -> bytes:
    """Digest of the (scoped) query's filters and order and of the caller, which a token is sealed to."""
    fields = {f: getattr(query, f) for f in query.__struct_fields__ if f not in _PAGING}
    return hashlib.sha256(msgspec.json.encode([fields, caller])).digest()


def invalid(msg: str) -> InvalidQuery:
    return InvalidQuery([("page_token", msg, "value_error")])


class PageTokens:
    """Issues and opens page tokens with the registry's key (read from Redis once, made if missing)."""

    def __init__(self, redis: aioredis.Redis | Caller, keys: Keys) -> None:
        # A Caller (registry/route.py): on a cluster the key's master when it is first read, not the one at start.
        self.via = as_caller(redis)
        self.keys = keys
        self._key: bytes | None = None

    async def _secret(self) -> bytes:
        if self._key is None:
            self._key = await self.via(self._read_or_make)
        return self._key

    async def _read_or_make(self, redis: aioredis.Redis) -> bytes:
        """The stored key, made first if missing (safe to repeat: SET NX keeps the first key made)."""
        await redis.set(self.keys.page_token_key, os.urandom(KEY_BYTES), nx=True)
        key = await redis.get(self.keys.page_token_key)
        assert key, "the page-token key was just set"
        return bytes(key)

    async def issue(self, seek: Seek, bound: bytes) -> str:
        body = _encode.encode(seek)
        mac = hmac.new(await self._secret(), body + bound, hashlib.sha256).digest()[:MAC_BYTES]
        return base64.urlsafe_b64encode(body + mac).rstrip(b"=").decode()

    async def open(self, token: str, bound: bytes) -> Seek:
        """The token's Seek; InvalidQuery (naming page_token) if it is malformed, forged or not this query's."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise invalid("page_token is not a token this server issued") from None
        body, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        want = hmac.new(await self._secret(), body + bound, hashlib.sha256).digest()[:MAC_BYTES]
        if len(raw) <= MAC_BYTES or not hmac.compare_digest(mac, want):
            raise invalid("page_token is invalid, or was issued for other filters, order or caller")
        try:
            seek = _decode.decode(body)
        except msgspec.DecodeError:  # sealed by us, so only after a change of the format
            raise invalid("page_token is from an incompatible version") from None
        if seek.served < 0 or seek.ties < 0:
            raise invalid("page_token is invalid")
        return seek
