"""Spreading a cluster registry's partitions over its masters (`jobreg cluster rebalance`, issue 14).

Growing from 3 to 6 masters: add the new ones empty (``redis-cli --cluster add-node NEW EXISTING``), then
move whole partition slots to them one at a time with jobreg's rule (docs/scaling.md, "Moving a
partition"): ``registry/nodes.py`` ``move_first`` (the change log, the sequence, the uuid array) before
the rest, so that no script runs on a half-moved partition. ``redis-cli --cluster rebalance`` and
``reshard`` move keys in ``GETKEYSINSLOT`` order and know nothing of that rule: do not point them at
jobreg's partition slots. Only the slots of the partitions move; every other slot (the prefix's own tag,
the contract's streams, other applications' keys) stays where it is.

``plan`` is pure (which partitions go where); ``move_slot`` runs one move on the nodes (blocking
redis-py, one plain client per node with the URL's credentials). A move interrupted half-way leaves its
slot MIGRATING/IMPORTING: jobreg keeps answering (the partition waits, registry/nodes.py) and
``open_moves`` finds it, so that running ``rebalance`` again finishes it first.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis

from registry.connection import node_url, sync_client
from registry.nodes import move_first
from registry.partition import Partitions, tag_slot

Address = tuple[str, int]
BATCH = 100  # keys per MIGRATE: one MIGRATE blocks both nodes for its keys' serialization
MIGRATE_TIMEOUT_MS = 60_000


@dataclass(frozen=True)
class Master:
    id: str
    address: Address


@dataclass(frozen=True)
class Move:
    """Move ``slot`` (partitions ``partitions``) from the master at ``source`` to the one at ``target``."""

    slot: int
    partitions: tuple[int, ...]
    source: Address
    target: Address


def plan(owners: Sequence[Address], masters: Sequence[Address], slots: Sequence[int]) -> list[Move]:
    """The moves that leave every master within one partition of the others, fewest first: partition ``i``
    is on ``owners[i]`` in slot ``slots[i]`` (partitions sharing a slot move together). Each move takes a
    slot from the most loaded master to the least loaded (ties by address, so the plan is deterministic)."""
    load: Counter[Address] = Counter({m: 0 for m in masters})
    on: dict[Address, dict[int, list[int]]] = {m: {} for m in masters}
    for i, (owner, slot) in enumerate(zip(owners, slots, strict=True)):
        load[owner] += 1
        on.setdefault(owner, {}).setdefault(slot, []).append(i)
    moves: list[Move] = []
    while True:
        source = max(sorted(load), key=lambda m: load[m])
        target = min(sorted(load), key=lambda m: load[m])
        candidates = sorted(on[source].items(), key=lambda kv: (len(kv[1]), kv[0]))
        if not candidates:
            return moves
        slot, parts = candidates[0]  # the lightest slot: the finest step towards balance
        # Moving w partitions narrows the gap between the two only while it is wider than w.
        if load[source] - load[target] <= len(parts):
            return moves
        moves.append(Move(slot, tuple(parts), source, target))
        del on[source][slot]
        on.setdefault(target, {})[slot] = parts
        load[source] -= len(parts)
        load[target] += len(parts)


def parse_nodes(text: str) -> tuple[list[Master], dict[int, tuple[str, str]]]:
    """CLUSTER NODES: the masters that serve (not failed, not in handshake) and the open moves each
    source reports (slot -> (source id, target id), from its ``[slot->-target]`` entries)."""
    masters, open_moves = [], {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        node_id, address, flags = fields[0], fields[1].split("@")[0].split(",")[0], set(fields[2].split(","))
        if "master" not in flags or flags & {"fail", "fail?", "handshake", "noaddr"}:
            continue
        host, _, port = address.rpartition(":")
        masters.append(Master(node_id, (host.strip("[]"), int(port))))
        for entry in fields[8:]:
            if entry.startswith("[") and "->-" in entry:
                slot, _, target = entry.strip("[]").partition("->-")
                open_moves[int(slot)] = (node_id, target)
    return masters, open_moves


class Cluster:
    """The nodes of the cluster ``url`` names, reached with its credentials (blocking clients, one per node)."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url, self.options = url, options
        self._clients: dict[Address, redis.Redis] = {}
        seed = urlsplit(url)
        self.seed: Address = (seed.hostname or "127.0.0.1", seed.port or 6379)
        self._auth = _migrate_auth(url)

    def client(self, address: Address) -> redis.Redis:
        if address not in self._clients:
            self._clients[address] = sync_client(node_url(self.url, *address), **self.options)
        return self._clients[address]

    def nodes(self) -> tuple[list[Master], dict[int, tuple[str, str]]]:
        reply = _cmd(self.client(self.seed), "CLUSTER", "NODES")
        return parse_nodes(reply.decode() if isinstance(reply, bytes) else str(reply))

    def owner(self, slot: int) -> Address:
        for first, last, master, *_ in _cmd(self.client(self.seed), "CLUSTER", "SLOTS"):
            if int(first) <= slot <= int(last):
                host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
                return (host or self.seed[0], int(master[1]))
        raise redis.ResponseError(f"no master serves slot {slot} (CLUSTER SLOTS)")

    def move_slot(
        self, slot: int, first: Sequence[str], source: Master, target: Master, masters: Sequence[Master], batch: int
    ) -> int:
        """Move ``slot`` from ``source`` to ``target``: ``first`` keys first, then the rest by ``batch``; the keys
        moved. Safe to run again on a move left open (each step is, and a moved key is not on the source)."""
        src, dst = self.client(source.address), self.client(target.address)
        _cmd(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", source.id)
        _cmd(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", target.id)
        moved, todo = 0, [k for k in first if on_source(src, k)]
        while True:
            if not todo:
                todo = [k.decode() for k in _cmd(src, "CLUSTER", "GETKEYSINSLOT", slot, batch)]
                if not todo:
                    break
            host, port = target.address
            _cmd(src, "MIGRATE", host, port, "", 0, MIGRATE_TIMEOUT_MS, *self._auth, "KEYS", *todo)
            moved, todo = moved + len(todo), []
        # The target first: from then on it serves the slot, and the source redirects there (MOVED).
        _cmd(dst, "CLUSTER", "SETSLOT", slot, "NODE", target.id)
        _cmd(src, "CLUSTER", "SETSLOT", slot, "NODE", target.id)
        for master in masters:
            if master not in (source, target):
                _cmd(self.client(master.address), "CLUSTER", "SETSLOT", slot, "NODE", target.id)
        return moved

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


def on_source(client: redis.Redis, key: str) -> bool:
    """Whether ``key`` is on the migrating source (which answers ASK for a key it does not hold)."""
    try:
        return bool(client.exists(key))
    except redis.ResponseError as exc:
        if str(exc).startswith("ASK "):
            return False
        raise


def _cmd(client: redis.Redis, *args: Any) -> Any:
    """One raw command (CLUSTER and MIGRATE have no typed methods in redis-py's plain client)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _migrate_auth(url: str) -> list[str]:
    """MIGRATE's own credentials (it opens its own connection to the target): the URL's."""
    parts = urlsplit(url)
    if parts.password is None:
        return []
    if parts.username:
        return ["AUTH2", unquote(parts.username), unquote(parts.password)]
    return ["AUTH", unquote(parts.password)]


@dataclass(frozen=True)
class Done:
    move: Move
    keys: int
    seconds: float


def rebalance(
    cluster: Cluster,
    partitions: Partitions,
    *,
    batch: int = BATCH,
    dry_run: bool = False,
    on_move: Callable[[Move], None] = lambda move: None,
    on_done: Callable[[Done], None] = lambda done: None,
) -> list[Move]:
    """Finish any open move of a partition slot, then move partition slots until the masters are within
    one partition of each other, one slot at a time; the moves made (or, with ``dry_run``, planned)."""
    slots = [tag_slot(keys.tag) for keys in partitions.keys]
    masters, open_moves = cluster.nodes()
    by_id = {m.id: m for m in masters}
    by_address = {m.address: m for m in masters}
    moves = [
        Move(slot, tuple(i for i, s in enumerate(slots) if s == slot), by_id[src].address, by_id[dst].address)
        for slot, (src, dst) in sorted(open_moves.items())
        if slot in slots and src in by_id and dst in by_id
    ]
    owners = [cluster.owner(slot) for slot in slots]
    for move in moves:  # an open move counts as done for the plan
        owners = [move.target if s == move.slot else o for o, s in zip(owners, slots, strict=True)]
    moves += plan(owners, list(by_address), slots)
    if dry_run:
        return moves
    for move in moves:
        on_move(move)
        started = time.monotonic()
        first = [k for i in move.partitions for k in move_first(partitions.keys[i])]
        keys = cluster.move_slot(move.slot, first, by_address[move.source], by_address[move.target], masters, batch)
        on_done(Done(move, keys, time.monotonic() - started))
    return moves


def describe(move: Move) -> str:
    parts = ", ".join(str(i) for i in move.partitions)
    name = "partition" if len(move.partitions) == 1 else "partitions"
    return f"{name} {parts} (slot {move.slot}): {_addr(move.source)} -> {_addr(move.target)}"


def _addr(address: Address) -> str:
    return f"{address[0]}:{address[1]}"
