"""Authentication and project isolation through the HTTP app, against a real private Redis and the reference."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import msgspec
import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from litestar import Litestar, get
from litestar.testing import TestClient

from api.app import create_app
from api.auth import CurrentPrincipal
from registry.auth.tokens import mint
from registry.settings import Settings, load_settings
from tests.integration.test_api import load
from tests.reference import Reference, make_traffic, random_query, render_job
from tests.topology import Store, both_topologies, commands_processed, sync_client

JOBS = "/api/v2/jobs"
SECRET = "isolation-test-secret-" + "z" * 32
Params = list[tuple[str, str]]

pytestmark = both_topologies


@dataclass
class Env:
    settings: Settings
    ref: Reference
    orders: dict[str, int]
    projects: list[str]
    client: TestClient[Litestar]
    redis: redis.Redis

    def token(self, user: str, projects: list[str], *, admin: bool = False) -> str:
        return mint(self.settings, user, projects, admin=admin)

    def get(self, path: str, token: str | None, params: Params | None = None) -> Any:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return self.client.get(path, params=params or [], headers=headers)

    def visible(self, params: Params, allowed: set[str] | None) -> tuple[int, list[str]]:
        """The reference's (total, page) restricted to ``allowed`` projects (None: everything)."""
        unpaged = [(k, v) for k, v in params if k not in ("offset", "limit")]
        _, ordered = self.ref.query([*unpaged, ("limit", str(10**9))], self.orders)
        jobs = self.ref.jobs()
        seen = [i for i in ordered if allowed is None or jobs[i]["project_id"] in allowed]
        last = dict(params)
        offset, limit = int(last.get("offset", "0")), int(last.get("limit", "100"))
        return len(seen), seen[offset : offset + limit]


@pytest.fixture(scope="module")
def env(store: Store) -> Iterator[Env]:
    prefix = f"t{os.urandom(4).hex()}"
    traffic = make_traffic(random.Random(31), 500, n_projects=8, n_batches=16)
    ref = Reference()
    for entry in traffic:
        ref.add(entry)
    orders = asyncio.run(load(store.url, prefix, traffic, list(ref.jobs())))
    settings = load_settings({}, redis_url=store.url, prefix=prefix, auth_secret=SECRET)
    projects = sorted({j["project_id"] for j in ref.jobs().values()})
    assert len(projects) >= 6
    with TestClient(create_app(settings)) as client:
        yield Env(settings, ref, orders, projects, client, sync_client(store.url))


def check_page(env: Env, params: Params, resp: Any, allowed: set[str] | None) -> None:
    assert resp.status_code == 200, (params, resp.text)
    body = resp.json()
    if allowed is not None:
        assert all(j["project_id"] in allowed for j in body["data"]), "a job of another project leaked"
    want_total, want_ids = env.visible(params, allowed)
    offset = int(dict(params).get("offset", "0"))
    assert [j["id"] for j in body["data"]] == want_ids, params
    pagination = dict(body["pagination"])
    token = pagination.pop("next_page_token")
    assert pagination == {"total": want_total, "start": offset, "end": offset + len(want_ids)}
    assert (token is not None) == (bool(want_ids) and offset + len(want_ids) < want_total), params
    assert body["data"] == [render_job(env.ref.jobs()[i], env.orders[i]) for i in want_ids]
    want_range = f"{offset + 1}-{offset + len(want_ids)}/{want_total}" if want_ids else f"0-0/{want_total}"
    assert resp.headers["content-range"] == want_range


