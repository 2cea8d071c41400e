"""Independent reference implementation of CONTRACT.md used by tests to check jobreg."""

from __future__ import annotations

import json
import random
import re
import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

Event = dict[str, Any]
Job = dict[str, Any]
Params = list[tuple[str, str]]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_VALUE_BYTES = 65536
MAX_RUNS = 2147483647
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
DIGITS_RE = re.compile(r"[0-9]+")
STATUS_OF = {
    "created": "PENDING",
    "started": "RUNNING",
    "canceling": "CANCELING",
    "finished": "DONE",
    "failed": "ERROR",
    "canceled": "CANCELED",
}
RANK = {"PENDING": 0, "RUNNING": 1, "CANCELING": 2, "DONE": 3, "ERROR": 3, "CANCELED": 3}
TERMINAL_TYPES = ("finished", "failed", "canceled")
ORIGINS = ("CLIENT", "AZURE", "OVH", "UNKNOWN")
STATUSES = ("PENDING", "RUNNING", "DONE", "ERROR", "CANCELED", "CANCELING")
ORDER_BYS = (
    "created_at",
    "updated_at",
    "creation_order",
    "start_timestamp",
    "end_timestamp",
    "runs",
    "id",
)


# ---------------------------------------------------------------- time helpers


def parse_timestamp(text: str) -> int | None:
    """ISO 8601 text -> integer microseconds since the epoch (naive = UTC); None if invalid."""
    try:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        us = (dt - EPOCH) // timedelta(microseconds=1)
        # RFC 3339 writes four-digit years: an instant in year 10000 (a zone can push one
        # there) could not be rendered, so it is not a timestamp.
        return us if dt.astimezone(UTC).year <= 9999 else None
    except (ValueError, TypeError, OverflowError):
        return None


def render_timestamp(us: int) -> str:
    """API rendering: UTC, always 6 fractional digits, '+00:00' suffix."""
    return (EPOCH + timedelta(microseconds=us)).isoformat(timespec="microseconds")


# ---------------------------------------------------------------- section 1: decoding


def _is_link(value: str) -> bool:
    """Contract: an absolute http(s) URL; jobreg's limits: printable ASCII, at most 4,096 characters."""
    if len(value) > 4096 or not all("!" <= ch <= "~" for ch in value):
        return False
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 (raises for an invalid port)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _uuid(value: str | None) -> str | None:
    return value.lower() if value is not None and UUID_RE.fullmatch(value) else None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _storable(value: Any) -> bool:
    """JSON the registry can keep: 64-bit integers, finite floats, strings without lone surrogates."""
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return -(2**63) <= value <= 2**64 - 1
    if isinstance(value, float):
        return value not in (float("inf"), float("-inf")) and value == value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    return False


