"""The `jobreg` commands other than `up`: api, worker, publish, dead-letters, token, top, redis-url."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from typing import Any

import msgspec
import redis

from registry.connection import async_client, sync_client
from registry.errors import AuthConfigError, InvalidEvent
from registry.keys import Keys
from registry.ops.text import printable
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
    host, port = ns.host or settings.api_host, ns.port or settings.api_port
    _serve("api.server", "run_api", settings, host, port, no_auth=ns.no_auth, embedded=ns.embedded)
    return 0


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


def cmd_publish(settings: Settings, ns: argparse.Namespace) -> int:
    from registry.wire.publisher import Publisher

    client = _client(settings)
    try:
        publisher = Publisher(client, Keys(settings.prefix))
        entry = publisher.publish(
            ns.type, ns.job_id, occurred_at=ns.occurred_at, event_id=ns.event_id, **dict(ns.field)
        )
    except InvalidEvent as exc:
        print(f"jobreg publish: invalid event: {printable(exc.reason)}", file=sys.stderr)
        return 2
    finally:
        client.close()
    print(entry)
    return 0


def cmd_dead_letters(settings: Settings, ns: argparse.Namespace) -> int:

    from registry.wire import deadletter

    async def go() -> int:
        client = async_client(
            settings.redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=SOCKET_TIMEOUT_S
        )
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
            await client.aclose()

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


def cmd_redis_url(settings: Settings, ns: argparse.Namespace) -> int:
    # For `redis-cli -u "$(jobreg redis-url)"`: the URL itself, password included (the caller's own).
    print(settings.redis_url)
    return 0
