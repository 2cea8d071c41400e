"""The registry's number of partitions P: stamped in Redis at first start, read (and checked) afterwards."""

from __future__ import annotations

import logging

import redis
import redis.asyncio as aioredis

from registry.errors import PartitionsMismatch
from registry.keys import Keys
from registry.lua import source
from registry.partition import Partitions

log = logging.getLogger("jobreg.partitions")

# P of a new registry when the setting leaves it to jobreg: one on a standalone Redis (nothing to
# spread); on a cluster 16, which spreads 5/6/5 over 3 masters and 3/3/3/3/2/2 over 6 while a query's
# scatter stays short (docs/scaling.md, "Which P").
STANDALONE_DEFAULT = 1
CLUSTER_DEFAULT = 16


def default_count(cluster: bool) -> int:
    return CLUSTER_DEFAULT if cluster else STANDALONE_DEFAULT


def refusal(prefix: str, wanted: int, stored: int) -> str:
    """One line: the setting, the stored P, and what to do."""
    return (
        f"JOBREG_PARTITIONS={wanted}, but the registry under prefix {prefix!r} stores {stored} "
        f"partition{'s' if stored != 1 else ''} (fixed at its first start): unset JOBREG_PARTITIONS "
        f"(or set it to {stored}), or start a new registry under another JOBREG_PREFIX"
    )


async def load(redis: aioredis.Redis, prefix: str, wanted: int = 0, cluster: bool = False) -> Partitions:
    """The registry's partitions: the stored P, stamped now on a new registry (``wanted``, or the default
    for a standalone Redis or a cluster when ``wanted`` is 0). A registry holding data written before P
    was stored is one partition. Raises PartitionsMismatch when ``wanted`` (non-zero) disagrees.

    ``redis`` must serve the prefix's own tag (``{<prefix>}``; on a cluster, the node of its slot).
    """
    if wanted < 0:
        raise ValueError("JOBREG_PARTITIONS must be 0 (choose) or at least 1")
    keys = Keys(prefix)
    script = source("registry.store", "partitions")
    count, how = await redis.eval(script, 2, keys.partitions, keys.seq, str(wanted or default_count(cluster)))  # type: ignore[misc]
    stored = int(count)
    if how in (b"new", "new"):
        log.debug("new registry %r: %d partition(s) stamped", prefix, stored)
    if wanted and wanted != stored:
        raise PartitionsMismatch(refusal(prefix, wanted, stored))
    return Partitions(prefix, stored)


async def stored(redis: aioredis.Redis, prefix: str) -> Partitions:
    """The registry's partitions as stored, stamping nothing (one partition when none is stored yet):
    for tools that read or publish but must not decide P (the CLI, the publisher, `jobreg migrate`)."""
    raw = await redis.get(Keys(prefix).partitions)
    return Partitions(prefix, int(raw) if raw else 1)


def stored_sync(client: redis.Redis, prefix: str) -> Partitions:
    """``stored`` on a blocking client (the CLI's publisher, `jobreg up`'s demo)."""
    raw = client.get(Keys(prefix).partitions)
    return Partitions(prefix, int(raw) if raw else 1)  # type: ignore[arg-type]