# -- isolation, property-based -------------------------------------------------------------


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_users_see_only_their_projects(env: Env, data: st.DataObject) -> None:
    mine = data.draw(st.lists(st.sampled_from(env.projects), unique=True, max_size=len(env.projects)), label="mine")
    # Projects no job has (a drawn uuid may be one of the data's projects: Hypothesis found such a draw).
    strangers = data.draw(
        st.lists(st.uuids(version=4).map(str).filter(lambda p: p not in env.projects), max_size=3),
        label="unknown projects",
    )
    admin = data.draw(st.integers(0, 9), label="admin?") == 0
    user = data.draw(st.sampled_from(["alice", "bob", "carol@example.com", "user-ü", "mallory"]), label="user")
    params = random_query(random.Random(data.draw(st.integers(0, 2**32), label="query seed")), env.ref)
    if data.draw(st.booleans(), label="explicit project filter"):
        pool = env.projects + strangers + [str(uuid.uuid4())]
        chosen = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4), label="project_id")
        params = [*params, *[("project_id", p.upper() if len(p) % 2 else p) for p in chosen]]
    token = env.token(user, mine + strangers, admin=admin)
    allowed = None if admin else set(mine)
    check_page(env, params, env.get(JOBS, token, params), allowed)

    job_id = data.draw(st.sampled_from(sorted(env.ref.jobs())), label="job")
    resp = env.get(f"{JOBS}/{job_id}", token)
    if admin or env.ref.jobs()[job_id]["project_id"] in mine:
        assert resp.status_code == 200 and resp.json()["data"]["id"] == job_id
    else:
        assert_missing(env, job_id, resp, token)


def assert_missing(env: Env, job_id: str, resp: Any, token: str) -> None:
    """The 404 for another project's job is byte for byte the 404 of a job that does not exist."""
    ghost = str(uuid.UUID(int=int(uuid.UUID(job_id)) ^ 1))
    assert ghost not in env.ref.jobs()
    missing = env.get(f"{JOBS}/{ghost}", token)
    assert resp.status_code == missing.status_code == 404
    assert resp.content == missing.content.replace(ghost.encode(), job_id.encode())
    assert sorted(resp.headers.items()) == sorted(missing.headers.items())


def test_admin_and_user_with_every_project_see_everything(env: Env) -> None:
    params: Params = [("order_by", "runs"), ("limit", "50"), ("offset", "20")]
    for token in (env.token("root", [], admin=True), env.token("alice", env.projects)):
        check_page(env, params, env.get(JOBS, token, params), None)


def test_outside_project_filter_is_an_empty_page_without_redis(env: Env) -> None:
    mine, theirs = env.projects[0], env.projects[1]
    token = env.token("alice", [mine])

    def commands() -> int:
        return commands_processed(env.redis)

    baseline = -commands() + commands()
    before = commands()
    resp = env.get(JOBS, token, [("project_id", theirs), ("status", "DONE"), ("order_by", "runs")])
    spent = commands() - before - baseline
    assert resp.status_code == 200
    assert resp.json()["data"] == [] and resp.json()["pagination"] == {
        "total": 0,
        "start": 0,
        "end": 0,
        "next_page_token": None,
    }
    assert resp.headers["content-range"] == "0-0/0"
    assert spent == 0, f"{spent} Redis commands for a query known to be empty"
    # Same answer for a project that exists nowhere: nothing tells the two apart.
    nowhere = env.get(JOBS, token, [("project_id", str(uuid.uuid4())), ("status", "DONE"), ("order_by", "runs")])
    assert nowhere.content == resp.content
    # A user with no projects at all.
    assert env.get(JOBS, env.token("eve", [str(uuid.uuid4())])).json()["pagination"]["total"] == 0


def test_many_projects_are_correct_and_quick(env: Env) -> None:
    """A user in hundreds of projects (a few with jobs) through every planner strategy."""
    extra = [str(uuid.uuid4()) for _ in range(300)]  # projects without jobs
    assert not set(extra) & set(env.projects)
    mine = set(env.projects[:5])
    token = env.token("alice", [*extra[:150], *sorted(mine), *extra[150:]])
    rng = random.Random(99)
    worst = 0.0
    for threshold in (0, 3000):  # bitmap strategies, then small-result collection
        env.client.app.state.services.executor.settings = msgspec.structs.replace(
            env.settings, collect_threshold=threshold, walk_chunk=50
        )
        try:
            for _ in range(25):
                params = random_query(rng, env.ref)
                began = time.perf_counter()
                resp = env.get(JOBS, token, params)
                worst = max(worst, time.perf_counter() - began)
                check_page(env, params, resp, mine)
        finally:
            env.client.app.state.services.executor.settings = env.settings
    assert worst < 2.0, f"slowest request {worst * 1000:.0f} ms"


