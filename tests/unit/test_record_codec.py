"""The record's compact state codec: every state comes back exactly, older (msgpack) blobs still decode."""

from __future__ import annotations

import uuid

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.domain.fold import fold
from registry.domain.model import Created, Event, EventType, JobState, Origin, Status, Terminal
from registry.store import record

JOB = "0f8fad5b-d9cb-469f-a165-70867728950e"

# Ids of every kind the codec must return as they were: canonical uuids (stored as 16 bytes),
# uuids in other spellings, all-digit uuids (no letters), 36-character non-uuids, other strings.
IDS = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: u.hex),
    st.just("12345678-1234-1234-1234-123456789012"),
    st.just("0f8fad5b-d9cb-469f-a165-70867728950 "),
    st.just("0f8fad5b d9cb-469f-a165-70867728950e"),
    st.just(" f8fad5b-d9cb-469f-a165-70867728950e"),
    st.just("0f8fad5b-d9cb-469f-a165-7086772895zz"),
    st.text(max_size=40),
)
TIMES = st.integers(-(2**62), 2**62)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def states(draw: st.DrawFn, times: st.SearchStrategy[int] = TIMES) -> JobState:
    """Any folded state (listed or not, every status) with instants drawn from ``times``."""
    created = draw(
        st.none()
        | st.builds(
            Created,
            event_id=IDS,
            occurred_at=times,
            batch_id=IDS,
            project_id=IDS,
            user_id=IDS,
            runs=st.integers(0, 2**40),
            origin=st.sampled_from(list(Origin)),
            parent_id=st.none() | IDS,
            variables=st.none() | st.dictionaries(st.text(max_size=10), JSON, max_size=4),
            sequence=st.none() | st.text(max_size=50),
        )
    )
    terminal = draw(
        st.none()
        | st.builds(
            Terminal,
            event_id=IDS,
            occurred_at=times,
            status=st.sampled_from([Status.DONE, Status.ERROR, Status.CANCELED]),
            errors=st.lists(st.text(max_size=20), max_size=3).map(tuple),
            results_link=st.none() | st.text(max_size=30),
        )
    )
    return JobState(
        job_id=draw(st.uuids().map(str)),
        created=created,
        start_timestamp=draw(st.none() | times),
        canceling=draw(st.booleans()),
        terminal=terminal,
        updated_at=draw(st.none() | times),
    )


@settings(max_examples=400, deadline=None)
@given(states())
def test_every_state_round_trips_exactly(state: JobState) -> None:
    blob = record.encode_state(state)
    assert record.is_compact(blob)
    assert record.decode_state(blob, state.job_id) == state
    # The job id is the record's key, not part of the blob.
    assert uuid.UUID(state.job_id).bytes not in blob and state.job_id.encode() not in blob


@settings(max_examples=150, deadline=None)
@given(states())
def test_blobs_written_before_layout_6_still_decode(state: JobState) -> None:
    legacy = msgspec.msgpack.encode(state)
    assert not record.is_compact(legacy)
    assert record.decode_state(legacy, "ignored: a legacy blob carries its id") == state


def test_a_typical_job_is_about_half_its_legacy_size() -> None:
    created = Event(
        event_id="72b001cd-6667-5991-a2e5-a4be1b26c8b6",
        type=EventType.CREATED,
        job_id=JOB,
        occurred_at=1_790_000_000_000_000,
        batch_id="1da1b973-ab21-4a77-a4f8-98acf2857cb6",
        project_id="2ca3514a-6656-4273-8a60-868674219dbb",
        user_id="auth0|53c288a4fbdb544e1a54fff22",
        runs=500,
        origin=Origin.AZURE,
        variables={"Omega_max": 2.115, "duration": 2000},
    )
    started = Event(
        event_id="cf1bfd07-bd05-5bb3-9bcc-fde6532763be",
        type=EventType.STARTED,
        job_id=JOB,
        occurred_at=1_790_000_020_000_000,
    )
    done = Event(
        event_id="b2b001cd-6667-5991-a2e5-a4be1b26c8b6",
        type=EventType.FINISHED,
        job_id=JOB,
        occurred_at=1_790_000_090_000_000,
    )
    state = fold(JOB, [created, started, done])
    compact, legacy = record.encode_state(state), msgspec.msgpack.encode(state)
    assert record.decode_state(compact, JOB) == state
    # Four uuids at 18 bytes instead of 38, no job id, timestamps as small differences, small-int enums.
    assert len(compact) <= 0.55 * len(legacy), (len(compact), len(legacy))


def test_the_fold_sees_the_same_state_through_the_codec() -> None:
    """A worker folds new events into the decoded state: it must compare equal to the one written."""
    events = [
        Event(
            event_id=str(uuid.UUID(int=i)),
            type=t,
            job_id=JOB,
            occurred_at=10 + i,
            runs=1,
            batch_id=JOB,
            project_id=JOB,
            user_id="u",
        )
        for i, t in enumerate([EventType.CREATED, EventType.STARTED, EventType.CANCELING, EventType.CANCELED])
    ]
    state = fold(JOB, events)
    again = record.decode_state(record.encode_state(state), JOB)
    assert fold(JOB, events, again) == again == state
