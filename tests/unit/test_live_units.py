"""Pure parts of the live view: change-log positions, the retention check, watch classification, exposition."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from registry.domain.model import Created, JobState, Origin, Status, Terminal
from registry.live.changes import Change, LogInfo, ResumeGone, check_retained, format_position, parse_position
from registry.live.watch import Kind, classify
from registry.ops.metrics import BucketCounts, WorkerCollector, WorkerCounters, histogram_family
from registry.query.spec import JobQuery

JOB = "0f8e3f0c-1c6b-4c1a-9b7e-3e1d2c3b4a59"


@pytest.mark.parametrize(
    ("text", "want"),
    [("1700000000000-0", (1700000000000, 0)), ("5-12", (5, 12)), ("42", (42, 0)), (" 7-1 ", (7, 1)), ("0-0", (0, 0))],
)
def test_parse_position(text: str, want: tuple[int, int]) -> None:
    assert parse_position(text) == want
    assert parse_position(format_position(want)) == want


@pytest.mark.parametrize("text", ["", "-", "1-", "-1", "a-1", "1-2-3", "1.5", "99999999999999999999-0", "1-0x"])
def test_parse_position_rejects(text: str) -> None:
    assert parse_position(text) is None


def test_positions_order_as_integers_not_text() -> None:
    assert parse_position("9-0") < parse_position("10-0")  # type: ignore[operator]
    assert parse_position("10-9") < parse_position("10-10")  # type: ignore[operator]


def untrimmed(last: tuple[int, int], first: tuple[int, int], n: int) -> LogInfo:
    return LogInfo(exists=True, last=last, length=n, first=first, entries_added=n)


def test_retained_when_nothing_was_ever_trimmed() -> None:
    check_retained(untrimmed((100, 0), (10, 0), 50), (0, 0))
    check_retained(untrimmed((100, 0), (10, 0), 50), (55, 3))
    check_retained(LogInfo(exists=False, last=(0, 0)), (0, 0))


def test_trimmed_head() -> None:
    info = LogInfo(exists=True, last=(100, 0), length=50, first=(60, 0), entries_added=80)
    check_retained(info, (60, 0))  # the first retained entry itself
    check_retained(info, (75, 2))
    check_retained(info, (100, 0))  # the latest: nothing to send yet
    with pytest.raises(ResumeGone, match="no longer retained"):
        check_retained(info, (59, 9))  # entries between it and (60, 0) may have been trimmed
    with pytest.raises(ResumeGone):
        check_retained(info, (0, 0))


def test_immediate_predecessor_of_the_first_retained_entry_is_fine() -> None:
    info = LogInfo(exists=True, last=(100, 0), length=50, first=(60, 4), entries_added=80)
    check_retained(info, (60, 3))


def test_position_ahead_of_the_log_means_it_was_reset() -> None:
    with pytest.raises(ResumeGone, match="reset"):
        check_retained(untrimmed((100, 0), (10, 0), 50), (100, 1))
    with pytest.raises(ResumeGone, match="reset"):
        check_retained(LogInfo(exists=False, last=(0, 0)), (5, 0))


def test_without_entries_added_the_check_is_conservative() -> None:
    info = LogInfo(exists=True, last=(100, 0), length=50, first=(60, 0), entries_added=None)
    check_retained(info, (61, 0))
    with pytest.raises(ResumeGone):
        check_retained(info, (0, 0))


def state(status: Status, *, runs: int = 5, errors: tuple[str, ...] = ()) -> JobState:
    created = Created(
        event_id="c",
        occurred_at=1,
        batch_id=JOB,
        project_id=JOB,
        user_id="ann",
        runs=runs,
        origin=Origin.CLIENT,
        parent_id=None,
        variables=None,
    )
    terminal = Terminal(event_id="t", occurred_at=3, status=status, errors=errors) if status is Status.DONE else None
    return JobState(
        job_id=JOB,
        created=created,
        start_timestamp=2 if status in (Status.RUNNING, Status.DONE) else None,
        terminal=terminal,
        updated_at=3,
    )


def change(new: JobState, old: JobState | None) -> Change:
    return Change((1, 0), 7, new, old)


def test_classify_unfiltered() -> None:
    q = JobQuery()
    assert classify(change(state(Status.PENDING), None), q, False) is Kind.ADDED
    assert classify(change(state(Status.RUNNING), state(Status.PENDING)), q, False) is Kind.MODIFIED


def test_classify_filtered_enters_stays_leaves() -> None:
    running = JobQuery(statuses=(Status.RUNNING,))
    pending, started, done = state(Status.PENDING), state(Status.RUNNING), state(Status.DONE)
    assert classify(change(pending, None), running, True) is None
    assert classify(change(started, pending), running, True) is Kind.ADDED
    assert classify(change(started, started), running, True) is Kind.MODIFIED
    assert classify(change(done, started), running, True) is Kind.REMOVED
    assert classify(change(done, done), running, True) is None


def test_change_renders_the_job_once() -> None:
    c = change(state(Status.RUNNING), None)
    assert c.job.status is Status.RUNNING and c.job.creation_order == 7
    assert c.job_json is c.job_json
    assert c.id == "1-0"


def test_exposition_parses_as_prometheus_text() -> None:
    hist = BucketCounts((0.1, 1.0), counts=[1, 2, 1], sum=4.05)  # 0.05, 0.5, 0.5, 3.0 as the workers store them

    class Part:
        def collect(self) -> Any:
            yield histogram_family("t_seconds", "A test histogram.", hist, {"endpoint": '/a"b\\c'})
            yield from WorkerCollector(counters, ["created", "started"]).collect()

    counters = WorkerCounters({b"consumed:created": b"3", b"dead_lettered:invalid": b"2", b"apply:b0": b"1"})
    text = generate_latest(Part()).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in families["t_seconds"].samples}
    label = ("endpoint", '/a"b\\c')
    assert samples[("t_seconds_bucket", (label, ("le", "0.1")))] == 1
    assert samples[("t_seconds_bucket", (label, ("le", "1.0")))] == 3
    assert samples[("t_seconds_bucket", (label, ("le", "+Inf")))] == 4
    assert samples[("t_seconds_count", (label,))] == 4
    assert samples[("t_seconds_sum", (label,))] == pytest.approx(4.05)
    consumed = {s.labels["type"]: s.value for s in families["jobreg_events_consumed"].samples}
    assert consumed == {"created": 3, "started": 0}
    dead = {s.labels["reason"]: s.value for s in families["jobreg_events_dead_lettered"].samples}
    assert dead == {"invalid": 2, "undeliverable": 0}
