"""The `jobreg` command line's grammar: subcommands, options, and argument checks argparse can make."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from typing import NoReturn

DATA_DIR = ".jobreg"


class Parser(argparse.ArgumentParser):
    """argparse, with a mistake reported on one line (and where to read the usage) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, got {text!r}")
    return value


def name_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def stream_id(text: str) -> str:
    if not re.fullmatch(r"\d+(-\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected a stream entry id such as 1764581234567-0, got {text!r}")
    return text


Command = Callable[..., int]


def build_parser(commands: dict[str, Command]) -> Parser:
    """The parser; ``commands`` maps each subcommand's name to the function run for it."""
    p = Parser(prog="jobreg", description="Event-driven job registry (see README.md)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    # Every command finds the store of the `jobreg up` running on this data directory (unless
    # JOBREG_REDIS_URL says otherwise).
    where = Parser(add_help=False)
    where.add_argument("--data-dir", default=DATA_DIR, help=f"the data directory of `jobreg up` (default: {DATA_DIR})")

    up = sub.add_parser("up", parents=[where], help="run the whole registry (store, worker, API) in one command")
    up.add_argument("--demo", action="store_true", help="also publish simulated emulator/QPU traffic")
    up.add_argument("--host", help="API address (default JOBREG_API_HOST, 127.0.0.1)")
    up.add_argument("--port", type=port, help="API port (default JOBREG_API_PORT, 8000)")
    up.set_defaults(func=commands["up"])

    api = sub.add_parser("api", parents=[where], help="serve the HTTP API")
    api.add_argument("--host")
    api.add_argument("--port", type=port)
    api.add_argument(
        "--no-auth",
        action="store_true",
        help="serve without authentication (every caller sees every project); needed when no JOBREG_AUTH_* key is set",
    )
    # Set by `jobreg up`, which prints the summary (auth off included) itself.
    api.add_argument("--embedded", action="store_true", help=argparse.SUPPRESS)
    api.set_defaults(func=commands["api"])

    worker = sub.add_parser("worker", parents=[where], help="consume the events stream")
    worker.add_argument("--embedded", action="store_true", help=argparse.SUPPRESS)
    worker.set_defaults(func=commands["worker"])

    pub = sub.add_parser("publish", parents=[where], help="publish one lifecycle event")
    pub.add_argument("type", choices=["created", "started", "canceling", "finished", "failed", "canceled"])
    pub.add_argument("job_id")
    pub.add_argument("--occurred-at", help="RFC 3339 timestamp (default: now)")
    pub.add_argument("--event-id", help="default: a new UUID")
    pub.add_argument(
        "--field",
        "-f",
        type=name_value,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="batch_id, project_id, user_id, runs, origin, parent_id, variables, errors, results_link, sequence",
    )
    pub.add_argument(
        "--wait-replicas",
        type=positive_int,
        metavar="N",
        help="after the XADD, WAIT for N replicas of its master to hold it; fail (exit 1) when fewer do",
    )
    pub.add_argument(
        "--wait-timeout-ms", type=positive_int, default=1000, metavar="MS", help="how long WAIT waits (default 1000)"
    )
    pub.set_defaults(func=commands["publish"])

    dead = sub.add_parser("dead-letters", parents=[where], help="list (or replay) dead-lettered entries")
    dead.add_argument("action", nargs="?", choices=["list", "replay"], default="list")
    dead.add_argument("ids", nargs="*", type=stream_id, help="replay only these dead-letter entry ids")
    dead.add_argument(
        "--set",
        type=name_value,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="replay: correct this field on each entry",
    )
    dead.add_argument("--count", type=positive_int, default=100)
    dead.add_argument("--json", action="store_true")
    dead.set_defaults(func=commands["dead-letters"])

    tok = sub.add_parser("token", help="mint a development bearer token with JOBREG_AUTH_SECRET (HS256)")
    tok.add_argument("--user", required=True, help="user id (the token's subject)")
    tok.add_argument("--project", action="append", default=[], metavar="UUID", help="a project of the user; repeat")
    tok.add_argument("--admin", action="store_true", help="an operator token: sees every project")
    tok.add_argument("--ttl", help="lifetime: seconds, or 30m, 12h, 7d (default JOBREG_AUTH_TOKEN_TTL_S)")
    tok.set_defaults(func=commands["token"])

    top = sub.add_parser("top", parents=[where], help="live terminal view: job counts, throughput, lag, changes")
    top.add_argument("--interval", type=positive_float, default=2.0, help="seconds between refreshes")
    top.add_argument("--once", action="store_true", help="print one frame (after two samples for throughput) and exit")
    top.add_argument("--frames", type=positive_int, help="exit after this many refreshes")
    top.set_defaults(func=commands["top"])

    mig = sub.add_parser(
        "migrate",
        parents=[where],
        help="move the store to this version's layout (resumable; see the README, Upgrading)",
    )
    mig.add_argument(
        "--batch", type=positive_int, help="jobs per Redis call, bounding how long each blocks (default 1024)"
    )
    mig.set_defaults(func=commands["migrate"])

    clu = sub.add_parser(
        "cluster",
        parents=[where],
        help="rebalance: spread the partitions over a cluster's masters (after adding some; docs/scaling.md)",
    )
    clu.add_argument("action", choices=["rebalance"])
    clu.add_argument("--dry-run", action="store_true", help="print the moves, make none")
    clu.add_argument(
        "--batch", type=positive_int, default=100, help="keys per MIGRATE, bounding how long each blocks (default 100)"
    )
    clu.set_defaults(func=commands["cluster"])

    url = sub.add_parser("redis-url", parents=[where], help="print the Redis URL the other commands use")
    url.set_defaults(func=commands["redis-url"])
    return p
