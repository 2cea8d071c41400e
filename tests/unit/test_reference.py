"""Hand-computed checks of the independent reference implementation (tests/reference.py)."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from tests.reference import (
    Reference,
    _malformed,
    decode,
    fold,
    make_traffic,
    random_query,
    render_job,
    render_timestamp,
)

J1 = "11111111-1111-4111-8111-111111111111"
J2 = "22222222-2222-4222-8222-222222222222"
J3 = "33333333-3333-4333-8333-333333333333"
J4 = "44444444-4444-4444-8444-444444444444"
B = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
P = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
T0 = "2026-01-01T00:00:00"
T0_US = 1767225600 * 1_000_000


def ts(seconds: float) -> str:
    """Wire time `seconds` after T0 (naive = UTC)."""
    return render_timestamp(T0_US + round(seconds * 1_000_000))


def ev(eid: str, etype: str, job: str, t: float, **extra: str) -> dict[str, str]:
    fields = {"event_id": eid, "type": etype, "job_id": job, "occurred_at": ts(t), **extra}
    if etype == "created":
        fields = {"batch_id": B, "project_id": P, "user_id": "u", "runs": "10", **fields}
    return fields


def decoded(*entries: dict[str, str]) -> list[dict[str, Any]]:
    out = [decode(e) for e in entries]
    return [e for e in out if e is not None] if None not in out else pytest.fail("invalid")


def test_decode_normalizes() -> None:
    e = decode(
        ev(
            "e1",
            "created",
            J1.upper(),
            0,
            batch_id=B.upper(),
            origin="",
            parent_id="",
            variables='{"a": 1}',
            extra="ignored",
        )
    )
    assert e is not None
    assert (e["job_id"], e["batch_id"], e["origin"], e["parent_id"]) == (J1, B, "UNKNOWN", None)
    assert (e["runs"], e["variables"], e["errors"]) == (10, {"a": 1}, None)

    def at(text: str) -> int:
        event = decode(dict(ev("e", "started", J1, 0), occurred_at=text))
        assert event is not None
        return int(event["occurred_at"])

    zoned = ("2026-01-01T02:00:00+02:00", "2025-12-31T19:00-05:00")
    for text in (T0, T0 + "Z", T0 + "+00:00", *zoned):
        assert at(text) == T0_US
    assert at(T0 + ".000007") == T0_US + 7


@pytest.mark.parametrize(
    "change",
    [
        {"event_id": ""},
        {"event_id": "x" * 201},
        {"type": "paused"},
        {"job_id": J1.replace("-", "")},
        {"occurred_at": "2026-02-30T00:00:00"},
        {"runs": "0"},
        {"runs": "abc"},
        {"runs": "2147483648"},
        {"origin": "MARS"},
        {"variables": "[1]"},
        {"errors": '{"a":1}'},
        {"errors": "[1]"},
        {"variables": '{"a":'},
        {"user_id": ""},
        {"user_id": "u" * 129},
        {"batch_id": "nope"},
        {"parent_id": "nope"},
        {"extra": "x" * 65537},
    ],
)
def test_decode_rejects(change: dict[str, str]) -> None:
    assert decode(ev("e1", "created", J1, 0)) is not None
    assert decode({**ev("e1", "created", J1, 0), **change}) is None


def test_decode_missing_required() -> None:
    for name in ("event_id", "type", "job_id", "occurred_at", "batch_id", "project_id", "user_id", "runs"):
        fields = ev("e1", "created", J1, 0)
        del fields[name]
        assert decode(fields) is None
    started = ev("e2", "started", J1, 0)
    assert decode(started) is not None  # created-only fields are not needed on other types


def test_generated_malformed_entries_are_all_invalid() -> None:
    rng = random.Random(7)
    for _ in range(500):
        assert decode(_malformed(rng, [J1, J2])) is None


def test_fold_any_order_and_duplicates() -> None:
    events = decoded(
        ev("s1", "started", J1, 20),
        ev("c", "created", J1, 10),
        ev("k", "canceling", J1, 25),
        ev("f", "finished", J1, 30),
        ev("s2", "started", J1, 15),
    )
    expected: dict[str, Any] = {
        "id": J1,
        "parent_id": None,
        "batch_id": B,
        "project_id": P,
        "user_id": "u",
        "status": "DONE",
        "runs": 10,
        "origin": "UNKNOWN",
        "errors": [],
        "variables": None,
        "created_at": T0_US + 10_000_000,
        "updated_at": T0_US + 30_000_000,
        "start_timestamp": T0_US + 15_000_000,
        "end_timestamp": T0_US + 30_000_000,
        "results_link": None,
        "sequence": None,
    }
    for perm in itertools.permutations(events):
        assert fold([*perm, perm[0], perm[2]]) == expected
    assert fold([e for e in events if e["type"] != "created"]) is None
    pending = fold(decoded(ev("c", "created", J1, 10), ev("k", "canceling", J1, 5)))
    assert pending is not None
    assert (pending["status"], pending["updated_at"]) == ("CANCELING", T0_US + 10_000_000)


def test_fold_terminal_tie_breaks() -> None:
    created = ev("c", "created", J1, 0)
    tie = decoded(created, ev("b", "failed", J1, 50, errors='["x"]'), ev("a", "canceled", J1, 50))
    job = fold(tie)
    assert job is not None
    assert (job["status"], job["errors"]) == ("CANCELED", [])
    assert job["end_timestamp"] == T0_US + 50_000_000
    early = decoded(created, ev("a", "finished", J1, 60), ev("z", "failed", J1, 40, errors='["e"]'))
    job = fold(early)
    assert job is not None
    assert (job["status"], job["errors"], job["updated_at"]) == ("ERROR", ["e"], T0_US + 60_000_000)
    # two created events: smallest (occurred_at, event_id) wins
    two = decoded(ev("c2", "created", J1, 5, runs="7"), ev("c1", "created", J1, 5, runs="3"))
    job = fold(two)
    assert job is not None
    assert job["runs"] == 3


def build(*entries: dict[str, str]) -> Reference:
    ref = Reference()
    for e in entries:
        ref.add(e)
    return ref


def test_reference_dedups_and_counts_invalid() -> None:
    ref = build(
        ev("c", "created", J1, 0),
        ev("s", "started", J1, 1),
        ev("s", "started", J1, 1),
        {"event_id": "x"},
        ev("s0", "started", J2, 1),
    )
    assert ref.invalid == 1
    assert list(ref.jobs()) == [J1]
    assert ref.jobs()[J1]["status"] == "RUNNING"
    api = render_job(ref.jobs()[J1], 3)
    assert api["creation_order"] == 3
    assert api["start_timestamp"] == "2026-01-01T00:00:01.000000+00:00"
    assert api["end_timestamp"] is None


def sample() -> Reference:
    # start: J1 none, J2 at 5, J3 at 5, J4 none. end: J2 at 9, J3 at 7.
    return build(
        ev("c1", "created", J1, 1, runs="5"),
        ev("c2", "created", J2, 2, runs="1"),
        ev("c3", "created", J3, 3, runs="5"),
        ev("c4", "created", J4, 4, runs="9"),
        ev("s2", "started", J2, 5),
        ev("s3", "started", J3, 5),
        ev("f2", "failed", J2, 9, errors='["boom"]'),
        ev("f3", "finished", J3, 7),
    )


def test_ordering_nulls_last_both_directions() -> None:
    ref, order = sample(), {J1: 4, J2: 3, J3: 2, J4: 1}
    asc = [("order_by", "start_timestamp"), ("order_by_direction", "ASC")]
    assert ref.query(asc, order) == (4, [J2, J3, J1, J4])
    desc = [("order_by", "start_timestamp"), ("order_by_direction", "DESC")]
    assert ref.query(desc, order) == (4, [J3, J2, J4, J1])
    assert ref.query([], order) == (4, [J4, J3, J2, J1])  # created_at DESC by default
    assert ref.query([("order_by", "runs"), ("order_by_direction", "ASC")], order)[1] == [J2, J1, J3, J4]
    assert ref.query([("order_by", "creation_order"), ("order_by_direction", "ASC")], order)[1] == [J4, J3, J2, J1]
    assert ref.query([("order_by", "end_timestamp"), ("limit", "2"), ("offset", "1")], order) == (4, [J3, J4])
    assert ref.query([("offset", "10")], order) == (4, [])


def test_filters() -> None:
    ref, order = sample(), dict[str, int]()
    asc = [("order_by", "id"), ("order_by_direction", "ASC")]

    def ids(*params: tuple[str, str]) -> list[str]:
        total, page = ref.query([*params, *asc], order)
        assert total == len(page)
        return page

    assert ids(("start_date", ts(5))) == [J2, J3]  # inclusive; never-started excluded
    assert ids(("start_date", "2026-01-01T02:00:05.000001+02:00")) == []
    assert ids(("end_date", ts(7))) == [J3]  # inclusive; not-ended excluded
    assert ids(("end_date", "2026-01-01T00:00:09Z")) == [J2, J3]
    assert ids(("id__starts_with", "2222")) == [J2]
    assert ids(("id__starts_with", "33333333-3")) == [J3]
    assert ids(("id__starts_with", "3333333-")) == []
    assert ids(("id", J1.upper()), ("id", J3)) == [J1, J3]
    assert ids(("status", "PENDING"), ("status", "ERROR")) == [J1, J2, J4]
    assert ids(("min_runs", "5"), ("max_runs", "5")) == [J1, J3]
    for value, expected in (("true", [J2]), ("False", [J1, J3, J4]), ("1", [J2])):
        assert ids(("errors", value)) == expected
    assert ids(("origin", "UNKNOWN"), ("user_id", "u"), ("batch_id", B), ("project_id", P)) == [J1, J2, J3, J4]
    assert ids(("origin", "AZURE")) == []


def test_render_timestamp() -> None:
    assert render_timestamp(0) == "1970-01-01T00:00:00.000000+00:00"
    assert render_timestamp(T0_US + 1) == "2026-01-01T00:00:00.000001+00:00"


def test_generators_are_deterministic_and_useful() -> None:
    traffic = make_traffic(random.Random(3), 60, bad_rate=0.1)
    assert traffic == make_traffic(random.Random(3), 60, bad_rate=0.1)
    assert all(isinstance(v, str) for e in traffic for v in e.values())
    ref = build(*traffic)
    assert ref.invalid > 0
    assert len(ref.jobs()) == 60
    assert len({e["event_id"] for e in traffic}) < len(traffic)  # duplicates present
    statuses = {j["status"] for j in ref.jobs().values()}
    assert {"PENDING", "RUNNING", "DONE", "ERROR", "CANCELED"} <= statuses
    order = {jid: i for i, jid in enumerate(sorted(ref.jobs()))}
    rng, hits = random.Random(4), 0
    for _ in range(200):
        params = random_query(rng, ref)
        total, page = ref.query(params, order)
        hits += total > 0
        assert len(page) <= total
    assert 20 < hits < 200
