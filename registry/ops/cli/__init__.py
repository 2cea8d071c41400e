"""The `jobreg` command line: settings and store resolution, logging, and one-line messages for every mistake."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import msgspec
import redis
from redis.connection import parse_url

from registry.errors import LayoutMismatch
from registry.ops import logs
from registry.ops.cli.commands import (
    cmd_api,
    cmd_cluster,
    cmd_dead_letters,
    cmd_migrate,
    cmd_publish,
    cmd_redis_url,
    cmd_token,
    cmd_top,
    cmd_worker,
)
from registry.ops.cli.parser import build_parser
from registry.ops.cli.up import cmd_up
from registry.ops.datadir import running_store
from registry.ops.text import printable, redact_url
from registry.settings import Settings, load_settings

log = logging.getLogger("jobreg")

COMMANDS = {
    "up": cmd_up,
    "api": cmd_api,
    "worker": cmd_worker,
    "publish": cmd_publish,
    "dead-letters": cmd_dead_letters,
    "token": cmd_token,
    "top": cmd_top,
    "migrate": cmd_migrate,
    "redis-url": cmd_redis_url,
    "cluster": cmd_cluster,
}
URL_SCHEMES = ("redis", "rediss", "unix")
# Exit status of a command refused because of the store's layout (see registry/store/layout.py).
LAYOUT_EXIT = 3


class Mistake(Exception):
    """A problem with how jobreg was called or configured; its message is the whole answer."""


def check_redis_url(url: str) -> None:
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme not in URL_SCHEMES:
        raise Mistake(
            f"JOBREG_REDIS_URL must be a redis://, rediss:// or unix:// URL (e.g. redis://localhost:6379/0), "
            f"got {redact_url(url)!r}"
        )
    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise Mistake(f"JOBREG_REDIS_URL {redact_url(url)!r} is not usable: {exc}") from None


def _with_store(settings: Settings, ns: argparse.Namespace) -> Settings:
    """The settings a command run beside a `jobreg up` uses: its store (and prefix) unless the environment
    names one. Without either, the default (a Redis on 127.0.0.1:6379), said out loud."""
    if ns.command == "up" or not hasattr(ns, "data_dir") or "JOBREG_REDIS_URL" in os.environ:
        return settings
    data_dir = Path(ns.data_dir)
    record = running_store(data_dir)
    if record is None:
        if ns.command != "redis-url":
            print(
                f"jobreg {ns.command}: no `jobreg up` running on {data_dir}/ and JOBREG_REDIS_URL unset: "
                f"using {redact_url(settings.redis_url)}",
                file=sys.stderr,
            )
        return settings
    if record.password_removed:
        raise Mistake(
            f"the store of the `jobreg up` on {data_dir}/ ({record.redis_url}) needs a password, "
            "which is not kept on disk: set JOBREG_REDIS_URL"
        )
    prefix = settings.prefix if "JOBREG_PREFIX" in os.environ else record.prefix
    return msgspec.structs.replace(settings, redis_url=record.redis_url, prefix=prefix)


def _prepare(ns: argparse.Namespace) -> Settings:
    try:
        settings = load_settings()
        level = logs.parse_level(settings.log_level)
    except ValueError as exc:
        raise Mistake(str(exc)) from None
    check_redis_url(settings.redis_url)
    settings = _with_store(settings, ns)
    logs.configure(level, quiet_lifecycle=ns.command == "up" or getattr(ns, "embedded", False))
    return msgspec.structs.replace(settings, log_level=level)


def _quiet_closed_stdout() -> None:
    # The reader went away (`jobreg top --once | head -3`): nothing more to say, and nothing
    # Python should try to flush at exit either.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    ns = build_parser(COMMANDS).parse_args(argv)
    name = f"jobreg {ns.command}"
    url = "the store"
    try:
        settings = _prepare(ns)
        url = redact_url(settings.redis_url)
        result: int = ns.func(settings, ns)
        sys.stdout.flush()
        return result
    except Mistake as exc:
        print(f"{name}: {printable(str(exc))}", file=sys.stderr)
        return 2
    except LayoutMismatch as exc:
        # The store holds a layout this version cannot use: its own exit status, so scripts can tell.
        print(f"{name}: {printable(str(exc))}", file=sys.stderr)
        return LAYOUT_EXIT
    except BrokenPipeError:
        _quiet_closed_stdout()
        return 0
    except KeyboardInterrupt:
        return 130
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        print(f"{name}: cannot reach {url}: {printable(str(exc))}", file=sys.stderr)
        return 1
    except redis.RedisError as exc:
        print(f"{name}: {url} answered: {printable(str(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:
        log.debug("unexpected error", exc_info=True)
        print(
            f"{name}: unexpected error: {type(exc).__name__}: {printable(str(exc))} "
            "(JOBREG_LOG_LEVEL=DEBUG shows the traceback)",
            file=sys.stderr,
        )
        return 1
