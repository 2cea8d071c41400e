"""page_token over HTTP: token chains equal offset paging, start/end/Content-Range, and refused tokens.

A token is sealed to its filters, order and caller: malformed, altered, made-up tokens and tokens
presented with other filters, another order or by another user are a 422 naming ``page_token``,
all with the same message, so a refusal tells nothing about anyone's jobs.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.app import create_app
from registry.auth.tokens import mint
from registry.settings import Settings, load_settings
from tests.integration.test_api import load
from tests.reference import ORDER_BYS, Reference, make_traffic
from tests.topology import Store, both_topologies

JOBS = "/api/v2/jobs"
SECRET = "page-token-test-secret-" + "q" * 32
Params = list[tuple[str, str]]

pytestmark = both_topologies


@dataclass
class Env:
    settings: Settings
    ref: Reference
    orders: dict[str, int]
    projects: list[str]
    client: TestClient[Litestar]

    def get(self, params: Params, user: str = "root", projects: list[str] | None = None, admin: bool = True) -> Any:
        token = mint(self.settings, user, projects or [], admin=admin)
        return self.client.get(JOBS, params=params, headers={"Authorization": f"Bearer {token}"})

    def expected(self, params: Params, allowed: set[str] | None = None) -> list[str]:
        unpaged = [(k, v) for k, v in params if k not in ("offset", "limit")]
        _, ordered = self.ref.query([*unpaged, ("limit", str(10**9))], self.orders)
        jobs = self.ref.jobs()
        return [i for i in ordered if allowed is None or jobs[i]["project_id"] in allowed]


@pytest.fixture(scope="module")
def env(store: Store) -> Iterator[Env]:
    prefix = f"t{os.urandom(4).hex()}"
    traffic = make_traffic(random.Random(14), 300, n_projects=5, n_batches=10)
    ref = Reference()
    for entry in traffic:
        ref.add(entry)
    orders = asyncio.run(load(store.url, prefix, traffic, list(ref.jobs())))
    settings = load_settings({}, redis_url=store.url, prefix=prefix, auth_secret=SECRET)
    projects = sorted({j["project_id"] for j in ref.jobs().values()})
    with TestClient(create_app(settings)) as client:
        yield Env(settings, ref, orders, projects, client)


def follow(env: Env, params: Params, **who: Any) -> list[str]:
    """Every page of the chain from ``params``; checks each page's pagination and Content-Range."""
    got: list[str] = []
    token = None
    offset = int(dict(params).get("offset", "0"))
    while True:
        resp = env.get([*params, *([("page_token", token)] if token else [])], **who)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        p, n = body["pagination"], len(body["data"])
        assert p["start"] == offset + len(got) and p["end"] == p["start"] + n
        assert resp.headers["content-range"] == (
            f"{p['start'] + 1}-{p['end']}/{p['total']}" if n else f"0-0/{p['total']}"
        )
        got += [j["id"] for j in body["data"]]
        token = p["next_page_token"]
        if token is None:
            assert p["end"] == p["total"] or n == 0
            return got
        assert n == int(dict(params).get("limit", "100"))
        params = [(k, v) for k, v in params if k != "offset"]


@pytest.mark.parametrize("order", ORDER_BYS)
@pytest.mark.parametrize("direction", ["ASC", "DESC"])
def test_a_token_chain_lists_every_job_once_in_order(env: Env, order: str, direction: str) -> None:
    params: Params = [("order_by", order), ("order_by_direction", direction), ("limit", "23")]
    assert follow(env, params) == env.expected(params)
    filtered: Params = [*params, ("status", "DONE"), ("status", "ERROR"), ("offset", "5")]
    assert follow(env, filtered) == env.expected(filtered)[5:]


def test_a_user_chain_stays_within_their_projects(env: Env) -> None:
    mine = env.projects[:2]
    params: Params = [("order_by", "runs"), ("limit", "17")]
    got = follow(env, params, user="alice", projects=mine, admin=False)
    assert got == env.expected(params, set(mine))


def first_token(env: Env, params: Params, **who: Any) -> str:
    token: str = env.get(params, **who).json()["pagination"]["next_page_token"]
    assert token
    return token


def assert_refused(resp: Any) -> None:
    assert resp.status_code == 422, resp.text
    [detail] = resp.json()["detail"]
    assert detail["loc"] == ["query", "page_token"]


def test_tokens_are_refused_when_malformed_forged_or_misused(env: Env) -> None:
    params: Params = [("order_by", "created_at"), ("limit", "10"), ("status", "DONE")]
    token = first_token(env, params)
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[3] ^= 1  # one bit of the seek changed
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    messages = set()
    for bad_params in (
        [*params, ("page_token", "!!!not base64")],
        [*params, ("page_token", "AAAA")],
        [*params, ("page_token", forged)],
        [*params, ("page_token", "x" * 513)],
        [("order_by", "runs"), ("limit", "10"), ("status", "DONE"), ("page_token", token)],  # another order
        [("order_by", "created_at"), ("limit", "10"), ("status", "ERROR"), ("page_token", token)],  # other filters
        [*params, ("order_by_direction", "ASC"), ("page_token", token)],  # other direction
        [*params, ("offset", "10"), ("page_token", token)],  # both ways of paging
    ):
        resp = env.get(bad_params)
        assert_refused(resp)
        messages.add(resp.json()["detail"][0]["msg"])
    # Another caller (even one who sees everything) cannot use it; the limit may change freely.
    assert_refused(env.get([*params, ("page_token", token)], user="other-admin"))
    assert (
        env.get([("order_by", "created_at"), ("limit", "3"), ("status", "DONE"), ("page_token", token)]).status_code
        == 200
    )
    # Forged and misused tokens get one message: a refusal does not tell which.
    assert "page_token is invalid, or was issued for other filters, order or caller" in messages


def test_a_token_of_one_tenant_is_refused_for_another(env: Env) -> None:
    params: Params = [("order_by", "created_at"), ("limit", "5")]
    alice = {"user": "alice", "projects": env.projects[:1], "admin": False}
    token = first_token(env, params, **alice)
    # Bob sees other projects: alice's token is refused for him, exactly as a forged one is.
    bob = env.get([*params, ("page_token", token)], user="bob", projects=env.projects[1:2], admin=False)
    assert_refused(bob)
    # Alice herself, once her projects change, gets a fresh start rather than a page of the old scope.
    widened = env.get([*params, ("page_token", token)], user="alice", projects=env.projects[:2], admin=False)
    assert_refused(widened)
    assert bob.json() == widened.json()
