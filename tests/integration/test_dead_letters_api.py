"""The admin dead-letter routes in-process against a real Redis: scoping, paging, reasons, replay, bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest
import redis.asyncio as aioredis
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.deadletters import MAX_VALUE_CHARS
from registry.auth.tokens import mint
from registry.keys import Keys
from registry.settings import Settings
from registry.wire.deadletter import dead_letter
from tests.topology import both_topologies

Client = AsyncTestClient[Litestar]
SECRET = "dead-letter-api-test-secret-" + "d" * 32
DEAD = "/api/v2/dead-letters"
REPLAY = "/api/v2/dead-letters/replay"

pytestmark = both_topologies


@pytest.fixture
def auth_settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, auth_secret=SECRET)


@pytest.fixture
async def client(auth_settings: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(create_app(auth_settings)) as c:
        yield c


def bearer(settings: Settings, *, admin: bool) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(settings, 'op' if admin else 'ann', [], admin=admin)}"}


async def seed(redis: aioredis.Redis, keys: Keys, n: int) -> list[dict[str, str]]:
    """n entries dead-lettered by the real writer, each a broken `created` with its own reason."""
    originals = []
    for i in range(n):
        fields = {"event_id": f"e{i}", "type": "created", "job_id": "not-a-uuid", "runs": str(i)}
        await dead_letter(redis, keys, f"1700000000000-{i}", fields, f"job_id: bad UUID #{i}")
        originals.append(fields)
    return originals


async def test_dead_letters_are_for_operators_only(client: Client, auth_settings: Settings) -> None:
    for method, path, body in (("GET", DEAD, None), ("POST", REPLAY, {"all": True})):
        r = await client.request(method, path, json=body)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = await client.request(method, path, json=body, headers=bearer(auth_settings, admin=False))
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "403"
        r = await client.request(method, path, json=body, headers=bearer(auth_settings, admin=True))
        assert r.status_code == 200, r.text


async def test_list_pages_through_every_entry_with_its_reason(
    client: Client, auth_settings: Settings, aredis: aioredis.Redis, keys: Keys
) -> None:
    originals = await seed(aredis, keys, 7)
    admin = bearer(auth_settings, admin=True)
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": "3", **({"after": after} if after else {})}
        body = (await client.get(DEAD, params=params, headers=admin)).json()
        assert body["status"] == "success" and body["pagination"]["total"] == 7
        seen += body["data"]
        pages += 1
        after = body["pagination"]["next"]
        if after is None:
            break
    assert pages == 3 and len(seen) == 7
    assert [d["fields"] for d in seen] == originals  # the original fields, without error/source_id
    assert [d["error"] for d in seen] == [f"job_id: bad UUID #{i}" for i in range(7)]
    assert [d["source_id"] for d in seen] == [f"1700000000000-{i}" for i in range(7)]
    assert len({d["id"] for d in seen}) == 7 and not any(d["truncated"] for d in seen)


async def test_a_huge_value_is_cut_in_the_list_and_replayed_whole(
    client: Client, auth_settings: Settings, aredis: aioredis.Redis, keys: Keys
) -> None:
    big = "v" * (MAX_VALUE_CHARS * 3)
    await dead_letter(aredis, keys, "1-0", {"event_id": "e", "variables": big}, "variables: too long")
    admin = bearer(auth_settings, admin=True)
    [entry] = (await client.get(DEAD, headers=admin)).json()["data"]
    assert entry["truncated"] is True
    assert entry["fields"]["variables"] == "v" * MAX_VALUE_CHARS + "…"
    assert (await client.post(REPLAY, json={"ids": [entry["id"]]}, headers=admin)).json()["data"]["replayed"] == 1
    [(_, fields)] = await aredis.xrange(keys.events)
    assert fields[b"variables"] == big.encode()


async def test_replay_one_then_all(client: Client, auth_settings: Settings, aredis: aioredis.Redis, keys: Keys) -> None:
    originals = await seed(aredis, keys, 4)
    admin = bearer(auth_settings, admin=True)
    entries = (await client.get(DEAD, headers=admin)).json()["data"]
    r = await client.post(REPLAY, json={"ids": [entries[2]["id"], "1-1"]}, headers=admin)  # an unknown id is skipped
    assert r.status_code == 200 and r.json()["data"] == {"replayed": 1}
    left = (await client.get(DEAD, headers=admin)).json()
    assert left["pagination"]["total"] == 3
    assert [d["id"] for d in left["data"]] == [entries[i]["id"] for i in (0, 1, 3)]
    assert (await client.post(REPLAY, json={"all": True}, headers=admin)).json()["data"] == {"replayed": 3}
    assert (await client.get(DEAD, headers=admin)).json()["pagination"] == {"total": 0, "next": None}
    published = [{k.decode(): v.decode() for k, v in f.items()} for _, f in await aredis.xrange(keys.events)]
    assert published == [originals[i] for i in (2, 0, 1, 3)]


@pytest.mark.parametrize(
    ("method", "path", "params", "body", "loc"),
    [
        ("GET", DEAD, {"after": "yesterday"}, None, ["query", "after"]),
        ("GET", DEAD, {"limit": "0"}, None, ["query", "limit"]),
        ("GET", DEAD, {"limit": "101"}, None, ["query", "limit"]),
        ("POST", REPLAY, {}, {}, ["body", "ids"]),
        ("POST", REPLAY, {}, {"all": True, "ids": ["1-0"]}, ["body", "ids"]),
        ("POST", REPLAY, {}, {"ids": []}, ["body", "ids"]),
        ("POST", REPLAY, {}, {"ids": ["1-0", "0-0 OR 1"]}, ["body", "ids"]),
    ],
)
async def test_bad_input_is_422_naming_it(
    client: Client,
    auth_settings: Settings,
    method: str,
    path: str,
    params: dict[str, str],
    body: object,
    loc: list[str],
) -> None:
    r = await client.request(method, path, params=params, json=body, headers=bearer(auth_settings, admin=True))
    assert r.status_code == 422, r.text
    assert [d["loc"] for d in r.json()["detail"]] == [loc]


async def test_a_body_that_is_not_json_is_a_400_in_jsend(client: Client, auth_settings: Settings) -> None:
    headers = {**bearer(auth_settings, admin=True), "Content-Type": "application/json"}
    r = await client.post(REPLAY, content=b"\x00", headers=headers)
    assert r.status_code == 400
    assert (r.json()["status"], r.json()["code"]) == ("fail", "400")