def _json(value: str) -> Any:
    try:
        parsed = json.loads(value, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not _storable(parsed):
        raise ValueError("not storable")
    return parsed


def decode(fields: dict[str, str]) -> Event | None:  # noqa: C901  one check per contract rule, in the contract's order
    """Validate one raw stream entry; return the normalized event, or None if invalid."""
    try:
        if any(len(v.encode("utf-8")) > MAX_VALUE_BYTES for v in fields.values()):
            return None
    except (UnicodeEncodeError, AttributeError):
        return None

    def opt(name: str) -> str | None:
        value = fields.get(name)
        return value if value else None  # "" means absent

    event_id, etype = fields.get("event_id", ""), fields.get("type", "")
    if not event_id or len(event_id) > 200 or etype not in STATUS_OF:
        return None
    job_id = _uuid(fields.get("job_id"))
    occurred_at = parse_timestamp(fields.get("occurred_at", ""))
    if job_id is None or occurred_at is None or occurred_at < 0:  # jobreg keeps 1970 onwards
        return None
    origin = opt("origin") or "UNKNOWN"
    if origin not in ORIGINS:
        return None
    parent_raw = opt("parent_id")
    parent_id = _uuid(parent_raw)
    if parent_raw is not None and parent_id is None:
        return None
    results_link = opt("results_link")
    if results_link is not None and not _is_link(results_link):
        return None
    variables = errors = None
    try:
        if (raw := opt("variables")) is not None:
            variables = _json(raw)
            if not isinstance(variables, dict):
                return None
        if (raw := opt("errors")) is not None:
            errors = _json(raw)
            if not isinstance(errors, list) or not all(isinstance(e, str) for e in errors):
                return None
    except ValueError:  # json.JSONDecodeError is a ValueError
        return None
    event: Event = {
        "event_id": event_id,
        "type": etype,
        "job_id": job_id,
        "occurred_at": occurred_at,
        "origin": origin,
        "parent_id": parent_id,
        "variables": variables,
        "errors": errors,
        "results_link": results_link,
        "sequence": None,
        "batch_id": None,
        "project_id": None,
        "user_id": None,
        "runs": None,
    }
    if etype == "created":
        batch_id, project_id = _uuid(fields.get("batch_id")), _uuid(fields.get("project_id"))
        user_id, runs = fields.get("user_id", ""), fields.get("runs", "")
        if batch_id is None or project_id is None or not 1 <= len(user_id) <= 128:
            return None
        if not DIGITS_RE.fullmatch(runs) or not 1 <= int(runs) <= MAX_RUNS:
            return None
        event.update(
            batch_id=batch_id, project_id=project_id, user_id=user_id, runs=int(runs), sequence=opt("sequence")
        )
    return event


# ---------------------------------------------------------------- section 2: folding


def _key(event: Event) -> tuple[int, str]:
    return (event["occurred_at"], event["event_id"])


def fold(events: list[Event]) -> Job | None:
    """Fold the valid events of ONE job into the job (None until a `created` event exists)."""
    unique = list({e["event_id"]: e for e in reversed(events)}.values())  # first copy wins
    created = [e for e in unique if e["type"] == "created"]
    if not created:
        return None
    c = min(created, key=_key)
    terminals = [e for e in unique if e["type"] in TERMINAL_TYPES]
    winner = min(terminals, key=_key) if terminals else None
    top = max(unique, key=lambda e: RANK[STATUS_OF[e["type"]]])
    started = [e["occurred_at"] for e in unique if e["type"] == "started"]
    return {
        "id": c["job_id"],
        "parent_id": c["parent_id"],
        "batch_id": c["batch_id"],
        "project_id": c["project_id"],
        "user_id": c["user_id"],
        "status": STATUS_OF[winner["type"]] if winner else STATUS_OF[top["type"]],
        "runs": c["runs"],
        "origin": c["origin"],
        "errors": list(winner["errors"] or []) if winner else [],
        "variables": c["variables"],
        "created_at": c["occurred_at"],
        "updated_at": max(e["occurred_at"] for e in unique),
        "start_timestamp": min(started) if started else None,
        "end_timestamp": winner["occurred_at"] if winner else None,
        # Shown for a single job only (render_detail), never in the list.
        "results_link": winner["results_link"] if winner else None,
        "sequence": c["sequence"],
    }


def render_job(job: Job, creation_order: int) -> dict[str, Any]:
    """The job as the API's list renders it (timestamps as strings, creation_order added, results left out)."""
    out = {k: v for k, v in job.items() if k not in DETAIL_ONLY}
    out["creation_order"] = creation_order
    for name in ("created_at", "updated_at", "start_timestamp", "end_timestamp"):
        if out[name] is not None:
            out[name] = render_timestamp(out[name])
    return out


DETAIL_ONLY = ("results_link", "sequence")


def render_watched(job: Job, creation_order: int) -> dict[str, Any]:
    """A job as the watch stream sends it: the list's fields plus the results link (never the sequence)."""
    return render_job(job, creation_order) | {"results_link": job["results_link"]}


def render_detail(job: Job, creation_order: int) -> dict[str, Any]:
    """One job as GET /api/v2/jobs/{id} renders it: the list's fields plus the results link and sequence."""
    return render_job(job, creation_order) | {k: job[k] for k in DETAIL_ONLY}


# ---------------------------------------------------------------- section 3: querying


def _date(value: str) -> int:
    us = parse_timestamp(value)
    if us is None:
        raise ValueError(f"invalid date-time {value!r}")
    return us


def _truthy(value: str) -> bool:
    return value.lower() in ("true", "1")


class Reference:
    """Published raw entries, in order, and the registry state they imply."""

    def __init__(self) -> None:
        self.entries: list[dict[str, str]] = []
        self.invalid = 0
        self._events: list[Event] = []
        self._seen: set[str] = set()
        self._jobs: dict[str, Job] | None = None

    def add(self, fields: dict[str, str]) -> bool:
        """Record one published entry; return whether it is a valid event."""
        self.entries.append(dict(fields))
        event = decode(fields)
        if event is None:
            self.invalid += 1
            return False
        if event["event_id"] not in self._seen:
            self._seen.add(event["event_id"])
            self._events.append(event)
            self._jobs = None
        return True

    def jobs(self) -> dict[str, Job]:
        """job_id -> folded job, for every job whose `created` event is known."""
        if self._jobs is None:
            by_job: dict[str, list[Event]] = {}
            for e in self._events:
                by_job.setdefault(e["job_id"], []).append(e)
            folded = {jid: fold(evs) for jid, evs in by_job.items()}
            self._jobs = {jid: job for jid, job in folded.items() if job is not None}
        return self._jobs

    def query(self, params: Params, creation_order: dict[str, int]) -> tuple[int, list[str]]:  # noqa: C901  a literal reading of the contract, one filter per branch
        """(total, ids of the page) for GET /api/v2/jobs with these (valid) query params."""
        multi: dict[str, list[str]] = {}
        for name, value in params:
            multi.setdefault(name, []).append(value)

        def last(name: str, default: str) -> str:
            return multi[name][-1] if name in multi else default

        def keep(job: Job) -> bool:
            for name, values in multi.items():
                if name in ("id", "batch_id", "project_id"):
                    ok = job[name] in {v.lower() for v in values}
                elif name in ("user_id", "status", "origin"):
                    ok = job[name] in values
                elif name == "id__starts_with":
                    ok = all(job["id"].startswith(v.lower()) for v in values)
                elif name == "min_runs":
                    ok = all(job["runs"] >= int(v) for v in values)
                elif name == "max_runs":
                    ok = all(job["runs"] <= int(v) for v in values)
                elif name == "errors":
                    ok = all(bool(job["errors"]) == _truthy(v) for v in values)
                elif name == "start_date":
                    start = job["start_timestamp"]
                    ok = start is not None and all(start >= _date(v) for v in values)
                elif name == "end_date":
                    end = job["end_timestamp"]
                    ok = end is not None and all(end <= _date(v) for v in values)
                else:  # ordering / pagination parameters
                    ok = True
                if not ok:
                    return False
            return True

        order_by = last("order_by", "created_at")
        desc = last("order_by_direction", "DESC").upper() == "DESC"
        offset, limit = int(last("offset", "0")), int(last("limit", "100"))

        def sort_value(job: Job) -> Any:
            return creation_order.get(job["id"]) if order_by == "creation_order" else job[order_by]

        matches = [j for j in self.jobs().values() if keep(j)]
        present = sorted(
            (j for j in matches if sort_value(j) is not None), key=lambda j: (sort_value(j), j["id"]), reverse=desc
        )
        absent = sorted((j for j in matches if sort_value(j) is None), key=lambda j: j["id"], reverse=desc)
        ordered = present + absent
        return len(ordered), [j["id"] for j in ordered[offset : offset + limit]]


# ---------------------------------------------------------------- generators

BASE = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
ZONES = (None, UTC, UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30)))


