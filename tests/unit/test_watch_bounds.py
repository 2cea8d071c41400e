"""The bounds on watch streams without Redis: a subscription's bytes, and the per-caller and per-process slots."""

from __future__ import annotations

from typing import Any, cast

import pytest

from api.sessions import Streams
from registry.domain.model import JobState
from registry.errors import TooManyWatches
from registry.live.changes import Change
from registry.live.feed import Overflow, Subscription


def change(seq: int, size: int) -> Change:
    return Change((1, seq), seq, STATE, None, size)  # the state is never read here


def test_a_subscription_overflows_on_bytes_not_only_on_count() -> None:
    sub = Subscription((0, 0), maxsize=1000, max_bytes=100_000)
    sub.push([change(1, 60_000)])
    assert [c.position for c in sub.take()] == [(1, 1)]  # a reader that keeps up never overflows
    sub.push([change(2, 60_000)])
    sub.push([change(3, 60_000)])  # 120 KB waiting: dropped, and what it held is let go
    with pytest.raises(Overflow):
        sub.take()
    alone = Subscription((0, 0), maxsize=1000, max_bytes=100_000)
    alone.push([change(1, 500_000)])  # one batch alone past the bound is still delivered
    assert len(alone.take()) == 1


STATE = cast(JobState, cast(Any, None))


class Stream:
    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


def test_slots_per_caller_and_per_process_and_drain() -> None:
    streams = Streams(per_caller=2, total=3)
    a1, a2 = streams.reserve("alice"), streams.reserve("alice")
    with pytest.raises(TooManyWatches) as caller:
        streams.reserve("alice")
    assert caller.value.per_caller
    b1 = streams.reserve("bob")
    with pytest.raises(TooManyWatches) as full:
        streams.reserve("carol")
    assert not full.value.per_caller
    streams.release(a1)
    streams.release(a1)  # idempotent: a slot is never freed twice
    assert streams.open == 2
    c1 = streams.reserve("carol")
    attached = [Stream(), Stream(), Stream()]
    for slot, stream in zip((a2, b1, c1), attached, strict=True):
        streams.attach(slot, stream)
    assert streams.drain() == 3 and all(s.stopped for s in attached)
    with pytest.raises(TooManyWatches):
        streams.reserve("dave")  # shutting down: no new streams
    for slot in (a2, b1, c1):
        streams.release(slot)
    assert streams.open == 0 and streams.refused == 3
