"""The fold is a pure function of the set of events: any order, any duplication, same job."""

from __future__ import annotations

import random
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from registry.domain.fold import fold, to_detail, to_job
from registry.domain.model import Event, EventType, Origin, Status

JOB = str(uuid.UUID(int=1))
TYPES = list(EventType)


@st.composite
def event_sets(draw: st.DrawFn) -> list[Event]:
    n = draw(st.integers(1, 8))
    out = []
    for i in range(n):
        etype = draw(st.sampled_from(TYPES))
        at = draw(st.integers(1_600_000_000_000_000, 1_600_000_000_000_050))  # narrow: many ties
        extra: dict[str, object] = {}
        if etype is EventType.CREATED:
            extra = dict(
                batch_id=str(uuid.UUID(int=draw(st.integers(0, 3)))),
                project_id=str(uuid.UUID(int=draw(st.integers(0, 3)))),
                user_id=draw(st.sampled_from(["ann", "bob"])),
                runs=draw(st.integers(1, 5)),
                origin=draw(st.sampled_from(list(Origin))),
                sequence=draw(st.sampled_from([None, "seq-a", "seq-b"])),
            )
        else:
            extra = dict(results_link=draw(st.sampled_from([None, "https://r/a", "https://r/b"])))
        errors = tuple(draw(st.lists(st.sampled_from(["boom", "late"]), max_size=2)))
        out.append(Event(event_id=f"e{i}", type=etype, job_id=JOB, occurred_at=at, errors=errors, **extra))  # type: ignore[arg-type]
    return out


@settings(max_examples=300, deadline=None)  # timing is not what this checks; CI machines are noisy
@given(event_sets(), st.randoms(use_true_random=False))
def test_any_order_and_duplication_give_the_same_state(events: list[Event], rnd: random.Random) -> None:
    reference = fold(JOB, events)
    shuffled = events + [rnd.choice(events) for _ in range(rnd.randint(0, 5))]
    rnd.shuffle(shuffled)
    assert fold(JOB, shuffled) == reference
    # Folding in two halves, as two worker batches would, gives the same state too.
    cut = rnd.randint(0, len(shuffled))
    assert fold(JOB, shuffled[cut:], fold(JOB, shuffled[:cut])) == reference


def ev(eid: str, etype: EventType, at: int, **kw: object) -> Event:
    base: dict[str, object] = {}
    if etype is EventType.CREATED:
        base = dict(batch_id=JOB, project_id=JOB, user_id="u", runs=3)
    base.update(kw)
    return Event(event_id=eid, type=etype, job_id=JOB, occurred_at=at, **base)  # type: ignore[arg-type]


def test_contract_fields() -> None:
    s = fold(
        JOB,
        [
            ev("f2", EventType.FAILED, 50, errors=("x",)),
            ev("s2", EventType.STARTED, 30),
            ev("c", EventType.CREATED, 10),
            ev("f1", EventType.FINISHED, 50),  # ties on time: smaller event_id wins
            ev("s1", EventType.STARTED, 20),
            ev("k", EventType.CANCELING, 70),
        ],
    )
    job = to_job(s, 7)
    assert job is not None
    assert job.status is Status.DONE and job.errors == []
    assert job.start_timestamp and job.start_timestamp.endswith("00.000020+00:00")
    assert job.end_timestamp and job.end_timestamp.endswith("00.000050+00:00")
    assert job.updated_at.endswith("00.000070+00:00")
    assert job.creation_order == 7


def test_canceling_outranks_running_and_pending_until_created() -> None:
    s = fold(JOB, [ev("s", EventType.STARTED, 5), ev("k", EventType.CANCELING, 6)])
    assert s.status is Status.CANCELING
    assert to_job(s, 1) is None  # not listed before `created`
    s = fold(JOB, [ev("c", EventType.CREATED, 1)], s)
    job = to_job(s, 1)
    assert job is not None and job.status is Status.CANCELING


def test_winning_terminal_errors() -> None:
    s = fold(
        JOB,
        [
            ev("c", EventType.CREATED, 1),
            ev("b", EventType.FAILED, 9, errors=("e1", "e2")),
            ev("a", EventType.CANCELED, 10),
        ],
    )
    job = to_job(s, 1)
    assert job is not None and job.status is Status.ERROR and job.errors == ["e1", "e2"]


def test_results_link_and_sequence_come_from_the_winning_events() -> None:
    state = fold(
        JOB,
        [
            ev("c", EventType.CREATED, 10, sequence="pulser-json"),
            ev("f2", EventType.FINISHED, 30, results_link="https://store/late"),
            ev("f1", EventType.FAILED, 20, results_link="https://store/first", errors=("boom",)),
            ev("s", EventType.STARTED, 15, results_link="https://ignored/not-terminal"),
        ],
    )
    detail = to_detail(state, 7)
    assert detail is not None
    assert detail.status is Status.ERROR
    assert detail.results_link == "https://store/first"
    assert detail.sequence == "pulser-json"
    listed = to_job(state, 7)
    assert listed is not None and not hasattr(listed, "results_link")
    assert to_detail(fold(JOB, [ev("s", EventType.STARTED, 15)]), 0) is None


def test_records_written_before_the_new_fields_still_decode() -> None:
    import msgspec

    from registry.domain.model import JobState

    state = fold(JOB, [ev("c", EventType.CREATED, 10), ev("f", EventType.FINISHED, 20, errors=("x",))])
    blob = msgspec.msgpack.encode(state)
    old = msgspec.msgpack.decode(blob, type=list)
    old[1] = old[1][:-1]  # Created without its trailing sequence
    old[4] = old[4][:-1]  # Terminal without its trailing results_link
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(old), type=JobState) == state