def _new_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _wire_time(rng: random.Random, us: int) -> str:
    """Render µs-since-epoch as wire text: 'Z', naive, +00:00, +02:00 or -05:30."""
    dt = EPOCH + timedelta(microseconds=us)
    zone = rng.choice(ZONES)
    if zone is None:
        return dt.replace(tzinfo=None).isoformat(timespec="microseconds")
    text = dt.astimezone(zone).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z") if rng.random() < 0.5 else text


def _job_traffic(rng: random.Random, pools: dict[str, list[Any]]) -> list[Event]:
    """One job's random lifecycle: wire fields plus its time "t" in µs (no ids yet)."""
    sec = 1_000_000
    base_us = (BASE - EPOCH) // timedelta(microseconds=1)
    if rng.random() < 0.2:  # coarse grid -> created_at ties across jobs
        t0 = base_us + rng.randrange(0, 20) * 60 * sec
    else:
        t0 = base_us + rng.randrange(0, 3 * 86400 * sec)
    batch_id, project_id = rng.choice(pools["batches"])
    created = {
        "type": "created",
        "t": t0,
        "batch_id": batch_id,
        "project_id": project_id,
        "user_id": rng.choice(pools["users"]),
        "runs": str(rng.choice((1, 10, 100, 500, 2000)) if rng.random() < 0.5 else rng.randint(1, 2000)),
    }
    if rng.random() < 0.8:
        created["origin"] = rng.choice((*ORIGINS, ""))
    if rng.random() < 0.15 and pools["ids"]:
        created["parent_id"] = rng.choice(pools["ids"])
    if rng.random() < 0.3:
        created["variables"] = json.dumps(
            {"Omega_max": round(rng.uniform(1, 20), 3), "n": rng.randint(0, 9), "tag": "ω"}
        )
    events = [created]
    t = t0
    for etype, p in (("started", 0.7), ("started", 0.07), ("canceling", 0.15)):
        if rng.random() < p:
            t += rng.randrange(-5 * sec if rng.random() < 0.05 else 0, 600 * sec)
            events.append({"type": etype, "t": t})
    n_term = rng.choices((0, 1, 2), weights=(25, 60, 15))[0]
    for _ in range(n_term):
        t += 0 if rng.random() < 0.3 else rng.randrange(0, 3600 * sec)  # some ties
        term: Event = {"type": rng.choice(TERMINAL_TYPES), "t": t}
        if term["type"] == "failed" and rng.random() < 0.6:
            term["errors"] = json.dumps(rng.sample(["timeout", "QPU fault", "bad register Ω"], rng.randint(1, 2)))
        elif rng.random() < 0.1:
            term["errors"] = "[]"
        events.append(term)
    return events


