"""The public job rendered straight from a stored state is the one the fold's to_job gives, for any state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.domain.fold import to_detail, to_job, to_linked
from registry.domain.model import RENDERABLE_UNTIL_US, JobState
from registry.store import record
from tests.unit.test_record_codec import states as codec_states

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Any instant render_timestamp can write, from year 1 (before the epoch: negative) to 9999.
TIMES = st.integers((datetime(1, 1, 1, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1), RENDERABLE_UNTIL_US - 1)


def states() -> st.SearchStrategy[JobState]:
    """Any folded state whose timestamps can be rendered (listed or not, every status)."""
    return codec_states(TIMES)


@settings(max_examples=500, deadline=None)
@given(states(), st.integers(1, 2**40))
def test_rendered_from_the_record_as_the_fold_renders_it(state: JobState, handle: int) -> None:
    blob = record.encode_state(state)
    assert record.render_job(blob, state.job_id, handle) == to_job(state, handle)
    assert record.render_linked(blob, state.job_id, handle) == to_linked(state, handle)
    assert record.render_detail(blob, state.job_id, handle) == to_detail(state, handle)
    # The same bytes on the wire, too (a struct's type is not on the wire, its fields' order is).
    assert msgspec.json.encode(record.render_job(blob, state.job_id, handle)) == msgspec.json.encode(
        to_job(state, handle)
    )


@settings(max_examples=200, deadline=None)
@given(states(), st.integers(1, 2**40))
def test_a_legacy_blob_renders_alike(state: JobState, handle: int) -> None:
    legacy = msgspec.msgpack.encode(state)  # written before layout 6: carries the job's id
    assert record.render_job(legacy, "", handle) == to_job(state, handle)
    assert record.render_detail(legacy, "", handle) == to_detail(state, handle)
