"""The one settings struct, loaded from JOBREG_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    redis_url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "jobreg"
    # Consumer group every worker joins; several groups may read one stream.
    group: str = "jobreg-workers"
    consumer: str = ""  # empty: derived from host and pid at start
    batch_size: int = 500
    block_ms: int = 1000
    # An entry delivered this many times without being acknowledged is dead-lettered.
    max_deliveries: int = 5
    # Pending entries idle this long belong to a dead consumer and are reclaimed.
    claim_idle_ms: int = 30_000
    # Above this many members a project/batch/user index switches from a set to a bitmap.
    set_to_bitmap_threshold: int = 2048
    # A query whose filter matches at most this many jobs is sorted in the client.
    collect_threshold: int = 3000
    walk_chunk: int = 2000
    # Change log entries kept for watch resumption (~0.5 KB each); older resume points get 410.
    change_log_retention: int = 100_000
    # Seconds between heartbeats (and resume-position bookmarks) on idle watch streams.
    watch_heartbeat_s: float = 15.0
    # Changes buffered per watcher before a slow one falls back to reading the log itself.
    watch_buffer: int = 10_000
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    log_level: str = "INFO"


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