def make_traffic(
    rng: random.Random,
    n_jobs: int,
    *,
    dup_rate: float = 0.05,
    bad_rate: float = 0.02,
    n_projects: int = 3,
    n_batches: int = 6,
) -> list[dict[str, str]]:
    """Raw wire entries (all str values) for n_jobs jobs: shuffled, with duplicates and junk."""
    projects = [_new_uuid(rng) for _ in range(n_projects)]
    pools: dict[str, list[Any]] = {
        "batches": [(_new_uuid(rng), rng.choice(projects)) for _ in range(n_batches)],
        "users": ["alice", "bob", "carol@example.com", "user-ü"],
        "ids": [],
    }
    entries: list[dict[str, str]] = []
    for _ in range(n_jobs):
        job_id = _new_uuid(rng)
        marks = int(job_id[:2], 16)  # derived from the id, not drawn: seeded datasets keep their shape
        for ev in _job_traffic(rng, pools):
            t = ev.pop("t")
            if ev["type"] == "created" and marks % 5 == 0:
                ev["sequence"] = json.dumps({"register": {"q0": [0, 0]}, "n": marks})
            elif ev["type"] in TERMINAL_TYPES and (marks + t) % 3 == 0:
                ev["results_link"] = f"https://results.example/jobs/{job_id}/{t}.json?sig=a%2Fb"
            eid = _new_uuid(rng) if rng.random() < 0.9 else f"emu-{rng.getrandbits(40):x}"
            entry = {
                "event_id": eid,
                "job_id": job_id.upper() if rng.random() < 0.2 else job_id,
                "occurred_at": _wire_time(rng, t),
                **ev,
            }
            if rng.random() < 0.05:
                entry["backend"] = "fresnel"  # unknown field, ignored
            entries.append(entry)
        pools["ids"].append(job_id)
    rng.shuffle(entries)
    for entry in list(entries):
        if rng.random() < dup_rate:
            entries.insert(rng.randrange(len(entries) + 1), dict(entry))
    for _ in range(int(bad_rate * len(entries) + rng.random())):
        entries.insert(rng.randrange(len(entries) + 1), _malformed(rng, pools["ids"]))
    return entries


