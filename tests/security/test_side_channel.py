"""Issue 12, finding 1: a user cannot tell another project's ids, prefixes, batches or users from nonexistent ones.

Against real processes: a user of project A probes project B's job, batch and user, and walks id
prefixes, as the report did (with a bounded walk). Every header and body byte but the date and
the change-log position must be the same as for values that exist nowhere.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from registry.wire.publisher import Publisher
from tests.e2e.stack import Stack
from tests.security.attack import JOBS, bearer, new_uuid, secured_stack, token
from tests.topology import Store

A, B = new_uuid(), new_uuid()
IGNORED = {"date", "x-resource-version"}


@pytest.fixture(scope="module")
def stack(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with secured_stack(store, tmp_path_factory.mktemp("side")) as s:
        yield s


def seen(resp: httpx.Response) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
    return resp.status_code, tuple(sorted((k, v) for k, v in resp.headers.items() if k not in IGNORED)), resp.content


def test_foreign_values_are_indistinguishable_from_missing_ones(stack: Stack) -> None:
    pub = Publisher(stack.redis(), stack.keys)
    mine = new_uuid()
    pub.created(mine, batch_id=new_uuid(), project_id=A, user_id="alice", runs=1)
    batch = new_uuid()
    theirs = [new_uuid() for _ in range(5)]
    for job in theirs:
        pub.created(job, batch_id=batch, project_id=B, user_id="bob", runs=3)
    stack.wait_drained()
    user = bearer(token("alice", [A]))
    http = httpx.Client(base_url=stack.url, headers=user)
    assert http.get(JOBS).json()["pagination"]["total"] == 1  # the user's own job

    def same(name: str, foreign: str, missing: str) -> None:
        for extra in ([], [("status", "PENDING")], [("order_by", "runs")]):
            got = http.get(JOBS, params=[(name, foreign), *extra])
            assert got.status_code == 200 and got.json()["pagination"]["total"] == 0
            assert seen(got) == seen(http.get(JOBS, params=[(name, missing), *extra])), (name, got.headers)
            stats = http.get(f"{JOBS}/stats", params=[(name, foreign), *extra])
            assert stats.json()["data"]["total"] == 0

    same("id", theirs[0], new_uuid())
    same("batch_id", batch, new_uuid())
    same("user_id", "bob", "nobody")
    same("id__starts_with", theirs[0][:8], "ffffffff" if not theirs[0].startswith("f") else "eeeeeeee")
    # The prefix walk of the report, first level (bounded): every answer alike but for the
    # user's own job's prefix, so it learns nothing about B's ids.
    answers = {}
    for digit in "0123456789abcdef":
        answers[digit] = seen(http.get(JOBS, params=[("id__starts_with", digit)]))
    others = {v for d, v in answers.items() if d != mine[0]}
    assert len(others) == 1, "the answer for some prefix depends on another project's jobs"
    # One job view, and the SDK's reads: another project's job is the same 404 as a missing one.
    for path in (f"{JOBS}/{{}}", "/api/v1/jobs/{}/status", "/api/v1/jobs/{}/results_link"):
        foreign = http.get(path.format(theirs[0]))
        ghost_id = new_uuid()
        ghost = http.get(path.format(ghost_id))
        assert foreign.status_code == ghost.status_code == 404
        assert foreign.content.replace(theirs[0].encode(), ghost_id.encode()) == ghost.content
    # An operator still gets the plan, where slow queries explain themselves.
    admin = httpx.get(stack.url + JOBS, params={"id": theirs[0]}, headers=bearer(token("root", [], admin=True)))
    assert admin.json()["pagination"]["total"] == 1 and "x-jobreg-plan" in admin.headers
