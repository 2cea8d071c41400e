"""Case 3, garbage: 10,000 malformed entries of every kind among valid traffic; all dead-lettered, none lost."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from tests.faults.conftest import report
from tests.harness import assert_registry_matches, cluster, drained, jobreg, publish, text_fields, wait_for
from tests.reference import Reference, _malformed, decode, make_traffic
from tests.topology import Store, sync_client

SEED = 3
N_GARBAGE = 10_000
N_JOBS = 3_000
JOB = "0f8e3f0c-1c6b-4c1a-9b7e-3e1d2c3b4a59"


def _valid(rng: random.Random) -> dict[str, str]:
    return {
        "event_id": f"g-{rng.getrandbits(64):x}",
        "type": "created",
        "job_id": JOB,
        "occurred_at": "2026-01-05T08:00:00Z",
        "batch_id": JOB,
        "project_id": JOB,
        "user_id": "mallory",
        "runs": "5",
    }


def garbage(rng: random.Random, ids: list[str]) -> dict[bytes, bytes]:  # noqa: C901  one branch per kind of garbage
    """One malformed entry; the kinds beyond the reference's own generator cover bytes-level junk."""
    kind = rng.randrange(16)
    e = _valid(rng)
    if kind < 6:  # the reference generator: missing fields, wrong types, bad uuids/timestamps, unknown types...
        return {k.encode(): v.encode() for k, v in _malformed(rng, ids).items()}
    raw = {k.encode(): v.encode() for k, v in e.items()}
    if kind == 6:  # invalid UTF-8 in a value
        raw[rng.choice(list(raw))] = b"\xff\xfe" + os.urandom(rng.randrange(1, 30))
    elif kind == 7:  # invalid UTF-8 in a field name
        raw[b"\xc3\x28" + os.urandom(3)] = b"x"
    elif kind == 8:  # huge JSON: deeply nested
        depth = rng.choice((3_000, 30_000))
        raw[b"variables"] = b'{"a":' + b"[" * depth + b"]" * depth + b"}"
    elif kind == 9:  # JSON the registry cannot store: beyond 64-bit, infinite, lone surrogate
        raw[b"variables"] = rng.choice((b'{"n": 18446744073709551616}', b'{"x": 1e999}', b'{"s": "\\ud800"}'))
    elif kind == 10:  # oversized value (rare: each is a 64 KB copy in the dead-letter stream)
        if rng.random() < 0.1:
            raw[b"variables"] = json.dumps({"blob": "x" * 70_000}).encode()
        else:
            raw[b"errors"] = b'["' + b"e" * 100 + b'"'
            raw[b"type"] = b"failed"
    elif kind == 11:  # names the dead-letter copy uses itself, or its escape: kept and restored exactly
        raw.update({b"error": b"original error", b"source_id": b"mine", b"~x": b"tilde"})
        raw[b"type"] = b"paused"
    elif kind == 12:  # thousands of fields (too many for one Lua call)
        if rng.random() < 0.05:
            raw.update({f"f{i}".encode(): b"v" for i in range(4_000)})
        del raw[b"event_id"]
    elif kind == 13:  # timestamps: padded, before 1970, impossible
        raw[b"occurred_at"] = rng.choice((b" 2026-01-05T08:00:00Z", b"0001-01-01T00:00:00", b"2026-13-01T00:00:00"))
    elif kind == 14:  # control characters, NUL bytes, empty required values
        raw[rng.choice((b"job_id", b"batch_id", b"type"))] = rng.choice((b"\x00", b"", b"\t\n"))
    else:  # wrong types everywhere
        raw.update({b"runs": b"5.0", b"origin": b"1", b"errors": b"{}"})
        raw[b"type"] = b"failed"
    return raw


def _escaped(fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The documented dead-letter copy of an entry's fields (colliding names get one more '~')."""
    return {(b"~" + k if k in (b"error", b"source_id") or k.startswith(b"~") else k): v for k, v in fields.items()}


def test_garbage_is_dead_lettered_and_replayable(own_store: Store, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    traffic = make_traffic(rng, N_JOBS, bad_rate=0.0)
    ids = sorted({e["job_id"].lower() for e in traffic})
    junk = [garbage(rng, ids) for _ in range(N_GARBAGE)]
    for entry in junk:  # sanity: the oracle agrees that every one is invalid
        text = text_fields(entry)
        assert text is None or decode(text) is None, entry
    mixed: list[dict[str, str] | dict[bytes, bytes]] = [*traffic, *junk]
    rng.shuffle(mixed)
    ref = Reference()
    for entry in traffic:
        ref.add(entry)

    prefix = f"junk{os.urandom(3).hex()}"
    client = sync_client(own_store.url)
    with cluster(own_store.url, prefix, tmp_path, block_ms=200) as c:
        for name in ("a", "b"):
            c.start_worker(name)
        keys, group = c.keys, c.settings.group
        entry_ids = publish(client, keys.events, mixed)
        wait_for(lambda: drained(client, keys, group), 120, "pipeline drained", c.log_tail)
        c.check_alive()
        logs = c.logs_text("worker-*.log")
        assert "consumer step failed" not in logs and "Traceback" not in logs, "a worker hit an unexpected error"

        # Every malformed entry is in the dead-letter stream exactly once, with a reason and its bytes.
        expected = {eid: e for eid, e in zip(entry_ids, mixed, strict=True) if isinstance(next(iter(e)), bytes)}
        got: dict[str, dict[bytes, bytes]] = {}
        reasons: dict[str, str] = {}
        for _, fields in client.xrange(keys.dead):  # type: ignore[union-attr]
            source = fields.pop(b"source_id").decode()
            reason = fields.pop(b"error").decode()
            assert reason, source
            assert source not in got, f"{source} dead-lettered twice"
            got[source] = fields
            reasons[source] = reason
        assert got.keys() == expected.keys()
        for source, original in expected.items():
            assert got[source] == _escaped(original), source  # type: ignore[arg-type]
        assert_registry_matches(own_store.url, prefix, ref)

        # An operator corrects one field and replays (CLI); still-broken entries just come back.
        fixable = {}
        for dead_id, fields in client.xrange(keys.dead):  # type: ignore[union-attr]
            text = text_fields({k: v for k, v in fields.items() if k not in (b"error", b"source_id")})
            if text is not None and decode({**text, "runs": "7"}) is not None:
                fixable[dead_id.decode()] = {**text, "runs": "7"}
        broken = next(d.decode() for d, _ in client.xrange(keys.dead, count=100) if d.decode() not in fixable)  # type: ignore[union-attr]
        assert len(fixable) > 100
        cli = jobreg("dead-letters", "replay", *fixable, broken, "--set", "runs=7", env=c.env, timeout=60)
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.strip() == f"replayed {len(fixable) + 1} entries"
        for fields in fixable.values():
            assert ref.add(fields)
        wait_for(lambda: drained(client, keys, group), 60, "replay drained", c.log_tail)
        assert client.xlen(keys.dead) == N_GARBAGE - len(fixable)
        assert_registry_matches(own_store.url, prefix, ref)
        c.check_alive()
    kinds = {r.split(":")[0].split(" ")[0] for r in reasons.values()}
    report(
        "garbage",
        valid_events=len(traffic),
        malformed=N_GARBAGE,
        dead_lettered=len(got),
        reason_kinds=len(kinds),
        replayed_after_fix=len(fixable),
        lost=0,
        duplicated=0,
        worker_crashes=0,
    )
    client.close()