def far_end_traffic(rng: random.Random, entries: list[dict[str, str]], n_jobs: int) -> tuple[str, list[dict[str, str]]]:
    """``entries`` with ``n_jobs`` jobs of a new project mixed in at random places: a filter whose matches
    sit at the far end of every order taken DESC (and at its front ASC). They were created, started and
    ended before any job of make_traffic's (BASE on), have the fewest runs and the smallest ids, and are
    listed among the others (random handles, so no zone map sets them apart). Returns (project, entries)."""
    sec = 1_000_000
    base_us = (BASE - EPOCH) // timedelta(microseconds=1) - 30 * 86400 * sec
    project, batch = _new_uuid(rng), _new_uuid(rng)
    out = list(entries)
    for i in range(n_jobs):
        job_id = str(uuid.UUID(int=rng.getrandbits(100), version=4))  # leading zeros: the smallest ids
        t = base_us + i * 60 * sec
        created = {"type": "created", "batch_id": batch, "project_id": project, "user_id": "dave", "runs": "1"}
        for ev, at in (
            (created, t),
            ({"type": "started"}, t + sec),
            ({"type": rng.choice(TERMINAL_TYPES)}, t + 2 * sec),
        ):
            entry = {"event_id": _new_uuid(rng), "job_id": job_id, "occurred_at": _wire_time(rng, at), **ev}
            out.insert(rng.randrange(len(out) + 1), entry)
    return project, out


