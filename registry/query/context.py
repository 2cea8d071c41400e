"""One query's Redis session: client, key names, scripts, settings, and the temporary keys it owns."""

from __future__ import annotations

from types import TracebackType

import redis.asyncio as aioredis

from registry.keys import Keys
from registry.query.scripts import Scripts
from registry.settings import Settings

# Temporary bitmaps outlive a query only if it dies before deleting them; then they expire.
TEMP_TTL_MS = 60_000


class QueryContext:
    """Everything a strategy needs; the temporary keys it hands out are deleted when the query ends.

    Use as ``async with QueryContext(...) as ctx``: no temporary key outlives the block
    (nor costs a round trip when none was made).
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys, settings: Settings, scripts: Scripts) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.scripts = scripts
        self._temps: list[str] = []

    def temp(self) -> str:
        """A fresh temporary key name, deleted when the query ends."""
        key = self.keys.temp()
        self._temps.append(key)
        return key

    def adopt(self, key: str) -> None:
        """Delete ``key`` (a temporary key a script left for this query) when the query ends."""
        self._temps.append(key)

    async def bitop(self, op: str, sources: list[str]) -> str:
        """``op`` of ``sources`` into a new temporary bitmap, in one round trip."""
        dest = self.temp()
        pipe = self.redis.pipeline(transaction=False)
        pipe.bitop(op, dest, *sources)
        pipe.pexpire(dest, TEMP_TTL_MS)
        await pipe.execute()
        return dest

    async def close(self) -> None:
        if self._temps:
            await self.redis.delete(*self._temps)
            self._temps.clear()

    async def __aenter__(self) -> QueryContext:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