# -- 401s ----------------------------------------------------------------------------------


def expired(env: Env) -> str:
    return mint(env.settings, "alice", [env.projects[0]], now=int(time.time()) - 7200, ttl_s=60)


def unsigned(env: Env) -> str:
    return jwt.encode({"sub": "alice", "projects": env.projects, "role": "admin"}, None, algorithm="none")


def minted_with(env: Env, **changes: Any) -> str:
    return "Bearer " + mint(msgspec.structs.replace(env.settings, **changes), "a", [env.projects[0]])


REJECTIONS: list[tuple[str, Any, str]] = [
    ("missing header", lambda env: None, "missing bearer token"),
    ("empty header", lambda env: "", "missing bearer token"),
    ("basic scheme", lambda env: "Basic YWxpY2U6cGFzc3dvcmQ=", "authorization scheme must be Bearer"),
    ("bearer without token", lambda env: "Bearer", "malformed token"),
    ("two tokens", lambda env: "Bearer abc def", "malformed token"),
    ("garbage token", lambda env: "Bearer not-a-jwt", "malformed token"),
    ("expired", lambda env: f"Bearer {expired(env)}", "token expired"),
    ("alg none", lambda env: f"Bearer {unsigned(env)}", "token algorithm not accepted"),
    ("wrong secret", lambda env: minted_with(env, auth_secret="x" * 40), "token signature invalid"),
    ("wrong audience", lambda env: minted_with(env, auth_audience="other"), "token audience not accepted"),
    ("wrong issuer", lambda env: minted_with(env, auth_issuer="other"), "token issuer not accepted"),
]


