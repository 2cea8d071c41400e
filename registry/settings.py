"""The one settings struct, loaded from JOBREG_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    redis_url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "jobreg"
    # Partitions P of the registry (docs/scaling.md), stored in Redis at first start and fixed from
    # then on; 0: the stored P, or for a new registry 1 on a standalone Redis and 16 on a cluster.
    # A value that disagrees with the stored P is refused.
    partitions: int = 0
    # Consumer group every worker joins; several groups may read one stream.
    group: str = "jobreg-workers"
    consumer: str = ""  # empty: derived from host and pid at start
    batch_size: int = 500
    # Apply calls are sized from their measured durations to hold Redis about this long each
    # (microseconds): a query that arrives meanwhile waits at most about that. Larger calls
    # amortize each call's fixed cost (one command per index key it writes) over more jobs.
    apply_call_us: int = 600
    block_ms: int = 1000
    # An entry whose apply failed this many times (a real error on its job, not an outage) is dead-lettered.
    max_apply_failures: int = 5
    # Backstop for entries that never apply nor fail (e.g. one that kills the worker): dead-lettered after
    # this many deliveries. A worker crash redelivers what it held, so keep it far above expected crashes.
    max_deliveries: int = 100
    # Pending entries idle this long belong to a dead consumer and are reclaimed.
    claim_idle_ms: int = 30_000
    # Housekeeping (reclaim, give up, trim, prune) runs every this many seconds (a divisor of 60).
    housekeeping_interval_s: int = 10
    # Acknowledged events stay in the stream at least this long (for replays and audits), then are trimmed.
    stream_retention_s: int = 86_400
    # The dead-letter stream keeps about this many newest entries (MAXLEN ~).
    dead_letter_maxlen: int = 100_000
    # Group members with no pending entries idle this long are removed from the group.
    consumer_idle_ms: int = 3_600_000
    # Above this many members a project/batch/user index switches from a set to a bitmap.
    set_to_bitmap_threshold: int = 2048
    # A query whose filter matches at most this many jobs may be sorted in the client: its
    # values are read in one round trip of bounded calls (~2 ms per thousand), while a walk of
    # the sort set reads far more when the filter correlates with the order (a user's jobs
    # all in one week). Raised from 3000 with the windowed, pipelined reads.
    collect_threshold: int = 8000
    # A filter (project/batch/user values, ids, id prefix) naming at most this many jobs
    # drives the query: those jobs are checked against the rest instead of intersecting bitmaps.
    candidate_threshold: int = 10_000
    # Jobs one query-path script call reads at most (each call stays well under 5 ms).
    walk_chunk: int = 1000
    # An offset past this many matches finds where to start walking the sort set by counting
    # over the order field's bit-sliced index, instead of walking the skipped jobs.
    select_offset: int = 5000
    # The common query runs in one script call (bitmap filters counted and paged, or a small
    # driver's jobs checked and sorted) making at most about this many Redis commands (~1.5 us
    # each): a longer walk goes on in chunks, a larger driver takes the chunked path. 0: never.
    one_call_budget: int = 1000
    # Change log entries kept for watch resumption (~0.5 KB each); older resume points get 410.
    change_log_retention: int = 100_000
    # Seconds between heartbeats (and resume-position bookmarks) on idle watch streams.
    watch_heartbeat_s: float = 15.0
    # Changes buffered per watcher before a slow one falls back to reading the log itself.
    watch_buffer: int = 10_000
    # ...and bytes (of stored job state): a watcher that does not keep up holds at most about this
    # much in the feed's buffer, and reads (and writes) the log in batches of a quarter of it.
    watch_buffer_bytes: int = 1 << 20
    # Open watch streams one caller may hold (429 past it) and this API process serves (503 past it).
    # A caller is the token's user (the client's address when authentication is off).
    watch_max_per_caller: int = 8
    watch_max_streams: int = 500
    # -- HTTP limits. Bytes of a request's line and headers together (431 and the connection closed
    # past it, before the app sees the request), and of the Authorization header alone (401). A
    # token naming auth_max_projects projects is about 52 KB, and a query string past the API's
    # own 64 KiB gets its 414: the defaults leave room for both.
    http_max_header_bytes: int = 256 * 1024
    auth_max_header_bytes: int = 64 * 1024
    # On SIGTERM, open watch streams are told to reconnect and ended; connections still open after
    # this many seconds are closed, so the API exits within about that long.
    shutdown_grace_s: int = 2
    # Workers lower their CPU priority by this much (os.nice): where API and workers share cores, ingest
    # bursts then queue in the stream instead of slowing queries down.
    worker_nice: int = 0
    # Processes `jobreg api` (and `jobreg up`) serves with, sharing one listening socket; 0: one per
    # usable core. One Python process tops out at one core of HTTP, JSON and token checks.
    api_processes: int = 0
    # Requests one API process works on at once (watch streams aside, they have their own limits);
    # past it a request gets 503 with Retry-After at once instead of queueing behind the others, so an
    # overload is short and visible rather than a growing wait. 0: unbounded.
    api_max_in_flight: int = 64
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    log_level: str = "INFO"
    # -- Authentication (README "Authentication"). With no key material configured the API has
    # no authentication, which `jobreg api` accepts only with an explicit --no-auth.
    auth_secret: str = ""  # HS256 shared secret, at least 32 bytes
    auth_public_key_file: str = ""  # PEM public key or certificate: RSA -> RS256, EC P-256 -> ES256
    auth_jwks_file: str = ""  # local JWKS file, read at start (never fetched over the network)
    auth_algorithms: str = ""  # comma-separated allow-list; empty: one per configured key
    auth_issuer: str = "jobreg"  # required `iss`
    auth_audience: str = "jobreg"  # required `aud` (one of the token's audiences)
    auth_leeway_s: int = 30  # clock skew tolerated on exp / nbf / iat
    auth_user_claim: str = "sub"
    auth_projects_claim: str = "projects"  # list of project UUIDs the user belongs to
    auth_role_claim: str = "role"  # "user" (default when absent) or the admin role
    auth_admin_role: str = "admin"
    auth_token_ttl_s: int = 3600  # default lifetime of `jobreg token`
    # Projects one user token may name: each list or stats call checks every one (about 50 us each).
    auth_max_projects: int = 1000

    def __repr__(self) -> str:
        # Settings get printed in debugging sessions and tracebacks; the shared secret must not.
        shown = {f: getattr(self, f) for f in self.__struct_fields__}
        if shown["auth_secret"]:
            shown["auth_secret"] = "***"
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


_ENV_PREFIX = "JOBREG_"


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build Settings from JOBREG_* variables (unknown ones are rejected, typos included)."""
    env = os.environ if environ is None else environ
    fields = {f.name: f for f in msgspec.structs.fields(Settings)}
    raw: dict[str, object] = {}
    for name, value in env.items():
        if not name.startswith(_ENV_PREFIX):
            continue
        key = name[len(_ENV_PREFIX) :].lower()
        if key not in fields:
            continue  # other JOBREG_* variables (e.g. used by tests) are not ours
        raw[key] = value
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid JOBREG_* setting: {exc}") from exc
