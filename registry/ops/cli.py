"""The `jobreg` command line: up, api, worker, publish, dead-letters, token, top."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import redis

from registry.connection import async_client, sync_client
from registry.errors import AuthConfigError, InvalidEvent
from registry.keys import Keys
from registry.ops.text import printable, redact_url
from registry.settings import Settings, load_settings

log = logging.getLogger("jobreg")


def _serve(module: str, func: str, *args: Any, **kwargs: Any) -> None:
    # The core never imports the web or queue framework; the CLI loads them by name on demand.
    getattr(importlib.import_module(module), func)(*args, **kwargs)


# Key material that `jobreg up` keeps away from its API child, which always runs with auth off.
AUTH_KEY_VARS = ("JOBREG_AUTH_SECRET", "JOBREG_AUTH_PUBLIC_KEY_FILE", "JOBREG_AUTH_JWKS_FILE", "JOBREG_AUTH_ALGORITHMS")


def cmd_api(settings: Settings, ns: argparse.Namespace) -> int:
    from registry.auth.tokens import serving_verifier

    try:
        serving_verifier(settings, ns.no_auth)
    except AuthConfigError as exc:
        print(f"jobreg api: {exc}", file=sys.stderr)
        return 2
    if ns.no_auth:
        print(
            "jobreg api: WARNING: --no-auth: authentication is OFF; anyone who can reach this port "
            "sees every project's jobs",
            file=sys.stderr,
            flush=True,
        )
    host, port = ns.host or settings.api_host, ns.port or settings.api_port
    _serve("api.server", "run_api", settings, host, port, no_auth=ns.no_auth)
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


def cmd_worker(settings: Settings, ns: argparse.Namespace) -> int:
    _serve("workers.main", "run_worker", settings)
    return 0


def cmd_up(settings: Settings, ns: argparse.Namespace) -> int:
    from registry.ops.embedded import embedded_redis

    host, port = ns.host or settings.api_host, ns.port or settings.api_port
    store: contextlib.AbstractContextManager[tuple[str, str]] = (
        contextlib.nullcontext((settings.redis_url, f"Redis at {redact_url(settings.redis_url)} (JOBREG_REDIS_URL)"))
        if os.environ.get("JOBREG_REDIS_URL")
        else embedded_redis(Path(ns.data_dir))
    )
    with store as (url, description):
        print(f"jobreg: store: {description}", flush=True)
        if "MEMORY ONLY" in description:
            print("jobreg: WARNING: install redis-server to keep data across restarts", file=sys.stderr, flush=True)
        env = {**os.environ, "JOBREG_REDIS_URL": url, "JOBREG_PREFIX": settings.prefix}
        api_env = {k: v for k, v in env.items() if k not in AUTH_KEY_VARS}
        me = [sys.executable, "-m", "registry.ops.cli"]
        procs = [
            subprocess.Popen([*me, "worker"], env=env),
            subprocess.Popen([*me, "api", "--host", host, "--port", str(port), "--no-auth"], env=api_env),
        ]
        print(f"jobreg: API on http://{host}:{port}/api/v2/jobs  (OpenAPI: http://{host}:{port}/schema)", flush=True)
        print(f"jobreg: live dashboard on http://{host}:{port}/  (or `jobreg top` in a terminal)", flush=True)
        print(
            "jobreg: auth is OFF in this embedded mode (no token needed, every project visible); "
            "run `jobreg api` with JOBREG_AUTH_* set to authenticate. Press Ctrl-C to stop",
            flush=True,
        )
        try:
            if ns.demo:
                from registry.ops.demo import run_demo
                from registry.wire.publisher import Publisher

                print("jobreg: --demo: publishing simulated emulator/QPU traffic", flush=True)
                run_demo(Publisher(sync_client(url), Keys(settings.prefix)))
            while all(p.poll() is None for p in procs):
                time.sleep(0.5)
            print("jobreg: a child process exited; stopping", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()


def cmd_publish(settings: Settings, ns: argparse.Namespace) -> int:
    from registry.wire.publisher import Publisher

    fields: dict[str, Any] = {}
    for item in ns.field:
        name, sep, value = item.partition("=")
        if not sep:
            print(f"jobreg publish: --field expects NAME=VALUE, got {item!r}", file=sys.stderr)
            return 2
        fields[name] = value
    publisher = Publisher(sync_client(settings.redis_url), Keys(settings.prefix))
    try:
        entry = publisher.publish(ns.type, ns.job_id, occurred_at=ns.occurred_at, event_id=ns.event_id, **fields)
    except InvalidEvent as exc:
        print(f"jobreg publish: invalid event: {exc.reason}", file=sys.stderr)
        return 2
    print(entry if isinstance(entry, str) else entry.decode())
    return 0


def cmd_dead_letters(settings: Settings, ns: argparse.Namespace) -> int:
    from registry.wire import deadletter

    client = async_client(settings.redis_url)
    keys = Keys(settings.prefix)

    async def go() -> int:
        try:
            if ns.action == "replay":
                fixes = dict(item.partition("=")[::2] for item in ns.set)
                n = await deadletter.replay(client, keys, ns.ids or None, fixes)
                print(f"replayed {n} entries")
                return 0
            for d in await deadletter.list_dead(client, keys, count=ns.count):
                if ns.json:
                    print(msgspec.json.encode(d).decode())
                else:
                    # The reason may quote a producer's field names: escaped, as every line from event data.
                    print(printable(f"{d.id}  source={d.source_id}  error={d.error}"))
            return 0
        finally:
            await client.aclose()

    return asyncio.run(go())


def cmd_top(settings: Settings, ns: argparse.Namespace) -> int:
    from registry.ops.top import run_top

    try:
        return asyncio.run(run_top(settings, interval=ns.interval, frames=ns.frames, once=ns.once))
    except KeyboardInterrupt:
        return 0
    except redis.RedisError as exc:
        print(f"jobreg top: cannot read {redact_url(settings.redis_url)}: {printable(str(exc))}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jobreg", description="Event-driven job registry (see README.md)")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the whole registry on an embedded default store")
    up.add_argument("--demo", action="store_true", help="also publish simulated emulator/QPU traffic")
    up.add_argument("--host")
    up.add_argument("--port", type=int)
    up.add_argument("--data-dir", default=".jobreg", help="where the private redis-server keeps its AOF")
    up.set_defaults(func=cmd_up)
    api = sub.add_parser("api", help="serve the HTTP API (reads JOBREG_REDIS_URL)")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.add_argument(
        "--no-auth",
        action="store_true",
        help="serve without authentication (every caller sees every project); needed when no JOBREG_AUTH_* key is set",
    )
    api.set_defaults(func=cmd_api)
    worker = sub.add_parser("worker", help="consume the events stream (reads JOBREG_REDIS_URL)")
    worker.set_defaults(func=cmd_worker)
    pub = sub.add_parser("publish", help="publish one lifecycle event")
    pub.add_argument("type", help="created, started, canceling, finished, failed, canceled")
    pub.add_argument("job_id")
    pub.add_argument("--occurred-at", help="RFC 3339 timestamp (default: now)")
    pub.add_argument("--event-id", help="default: a new UUID")
    pub.add_argument(
        "--field",
        "-f",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="batch_id, project_id, user_id, runs, origin, parent_id, variables, errors",
    )
    pub.set_defaults(func=cmd_publish)
    dead = sub.add_parser("dead-letters", help="list (or replay) dead-lettered entries with their reasons")
    dead.add_argument("action", nargs="?", choices=["list", "replay"], default="list")
    dead.add_argument("ids", nargs="*", help="replay only these dead-letter entry ids")
    dead.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="replay: correct this field on each entry"
    )
    dead.add_argument("--count", type=int, default=100)
    dead.add_argument("--json", action="store_true")
    dead.set_defaults(func=cmd_dead_letters)
    tok = sub.add_parser("token", help="mint a development bearer token with JOBREG_AUTH_SECRET (HS256)")
    tok.add_argument("--user", required=True, help="user id (the token's subject)")
    tok.add_argument("--project", action="append", default=[], metavar="UUID", help="a project of the user; repeat")
    tok.add_argument("--admin", action="store_true", help="an operator token: sees every project")
    tok.add_argument("--ttl", help="lifetime: seconds, or 30m, 12h, 7d (default JOBREG_AUTH_TOKEN_TTL_S)")
    tok.set_defaults(func=cmd_token)
    top = sub.add_parser("top", help="live terminal view: job counts, throughput, lag, latest changes")
    top.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    top.add_argument("--once", action="store_true", help="print one frame (after two samples for throughput) and exit")
    top.add_argument("--frames", type=int, help="exit after this many refreshes")
    top.set_defaults(func=cmd_top)
    return p


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ValueError as exc:
        print(f"jobreg: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    result: int = ns.func(settings, ns)
    return result


if __name__ == "__main__":
    sys.exit(main())