def _malformed(rng: random.Random, ids: list[str]) -> dict[str, str]:
    """One entry that breaks section 1 in exactly one (unambiguous) way."""
    job_id = rng.choice(ids) if ids and rng.random() < 0.7 else _new_uuid(rng)
    now = render_timestamp((BASE - EPOCH) // timedelta(microseconds=1) + rng.randrange(10**11))
    e = {
        "event_id": _new_uuid(rng),
        "type": "created",
        "job_id": job_id,
        "occurred_at": now,
        "batch_id": _new_uuid(rng),
        "project_id": _new_uuid(rng),
        "user_id": "mallory",
        "runs": "5",
    }
    kind = rng.randrange(12)
    if kind == 0:
        del e[rng.choice(("event_id", "type", "job_id", "occurred_at", "batch_id", "project_id", "user_id", "runs"))]
    elif kind == 1:
        e["type"] = rng.choice(("paused", "CREATED", "done", ""))
    elif kind == 2:
        bad = rng.choice(
            (
                job_id.replace("-", ""),
                "{" + job_id + "}",
                "urn:uuid:" + job_id,
                job_id[:-1] + "g",
                job_id + "0",
                "not-a-uuid",
            )
        )
        e[rng.choice(("job_id", "batch_id", "project_id", "parent_id"))] = bad
    elif kind == 3:
        e["occurred_at"] = rng.choice(
            ("2026-02-30T00:00:00Z", "yesterday", "12:00", "2026-01-01T25:00:00", "2026/01/01 10:00:00")
        )
    elif kind == 4:
        e["runs"] = rng.choice(("0", "abc", "-5", "1.5", "2147483648", " 5", "1e3"))
    elif kind == 5:
        e["origin"] = rng.choice(("MARS", "client", "Azure"))
    elif kind == 6:
        e["variables"] = rng.choice(("[1]", '"x"', "3", "null"))
    elif kind == 7:
        e.update(type=rng.choice(TERMINAL_TYPES), errors='{"a":1}')
    elif kind == 8:
        e.update(type="failed", errors=rng.choice(("[1]", '["ok", null]', '"boom"')))
    elif kind == 9:
        e[rng.choice(("variables", "errors"))] = rng.choice(('{"a":', "[", "{'a': 1}", "NaN"))
    elif kind == 10:
        e["user_id"] = rng.choice(("", "u" * 129))
    else:
        e["variables"] = json.dumps({"blob": "x" * (MAX_VALUE_BYTES + 1)})
    return e


def _wire_date(rng: random.Random, us: int) -> str:
    dt = EPOCH + timedelta(microseconds=us)
    zone = rng.choice((None, UTC, timezone(timedelta(hours=2))))
    if zone is None:
        return dt.replace(tzinfo=None).isoformat(timespec="microseconds")
    return dt.astimezone(zone).isoformat(timespec="microseconds")


def random_query(rng: random.Random, ref: Reference) -> Params:  # noqa: C901  one random draw per parameter
    """Random valid GET /api/v2/jobs params drawn from ref's jobs (sometimes matching nothing)."""
    jobs = list(ref.jobs().values())
    params: Params = []

    def pick(field: str, k: int) -> list[Any]:
        values = [j[field] for j in rng.sample(jobs, min(k, len(jobs)))]
        return values if values and rng.random() < 0.85 else [*values, _new_uuid(rng)]

    for field in ("id", "batch_id", "project_id"):
        if rng.random() < 0.15:
            params += [(field, v.upper() if rng.random() < 0.1 else v) for v in pick(field, rng.randint(1, 3))]
    if rng.random() < 0.15:
        users = {j["user_id"] for j in jobs} | {"nobody"}
        params += [("user_id", u) for u in rng.sample(sorted(users), rng.randint(1, 2))]
    if rng.random() < 0.15:
        prefix = rng.choice(jobs)["id"] if jobs and rng.random() < 0.8 else _new_uuid(rng)
        params.append(("id__starts_with", prefix[: rng.randint(1, 12)]))
    for name, pool in (("status", STATUSES), ("origin", ORIGINS)):
        if rng.random() < 0.25:
            params += [(name, s) for s in rng.sample(pool, rng.randint(1, 3))]
    for name in ("min_runs", "max_runs"):
        if rng.random() < 0.2:
            runs = rng.choice(jobs)["runs"] if jobs and rng.random() < 0.7 else rng.randint(1, 2000)
            params.append((name, str(runs)))
    if rng.random() < 0.2:
        params.append(("errors", rng.choice(("true", "false", "True", "False"))))
    for name, field in (("start_date", "start_timestamp"), ("end_date", "end_timestamp")):
        stamps = [j[field] for j in jobs if j[field] is not None]
        if stamps and rng.random() < 0.2:
            params.append((name, _wire_date(rng, rng.choice(stamps) + rng.choice((-1, 0, 0, 1)))))
    rng.shuffle(params)
    if rng.random() < 0.8:
        params.append(("order_by", rng.choice(ORDER_BYS)))
    if rng.random() < 0.8:
        params.append(("order_by_direction", rng.choice(("ASC", "DESC"))))
    if rng.random() < 0.8:
        params.append(("limit", str(rng.randint(1, 100))))
    if rng.random() < 0.7:  # within the matches, near the end, or past it
        total = ref.query(params, {})[0]
        params.append(("offset", str(rng.choice((0, rng.randint(0, total + 2), total + 5)))))
    return params
