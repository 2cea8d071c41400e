"""Event decoding under fuzzing: only InvalidEvent ever escapes, and jobreg agrees with the reference."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.errors import InvalidEvent
from registry.wire.events import decode_event
from tests.reference import decode

JOB = "0f8e3f0c-1c6b-4c1a-9b7e-3e1d2c3b4a59"
FIELDS = [
    "event_id", "type", "job_id", "occurred_at", "batch_id", "project_id",
    "user_id", "runs", "origin", "parent_id", "variables", "errors",
]  # fmt: skip
BASE = {
    "event_id": "e1", "type": "created", "job_id": JOB, "occurred_at": "2026-01-01T00:00:00Z",
    "batch_id": JOB, "project_id": JOB, "user_id": "u", "runs": "5",
}  # fmt: skip
TRICKY = [
    "", " 5", "+5", "٣", "2026-01-01T00:00:00Z ", "2026-01-01", "0001-01-01T00:00:00", "20260101T100000",
    "2026-01-01T10:00:00.1234567Z", "2026-01-01T10:00:00+24:00", "created", "CREATED", "CLIENT", "[]", "{}",
    '["a"]', "null", '{"a": 1e999}', '{"a": 18446744073709551616}', '{"a": "\\ud800"}', '["\\udc80"]',
    '{"a":' + "[" * 3000 + "]" * 3000 + "}", JOB.upper(), JOB + "\n", "1" * 40, "0",
]  # fmt: skip
VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(TRICKY),
    st.from_regex(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d{1,9})?)?(Z|[+-]\d\d:?\d\d)?", fullmatch=True),
    st.from_regex(r"[0-9a-fA-F-]{36}", fullmatch=True),
)


@settings(max_examples=800, suppress_health_check=list(HealthCheck), deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=4))
def test_decode_agrees_with_the_reference(changes: dict[str, str]) -> None:
    fields = {**BASE, **changes}
    try:
        decode_event(fields)  # type: ignore[arg-type]
        valid = True
    except InvalidEvent:
        valid = False
    assert valid == (decode(fields) is not None), fields


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.binary(max_size=12), st.binary(max_size=60), max_size=6))
def test_arbitrary_bytes_only_ever_raise_invalid_event(raw: dict[bytes, bytes]) -> None:
    with contextlib.suppress(InvalidEvent):
        decode_event({**{k.encode(): v.encode() for k, v in BASE.items()}, **raw})  # type: ignore[dict-item]
