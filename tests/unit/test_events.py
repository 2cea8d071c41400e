"""Each way a stream entry can be bad, and the reason it is dead-lettered with."""

from __future__ import annotations

import pytest

from registry.domain.model import EventType, Origin
from registry.errors import InvalidEvent
from registry.wire.events import decode_event

J = "0F8E3F0C-1C6B-4C1A-9B7E-3E1D2C3B4A59"
GOOD = {
    "event_id": "e1",
    "type": "created",
    "job_id": J,
    "occurred_at": "2026-11-23T10:00:00.123456",
    "batch_id": "11111111-1111-1111-1111-111111111111",
    "project_id": "22222222-2222-2222-2222-222222222222",
    "user_id": "alice",
    "runs": "50",
    "origin": "CLIENT",
    "variables": '{"Omega_max": 14.4}',
}


def test_good_created_is_normalised() -> None:
    e = decode_event({k.encode(): v.encode() for k, v in GOOD.items()} | {b"extra": b"ignored"})
    assert e.type is EventType.CREATED and e.job_id == J.lower() and e.runs == 50
    assert e.origin is Origin.CLIENT and e.variables == {"Omega_max": 14.4}
    assert e.occurred_at == 1795428000123456


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"event_id": None}, "missing required field event_id"),
        ({"type": "exploded"}, "unknown type"),
        ({"job_id": "not-a-uuid"}, "job_id is not a UUID"),
        ({"job_id": J.replace("-", "")}, "job_id is not a UUID"),
        ({"occurred_at": "yesterday"}, "occurred_at is not an RFC 3339 timestamp"),
        ({"batch_id": None}, "missing required field batch_id"),
        ({"project_id": "x"}, "project_id is not a UUID"),
        ({"user_id": ""}, "missing required field user_id"),
        ({"user_id": "u" * 129}, "user_id longer than 128"),
        ({"runs": "0"}, "runs must be an integer"),
        ({"runs": "1.5"}, "runs must be an integer"),
        ({"origin": "MARS"}, "origin 'MARS' is not one of"),
        ({"variables": "[1]"}, "variables is not a JSON object"),
        ({"variables": "{oops"}, "variables is not a JSON object"),
        ({"errors": '{"a": 1}'}, "errors is not a JSON array of strings"),
        ({"errors": "[1]"}, "errors is not a JSON array of strings"),
        ({"variables": '{"a": "' + "x" * 70_000 + '"}'}, "variables exceeds 65536 bytes"),
        ({"results_link": "ftp://host/r"}, "results_link is not an absolute http(s) URL"),
        ({"results_link": "//host/r"}, "results_link is not an absolute http(s) URL"),
        ({"results_link": "https://host/a\nb"}, "results_link is not an absolute http(s) URL"),
        ({"results_link": "https://h\u00f4st/r"}, "results_link is not an absolute http(s) URL"),
        ({"results_link": "https://host/" + "a" * 4096}, "results_link longer than 4096"),
        ({"sequence": "s" * 70_000}, "sequence exceeds 65536 bytes"),
        # Issue 12, finding 11: a zone pushes this past year 9999, which RFC 3339 cannot write.
        ({"occurred_at": "9999-12-31T23:59:59-23:59"}, "occurred_at is not an RFC 3339 timestamp"),
        ({"occurred_at": "9999-12-31T23:59:59.999999-00:00:01"}, "occurred_at is not an RFC 3339 timestamp"),
        # Issue 12, finding 5: a field name with control characters is escaped (and cut) in the reason.
        ({"x\x1b[2J\n" + "y" * 100: "v" * 70_000}, "x\\x1b[2J\\n" + "y" * 54 + " exceeds 65536 bytes"),
    ],
)
def test_bad_entries_give_a_reason(change: dict[str, str | None], reason: str) -> None:
    fields = {k: v for k, v in (GOOD | change).items() if v is not None}
    with pytest.raises(InvalidEvent) as info:
        decode_event(fields)
    assert reason in info.value.reason


def test_invalid_utf8() -> None:
    with pytest.raises(InvalidEvent, match="UTF-8"):
        decode_event({b"event_id": b"\xff\xfe", b"type": b"started"})


def test_non_created_events_need_no_creation_fields() -> None:
    e = decode_event(
        {"event_id": "x", "type": "failed", "job_id": J, "occurred_at": "2026-01-01T00:00:00Z", "errors": '["boom"]'}
    )
    assert e.errors == ("boom",) and e.batch_id is None


def test_results_link_and_sequence() -> None:
    link = "https://store.example/jobs/r.json?X-Amz-Signature=ab%2Fcd&X-Amz-Expires=3600"
    finished = decode_event(
        {"event_id": "f", "type": "finished", "job_id": J, "occurred_at": "2026-11-23T10:00:00", "results_link": link}
    )
    assert finished.results_link == link
    created = decode_event(GOOD | {"sequence": '{"version": "1"}'})
    assert created.sequence == '{"version": "1"}' and created.results_link is None
    # A sequence on a non-created event is ignored like the other creation fields.
    started = decode_event(
        {"event_id": "s", "type": "started", "job_id": J, "occurred_at": "2026-11-23T10:00:00", "sequence": "x"}
    )
    assert started.sequence is None
