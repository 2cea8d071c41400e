"""The `jobreg` commands other than `up`: api, worker, publish, dead-letters, token, top, migrate, redis-url."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
import uuid
from typing import Any, TextIO

import msgspec
import redis

from registry.connection import sync_client
from registry.errors import AuthConfigError, InvalidEvent, NotDurable
from registry.keys import Keys
from registry.ops.text import printable
from registry.route import Route
from registry.settings import Settings

# Fail fast when the store is down: a CLI command should say so within seconds, not hang.
CONNECT_TIMEOUT_S = 3.0
SOCKET_TIMEOUT_S = 10.0


def _serve(module: str, func: str, *args: Any, **kwargs: Any) -> None:
    # The core never imports the web or queue framework; the CLI loads them by name on demand.
    getattr(importlib.import_module(module), func)(*args, **kwargs)


def cmd_api(settings: Settings, ns: argparse.Namespace) -> int:
    from registry.auth.tokens import serving_verifier

    try:
        serving_verifier(settings, ns.no_auth)
    except AuthConfigError as exc:
        print(f"jobreg api: {exc}", file=sys.stderr)
        return 2
    if ns.no_auth and not ns.embedded:
        print(
            "jobreg api: WARNING: --no-auth: authentication is OFF; anyone who can reach this port "
            "sees every project's jobs",
            file=sys.stderr,
            flush=True,
        )
    asyncio.run(_refuse_other_layout(settings))
    host, port = ns.host or settings.api_host, ns.port or settings.api_port
    _serve("api.server", "run_api", settings, host, port, no_auth=ns.no_auth, embedded=ns.embedded)
    return 0


async def _refuse_other_layout(settings: Settings) -> None:
    """Raise LayoutMismatch (exit status 3, see main) when the store answers with a layout this code cannot use.

    A store that does not answer yet is the API's to check once it does (its requests answer 503 until then).
    """
    from registry.nodes import connect
    from registry.store import layout

    try:
        # P first (stamped here at a registry's first start, refused when the setting disagrees), then
        # every partition's layout, each on its server (registry/nodes.py: a cluster's masters).
        route = await connect(settings, socket_connect_timeout=CONNECT_TIMEOUT_S)
    except redis.RedisError:
        return
    try:
        for i, keys in enumerate(route.partitions.keys):
            await layout.ensure(route.client(i), keys)
    except redis.RedisError:
        pass
    finally:
        await route.aclose()


def cmd_worker(settings: Settings, ns: argparse.Namespace) -> int:
    _serve("workers.main", "run_worker", settings)
    return 0


def cmd_token(settings: Settings, ns: argparse.Namespace) -> int:
    from registry.auth.tokens import mint, parse_ttl

    if not ns.project and not ns.admin:
        print("jobreg token: a user token needs at least one --project (or --admin)", file=sys.stderr)
        return 2
    try:
        ttl = parse_ttl(ns.ttl) if ns.ttl else None
        token = mint(settings, ns.user, ns.project, admin=ns.admin, ttl_s=ttl)
    except (AuthConfigError, ValueError) as exc:
        print(f"jobreg token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _client(settings: Settings) -> redis.Redis:
    return sync_client(settings.redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=SOCKET_TIMEOUT_S)


def _on_cluster(client: redis.Redis) -> bool:
    """Whether ``client``'s server is a Redis Cluster node (a server without the section is not)."""
    try:
        info: dict[str, Any] = client.info("cluster")  # type: ignore[assignment]
        return str(info.get("cluster_enabled", "0")) == "1"
    except redis.ResponseError:
        return False


