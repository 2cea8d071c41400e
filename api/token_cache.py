"""Verifying bearer tokens without stalling the event loop: known tokens remembered, big new ones run in a thread."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

import anyio
import anyio.to_thread

from registry.auth.principal import Principal
from registry.auth.tokens import Verifier

# PyJWT walks a token's characters in Python (twice): about 0.3 ms per KB, so a token naming
# 1,000 projects (52 KB) costs ~17 ms. Above this size a new token is verified in a thread.
INLINE_TOKEN_BYTES = 4096


class VerifiedTokens:
    """The principals of recently verified tokens, by the token's SHA-256, until each token expires.

    A client sends the same token on every call: only its first use pays for verification. A
    token that fails is never remembered (it is re-checked, and fails, each time). Big new
    tokens are verified in at most ``threads`` threads at once, so however many arrive together
    the event loop keeps its share of the interpreter and keeps serving everyone else.
    """

    def __init__(self, verifier: Verifier, size: int = 4096, threads: int = 2) -> None:
        self.verifier = verifier
        self.size = size
        self._known: OrderedDict[bytes, Principal] = OrderedDict()
        self._limiter: anyio.CapacityLimiter | None = None
        self._threads = threads

    async def principal(self, token: str) -> Principal:
        """The token's principal; raises Unauthorized exactly as ``Verifier.verify`` does."""
        key = hashlib.sha256(token.encode()).digest()
        known = self._known.get(key)
        if known is not None:
            if known.expires_at is not None and known.expires_at > time.time():
                self._known.move_to_end(key)
                return known
            del self._known[key]  # expired: verify again, which says so (with the leeway it allows)
        if len(token) <= INLINE_TOKEN_BYTES:
            principal = self.verifier.verify(token)
        else:
            if self._limiter is None:
                self._limiter = anyio.CapacityLimiter(self._threads)  # made in the loop that uses it
            principal = await anyio.to_thread.run_sync(self.verifier.verify, token, limiter=self._limiter)
        self._known[key] = principal
        if len(self._known) > self.size:
            self._known.popitem(last=False)
        return principal