@pytest.mark.parametrize(("case", "header", "reason"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
@pytest.mark.parametrize("path", [JOBS, f"{JOBS}/00000000-0000-4000-8000-000000000000", f"{JOBS}?status=NOPE"])
def test_rejections_are_401_jsend_with_a_challenge(env: Env, case: str, header: Any, reason: str, path: str) -> None:
    value = header(env)
    headers = {} if value is None else {"Authorization": value}
    resp = env.client.get(path, headers=headers)
    assert resp.status_code == 401, resp.text
    assert resp.json() == {"status": "fail", "message": reason, "code": "401", "data": None}
    challenge = resp.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="jobreg"')
    presented = value is not None and value.lower().startswith("bearer")
    assert ('error="invalid_token"' in challenge) == presented
    if value:
        token = value.partition(" ")[2]
        if token:
            assert token not in resp.text and token not in challenge
    assert "Traceback" not in resp.text


def test_public_routes_need_no_token(env: Env) -> None:
    assert env.get("/healthz", None).status_code == 200
    schema = env.get("/schema/openapi.json", None)
    assert schema.status_code == 200
    doc = schema.json()
    assert doc["components"]["securitySchemes"]["BearerToken"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A JWT; see README, Authentication.",
    }
    assert {"BearerToken": []} in doc["security"]
    assert "401" in doc["paths"]["/api/v2/jobs"]["get"]["responses"]


def test_token_never_reaches_the_logs(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    good = env.token("alice", [env.projects[0]])
    bad = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    with caplog.at_level(logging.DEBUG):
        for value in (good, bad, expired(env), unsigned(env)):
            env.get(JOBS, value, [("status", "DONE")])
            env.get(f"{JOBS}/{next(iter(env.ref.jobs()))}", value)
    assert "rejected GET /api/v2/jobs: token signature invalid" in caplog.text
    for value in (good, bad):
        for part in value.split("."):
            assert part not in caplog.text


async def test_auth_off_app_is_open(settings: Settings) -> None:
    """Without key material (what --no-auth runs) every caller is an operator."""
    from litestar.testing import AsyncTestClient

    async with AsyncTestClient(create_app(settings)) as c:
        resp = await c.get(JOBS)
        assert resp.status_code == 200 and "www-authenticate" not in resp.headers


def test_new_routes_are_protected_by_default(env: Env) -> None:
    """What the watch/stats/dashboard routes get: the middleware covers them, `principal` scopes them."""

    @get("/probe", sync_to_thread=False)
    def probe(principal: CurrentPrincipal) -> dict[str, Any]:
        return {"user": principal.user_id, "projects": sorted(principal.projects)}

    @get("/open-probe", opt={"exclude_from_auth": True}, sync_to_thread=False)
    def open_probe(principal: CurrentPrincipal) -> dict[str, Any]:
        return {"user": principal.user_id}

    @get("/open-page", opt={"exclude_from_auth": True}, sync_to_thread=False)
    def open_page() -> str:
        return "static shell"

    with TestClient(create_app(env.settings)) as client:
        for handler in (probe, open_probe, open_page):
            client.app.register(handler)
        assert client.get("/probe").status_code == 401
        token = env.token("alice", [env.projects[0]])
        ok = client.get("/probe", headers={"Authorization": f"Bearer {token}"})
        assert ok.json() == {"user": "alice", "projects": [env.projects[0]]}
        # Opting a route out of authentication never turns its caller into the all-seeing principal.
        assert client.get("/open-probe").status_code == 401
        assert client.get("/open-page").text == "static shell"


# -- no side channel: a foreign value answers exactly like a nonexistent one ----------------------


def _visible_bytes(resp: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Everything a response says but its date and change-log position."""
    headers = sorted((k, v) for k, v in resp.headers.items() if k not in ("date", "x-resource-version"))
    return resp.status_code, headers, resp.content


def test_foreign_ids_prefixes_batches_and_users_look_nonexistent(env: Env) -> None:
    """Finding 1 of issue 12: the plan header counted other projects' jobs before scoping."""
    jobs = env.ref.jobs()
    mine = env.projects[0]
    token = env.token("alice", [mine])
    foreign_id = next(i for i, j in sorted(jobs.items()) if j["project_id"] != mine)
    ghost_id = str(uuid.UUID(int=int(uuid.UUID(foreign_id)) ^ (1 << 80)))
    assert ghost_id not in jobs
    # A prefix naming only foreign jobs, and one naming no job at all, of the same length.
    prefix = next(
        i[:5] for i in sorted(jobs) if not any(k.startswith(i[:5]) and jobs[k]["project_id"] == mine for k in jobs)
    )
    nowhere = next(p for p in (f"{n:05x}" for n in range(1 << 20)) if not any(k.startswith(p) for k in jobs))
    foreign_batch = next(j["batch_id"] for j in jobs.values() if j["project_id"] != mine)
    assert not any(j["batch_id"] == foreign_batch and j["project_id"] == mine for j in jobs.values())
    probes = [
        ("id", foreign_id, ghost_id),
        ("id__starts_with", prefix, nowhere),
        ("batch_id", foreign_batch, str(uuid.uuid4())),
    ]
    for name, foreign, missing in probes:
        for extra in ([], [("status", "DONE")], [("order_by", "runs")]):
            got = env.get(JOBS, token, [(name, foreign), *extra])
            assert got.json()["pagination"]["total"] == 0
            assert _visible_bytes(got) == _visible_bytes(env.get(JOBS, token, [(name, missing), *extra])), name
            stats = env.get(f"{JOBS}/stats", token, [(name, foreign), *extra]).json()["data"]
            assert stats["total"] == 0 and set(stats["by_status"].values()) == {0}
    # A user of a project without jobs: every user id with jobs elsewhere looks like an unknown one.
    lonely = env.token("eve", [str(uuid.uuid4())])
    users = sorted({j["user_id"] for j in jobs.values()})
    for user in users:
        assert _visible_bytes(env.get(JOBS, lonely, [("user_id", user)])) == _visible_bytes(
            env.get(JOBS, lonely, [("user_id", "nobody-at-all")])
        )
    # Operators keep the plan, which is where slow queries explain themselves.
    admin = env.get(JOBS, env.token("root", [], admin=True), [("id", foreign_id)])
    assert "x-jobreg-plan" in admin.headers