def cmd_publish(settings: Settings, ns: argparse.Namespace) -> int:
    from registry.store.partitions import stored_sync
    from registry.wire.publisher import Publisher

    # Chosen here, not by the publisher, so that a failure can name the id a retry must reuse.
    event_id = ns.event_id or str(uuid.uuid4())
    client = _client(settings)
    if _on_cluster(client):
        # Every XADD is one key: redis-py's cluster client sends each to its slot's master.
        client.close()
        client = redis.RedisCluster.from_url(
            settings.redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=SOCKET_TIMEOUT_S
        )
    try:
        # Straight to the job's partition stream when the registry has several.
        publisher = Publisher(
            client,
            partitions=stored_sync(client, settings.prefix),
            replicas=ns.wait_replicas or 0,
            wait_timeout_ms=ns.wait_timeout_ms,
        )
        entry = publisher.publish(ns.type, ns.job_id, occurred_at=ns.occurred_at, event_id=event_id, **dict(ns.field))
    except InvalidEvent as exc:
        print(f"jobreg publish: invalid event: {printable(exc.reason)}", file=sys.stderr)
        return 2
    except NotDurable as exc:
        # The event id to reuse, so that publishing it again cannot count twice.
        print(f"jobreg publish: not durable: {exc}; retry with --event-id {event_id}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(entry)
    return 0


def cmd_dead_letters(settings: Settings, ns: argparse.Namespace) -> int:

    from registry.nodes import close_outside, connect, outside_client
    from registry.wire import deadletter

    async def go() -> int:
        options: dict[str, Any] = {"socket_connect_timeout": CONNECT_TIMEOUT_S, "socket_timeout": SOCKET_TIMEOUT_S}
        # On a cluster the dead-letter stream and the events stream are two slots: each command to its own.
        route = await connect(settings, stamp=False, **options)
        client = outside_client(route, settings.redis_url, **options)
        keys = Keys(settings.prefix)
        try:
            if ns.action == "replay":
                n = await deadletter.replay(client, keys, ns.ids or None, dict(ns.set))
                print(f"replayed {n} entries")
                return 0
            if ns.ids:
                print(
                    "jobreg dead-letters: entry ids are for `replay`; `list` shows the oldest --count", file=sys.stderr
                )
                return 2
            for d in await deadletter.list_dead(client, keys, count=ns.count):
                if ns.json:
                    print(msgspec.json.encode(d).decode())
                else:
                    print(f"{d.id}  source={printable(d.source_id)}  error={printable(d.error)}")
            return 0
        finally:
            await close_outside(route, client)
            await route.aclose()

    return asyncio.run(go())


def cmd_top(settings: Settings, ns: argparse.Namespace) -> int:
    from registry.ops.text import redact_url
    from registry.ops.top import run_top

    try:
        return asyncio.run(run_top(settings, interval=ns.interval, frames=ns.frames, once=ns.once))
    except KeyboardInterrupt:
        return 0
    except redis.RedisError as exc:
        print(f"jobreg top: cannot read {redact_url(settings.redis_url)}: {printable(str(exc))}", file=sys.stderr)
        return 1


class ProgressBar:
    """`jobreg migrate`'s progress on stderr: one redrawn line on a terminal, a line per tenth otherwise."""

    WIDTH = 30

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.started = time.monotonic()
        self.shown = -1  # tenths printed so far (not on a terminal)

    def __call__(self, step: Any, done: int, total: int) -> None:
        share = done / total if total else 1.0
        line = (
            f"layout {step.source} -> {step.target} [{'#' * int(share * self.WIDTH):<{self.WIDTH}}] "
            f"{share:4.0%} {done:,}/{total:,} jobs {time.monotonic() - self.started:.1f} s"
        )
        if self.tty:
            print(f"\r{line}", end="" if done < total else "\n", file=self.out, flush=True)
        elif int(share * 10) > self.shown:
            self.shown = int(share * 10)
            print(line, file=self.out, flush=True)


def cmd_migrate(settings: Settings, ns: argparse.Namespace) -> int:
    from registry.nodes import connect

    async def go() -> int:
        # The stored P, each partition on its server (a cluster's masters, registry/nodes.py).
        route = await connect(
            settings, stamp=False, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=SOCKET_TIMEOUT_S
        )
        try:
            # Each partition's layout is stamped and moved on its own (a killed run resumes partition by partition).
            return await _migrate_partitions(route, ns.batch)
        finally:
            await route.aclose()

    return asyncio.run(go())


async def _migrate_partitions(route: Route, batch: int | None) -> int:
    from registry.store import layout, migrate

    partition_keys = route.partitions.keys
    states = [await layout.read(route.client(i), keys) for i, keys in enumerate(partition_keys)]
    if all(state.refusal() is None for state in states):
        print(f"jobreg migrate: the store already holds layout {states[0].version}: nothing to do")
        return 0
    oldest = min(state.version for state in states)
    for step in migrate.STEPS.values():
        if step.source >= oldest:
            print(f"jobreg migrate: layout {step.source} -> {step.target}: {step.what}", file=sys.stderr)
    started = time.monotonic()
    for i, (keys, state) in enumerate(zip(partition_keys, states, strict=True)):
        if state.refusal() is None:
            continue
        if len(partition_keys) > 1:
            print(f"jobreg migrate: partition {i} of {len(partition_keys)} ({keys.tag})", file=sys.stderr)
        outcome = await migrate.migrate(route.client(i), keys, batch or migrate.DEFAULT_BATCH, ProgressBar(sys.stderr))
    print(
        f"jobreg migrate: the store now holds layout {outcome.target} "
        f"(from {oldest}, in {time.monotonic() - started:.1f} s)"
    )
    return 0


def cmd_redis_url(settings: Settings, ns: argparse.Namespace) -> int:
    # For `redis-cli -u "$(jobreg redis-url)"`: the URL itself, password included (the caller's own).
    print(settings.redis_url)
    return 0


def cmd_cluster(settings: Settings, ns: argparse.Namespace) -> int:
    from registry.ops import rebalance
    from registry.store.partitions import stored_sync

    client = _client(settings)
    try:
        if not _on_cluster(client):
            print(f"jobreg cluster: {ns.action} needs a Redis Cluster; this server is standalone", file=sys.stderr)
            return 2
    finally:
        client.close()
    options = {"socket_connect_timeout": CONNECT_TIMEOUT_S, "socket_timeout": SOCKET_TIMEOUT_S}
    with redis.RedisCluster.from_url(settings.redis_url, **options) as outside:
        parts = stored_sync(outside, settings.prefix)
    if parts.count == 1:
        print("jobreg cluster: this registry has one partition: nothing can be spread", file=sys.stderr)
        return 2
    nodes = rebalance.Cluster(settings.redis_url, **options)

    def moving(move: rebalance.Move) -> None:
        print(f"moving {rebalance.describe(move)} ...", end="", flush=True)

    def moved(done: rebalance.Done) -> None:
        print(f" {done.keys} keys in {done.seconds:.2f} s", flush=True)

    try:
        moves = rebalance.rebalance(nodes, parts, batch=ns.batch, dry_run=ns.dry_run, on_move=moving, on_done=moved)
    finally:
        nodes.close()
    if ns.dry_run:
        for move in moves:
            print(f"would move {rebalance.describe(move)}")
    if not moves:
        print("jobreg cluster: the partitions are spread evenly already: nothing to move")
    return 0
