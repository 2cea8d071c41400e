"""The stored layout's version: read and stamped here, and what the API and workers say when they cannot use it."""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from registry.errors import LayoutMismatch
from registry.keys import Keys
from registry.lua import source
from registry.route import Caller, as_caller
from registry.store.indexes import LAYOUT

# Registries written before the version was stored hold this layout (the last unversioned one).
UNVERSIONED = 4
MIGRATE_HINT = "run `jobreg migrate` (after stopping the old version's workers; see the README, Upgrading)"


class LayoutState(msgspec.Struct, frozen=True, kw_only=True):
    """What the store says about its layout."""

    version: int
    jobs: int  # handles assigned so far (the seq counter)
    migrating_to: int | None = None
    next_handle: int | None = None  # the migration's cursor: handles below it are done

    def refusal(self) -> str | None:
        """Why this code cannot use the store (one line, naming what to do), or None when it can."""
        if self.version == LAYOUT:
            return None
        if self.version > LAYOUT:
            return (
                f"the store holds layout {self.version}, newer than this jobreg understands ({LAYOUT}): "
                "run the newer jobreg (`jobreg migrate` only moves forward)"
            )
        if self.migrating_to is not None:
            done = max(0, (self.next_handle or 1) - 1)
            return (
                f"the store is being migrated from layout {self.version} to {self.migrating_to} "
                f"({done:,} of {self.jobs:,} jobs): wait for `jobreg migrate` to finish, or run it again to resume"
            )
        return f"the store holds layout {self.version}, this jobreg needs layout {LAYOUT}: {MIGRATE_HINT}"


def _int(raw: bytes | str) -> int | None:
    return int(raw) if raw not in (b"", "") else None


async def read(redis: aioredis.Redis, keys: Keys) -> LayoutState:
    """The store's layout; an empty registry is stamped with this code's (so its first start is its last check)."""
    reply = await redis.eval(  # type: ignore[misc]
        source("registry.store", "layout"), 3, keys.layout, keys.seq, keys.migration, str(LAYOUT)
    )
    version, seq, to, next_handle = (_int(x) for x in reply)
    return LayoutState(
        version=UNVERSIONED if version is None else version,
        jobs=seq or 0,
        migrating_to=to,
        next_handle=next_handle,
    )


async def ensure(redis: aioredis.Redis, keys: Keys) -> LayoutState:
    """The store's layout if this code can use it; raises LayoutMismatch (its message names the fix) if not."""
    state = await read(redis, keys)
    reason = state.refusal()
    if reason is not None:
        raise LayoutMismatch(reason)
    return state


class LayoutGate:
    """Checks the layout once per process, on first use: a store unreachable at start is checked when it answers.

    Once the layout is known good the check costs nothing; until then every caller asks again.
    """

    def __init__(self, redis: aioredis.Redis | Caller, keys: Keys) -> None:
        # A Caller (registry/route.py): on a cluster the layout key's master at each check, not the one at start.
        self.via = as_caller(redis)
        self.keys = keys
        self.ok = False

    async def check(self) -> None:
        if not self.ok:
            await self.via(lambda client: ensure(client, self.keys))
            self.ok = True
