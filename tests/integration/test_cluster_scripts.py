"""The `#!lua` scripts on a real Redis, on fakeredis and on a real 3-master Redis Cluster.

The projection and the query path run under one hash tag on a cluster and answer exactly as on a
standalone server; a script that reaches into another slot is refused, which is what the shebang
buys (without it Redis lets a script touch any key of its node).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.crc import key_slot

from registry import lua
from registry.keys import Keys
from registry.ops import embedded
from registry.query import cost, scripts
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.settings import Settings, load_settings
from registry.store import indexes, record, sortidx
from registry.store.projection import Projection, apply_script
from registry.wire.deadletter import DeadLetterer, list_dead, replay, sweep_markers
from tests.cluster import LocalCluster, three_masters
from tests.conftest import RedisServer
from tests.harness import decode_all
from tests.query_params import parse_params
from tests.reference import Params, Reference, make_traffic, random_query

STORE_SCRIPTS = [("registry.store", n) for n in ("apply", "layout", "migrate_idhex", "migrate_zone", "migrate_finish")]
OTHER_SCRIPTS = [
    ("registry.wire", "dead_letter_copy"),
    ("registry.wire", "dead_letter_ack"),
    ("registry.wire", "replay_publish"),
    ("workers", "trim_stream"),
    ("workers", "prune_consumers"),
]
Answer = tuple[int, list[str]]


def all_script_texts() -> dict[str, str]:
    texts = {f"{p}:{n}": lua.source(p, n) for p, n in STORE_SCRIPTS + OTHER_SCRIPTS}
    texts["registry.store:apply"] = apply_script()
    texts["registry.store:sortidx"] = sortidx.script_text()
    texts.update({f"registry.query:{n}": scripts.script_text(n) for n in scripts._NAMES})
    return texts


async def project_and_ask(
    client: aioredis.Redis, settings: Settings, events: list[dict[str, str]], queries: list[Params]
) -> list[Answer]:
    """Apply ``events`` through the projection (in batches, then all again), then run ``queries``."""
    keys = Keys(settings.prefix)
    proj = Projection(client, keys, set_to_bitmap_threshold=20, chunk=7)
    decoded = decode_all(events)
    for i in range(0, len(decoded), 61):
        await proj.apply(decoded[i : i + 61])
    assert (await proj.apply(decoded)).changed == 0
    ex = Executor(client, keys, settings)
    answers = []
    for q in queries:
        page = await ex.run(plan(parse_params(q), keys))
        answers.append((page.total, page.job_ids))
    return answers


def workload(seed: int, jobs: int, n_queries: int) -> tuple[list[dict[str, str]], Reference, list[Params]]:
    rng = random.Random(seed)
    traffic = make_traffic(rng, jobs)
    ref = Reference()
    for e in traffic:
        ref.add(e)
    return traffic, ref, [random_query(rng, ref) for _ in range(n_queries)]


async def reference_answers(client: aioredis.Redis, prefix: str, ref: Reference, queries: list[Params]) -> list[Answer]:
    ids = list(ref.jobs())
    handles = await record.handles(client, Keys(prefix), ids)
    orders = {j: h for j, h in zip(ids, handles, strict=True) if h}
    return [ref.query(q, orders) for q in queries]


# ---------------------------------------------------------------- standalone and fakeredis


def test_every_script_loads_and_its_flags_are_honoured(redis_server: RedisServer) -> None:
    if redis_server.process is None:
        pytest.skip("fakeredis neither parses nor honours script flags")
    client = redis.Redis.from_url(redis_server.url)
    for name, text in all_script_texts().items():
        sha = client.script_load(text)
        try:
            client.evalsha_ro(sha, 0)
            refused = ""
        except redis.ResponseError as exc:
            refused = str(exc)
        # EVALSHA_RO refuses a script without `no-writes` before running it; one with the flag runs
        # (and may fail on its missing KEYS, with a different error).
        assert ("write flag" in refused) == ("no-writes" not in lua.flags(text)), (name, refused)
    client.close()


@pytest.fixture
def embedded_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The URL of `jobreg up`'s in-process fakeredis: its fallback when no redis-server is installed."""
    monkeypatch.setattr(embedded.shutil, "which", lambda name: None)
    with embedded.embedded_redis(tmp_path) as store:
        assert "fakeredis" in store.description
        monkeypatch.undo()
        yield store.url


async def test_projection_and_queries_run_on_redis(redis_server: RedisServer) -> None:
    await _run_against(redis_server.url)


async def test_projection_and_queries_run_on_the_embedded_fakeredis(embedded_fake: str) -> None:
    await _run_against(embedded_fake)


async def _run_against(url: str) -> None:
    settings = load_settings({}, redis_url=url, prefix=f"t{os.urandom(4).hex()}")
    traffic, ref, queries = workload(11, 150, 60)
    client = aioredis.Redis.from_url(url)
    try:
        got = await project_and_ask(client, settings, traffic, queries)
        assert got == await reference_answers(client, settings.prefix, ref, queries)
    finally:
        await client.aclose()


# ---------------------------------------------------------------- a 3-master cluster


cluster = pytest.fixture(scope="module", name="cluster")(three_masters)


# Executor settings that steer queries through every strategy and so every query script (as the
# reference test does): the defaults, the chunked path with walks that start by counting (SELECT),
# candidate checks (CHECK, PICK) with small zones, and the chunked path with TOP selection taken
# whenever it applies (its cost rule would pick it only on larger data).
VARIANTS = {
    "defaults": ({}, 1024),
    "chunked-select": (
        {"one_call_budget": 0, "collect_threshold": 0, "candidate_threshold": 0, "select_offset": 0, "walk_chunk": 50},
        1024,
    ),
    "candidates-small-zones": (
        {"collect_threshold": 3000, "candidate_threshold": 3000, "select_offset": 5000, "walk_chunk": 50},
        8,
    ),
    "chunked-top": ({"one_call_budget": 0}, 1024),
}
FORCE_TOP = {"chunked-top"}
RAN: set[str] = set()
VARIANTS_DONE: set[str] = set()


def tuned(url: str, prefix: str, overrides: dict[str, int]) -> Settings:
    base = load_settings({}, redis_url=url, prefix=prefix)
    return Settings(**{**{f: getattr(base, f) for f in base.__struct_fields__}, **overrides})


@pytest.fixture
def script_names(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Which query scripts the test made Redis run (recorded, then run as they are)."""
    call, pipelined = scripts.Scripts._call, scripts.Scripts._pipelined

    async def record_call(self: scripts.Scripts, name: str, *rest: Any) -> Any:
        RAN.add(name)
        return await call(self, name, *rest)

    async def record_pipelined(self: scripts.Scripts, name: str, *rest: Any) -> Any:
        RAN.add(name)
        return await pipelined(self, name, *rest)

    monkeypatch.setattr(scripts.Scripts, "_call", record_call)
    monkeypatch.setattr(scripts.Scripts, "_pipelined", record_pipelined)
    return RAN


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_cluster_answers_match_standalone(
    cluster: LocalCluster,
    redis_server: RedisServer,
    variant: str,
    script_names: set[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if redis_server.process is None:
        pytest.skip("the standalone side needs a real redis-server too")
    overrides, zone_size = VARIANTS[variant]
    monkeypatch.setattr(indexes, "ZONE_SIZE", zone_size)
    if variant in FORCE_TOP:
        monkeypatch.setattr(
            cost,
            "top_pays",
            lambda p, strategy, total, listed, first: p.order_bsi is not None and p.offset + p.limit <= first,
        )
    prefix = f"t{os.urandom(4).hex()}"
    keys = Keys(prefix)
    traffic, ref, queries = workload(23 + zone_size, 300, 150)
    standalone = aioredis.Redis.from_url(redis_server.url)
    # Everything of one registry is under `{prefix}`, so it is one slot on one master: jobreg runs
    # its plain client against that node, as issue 14 will per partition.
    owner = cluster.node_of(keys.seq)
    node = aioredis.Redis(port=owner.port)
    try:
        want = await project_and_ask(standalone, tuned(redis_server.url, prefix, overrides), traffic, queries)
        got = await project_and_ask(node, tuned(f"redis://{owner.address}", prefix, overrides), traffic, queries)
        assert got == want
        assert got == await reference_answers(node, prefix, ref, queries)
        # Nothing was written outside the tag's slot or node (temporary bitmaps included).
        slot = key_slot(keys.seq.encode())
        stored = [k async for k in node.scan_iter(match=f"*{prefix}*", count=1000)]
        assert stored and {key_slot(k) for k in stored} == {slot}
        assert int(await node.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)) == len(stored)
        for other in cluster.nodes:
            if other is not owner:
                with other.client() as c:
                    assert not list(c.scan_iter(match=f"*{prefix}*"))
        VARIANTS_DONE.add(variant)
    finally:
        await standalone.aclose()
        await node.aclose()


def test_the_variants_ran_every_query_script() -> None:
    # Runs after the variants above (file order); without all of them it has nothing to check.
    if set(VARIANTS) != VARIANTS_DONE:
        pytest.skip("needs every variant of test_cluster_answers_match_standalone to have passed")
    assert set(scripts._NAMES) - {"records"} <= RAN, set(scripts._NAMES) - RAN


async def test_cluster_client_routes_the_query_scripts(cluster: LocalCluster) -> None:
    """redis-py's RedisCluster runs the query scripts by their first key's slot, on any node it was given."""
    prefix = f"t{os.urandom(4).hex()}"
    keys = Keys(prefix)
    traffic, ref, _ = workload(31, 120, 0)
    owner = cluster.node_of(keys.seq)
    node = aioredis.Redis(port=owner.port)
    settings = load_settings({}, redis_url=f"redis://{owner.address}", prefix=prefix)
    client = aioredis.RedisCluster(host="127.0.0.1", port=cluster.nodes[-1].port)
    try:
        await project_and_ask(node, settings, traffic, [])
        ids = list(ref.jobs())
        handles = await record.handles(node, keys, ids)
        ours = scripts.Scripts(client)  # type: ignore[arg-type]
        await ours.load()
        rows = await ours._call("records", [keys.job(j) for j in ids], [])
        assert [int(h) if h else 0 for h in rows[0::2]] == handles
        listed = [h for h in handles if h]
        uuids = await ours._call("uuids", [keys.uuids], [scripts.pack_handles(listed)])
        assert len(uuids) == 16 * len(listed)
    finally:
        await node.aclose()
        await client.aclose()


def test_a_cross_slot_access_is_refused(cluster: LocalCluster) -> None:
    # Two registries whose tags live in different slots of the same master.
    first = Keys(f"t{os.urandom(4).hex()}")
    owner = cluster.node_of(first.seq)
    rng = random.Random(5)
    while True:
        second = Keys(f"t{rng.getrandbits(32):08x}")
        if cluster.node_of(second.seq) is owner and key_slot(second.seq.encode()) != key_slot(first.seq.encode()):
            break
    with owner.client() as c:
        c.set(second.seq, 7)
        body = "\nreturn redis.call('GET', ARGV[1])"
        # Declared key in one slot, an undeclared one in another slot of the same node.
        with pytest.raises(redis.ResponseError, match="same slot"):
            c.eval("#!lua" + body, 1, first.seq, second.seq)
        assert c.eval("--" + body, 1, first.seq, second.seq) == b"7"  # no shebang: not caught
        # jobreg's own scripts: declared keys of two slots are refused, even on one node.
        with pytest.raises(redis.ResponseError, match="CROSSSLOT"):
            c.eval(scripts.script_text("records"), 2, first.job("a"), second.job("b"))


async def test_dead_lettering_and_replay_run_step_by_step_on_a_cluster(cluster: LocalCluster) -> None:
    """Each dead-letter and replay step is one slot, so redis-py's cluster client runs them as they are.

    The events stream (with its failure bookkeeping and replay markers) and the dead-letter stream
    (with its copy markers) sit in two slots, on two masters here; each step is one call to one of them.
    """
    keys = Keys(f"t{os.urandom(4).hex()}")
    assert key_slot(keys.failures.encode()) == key_slot(keys.events.encode()) == key_slot(keys.replayed.encode())
    assert key_slot(keys.dead_sources.encode()) == key_slot(keys.dead.encode()) != key_slot(keys.events.encode())
    client = aioredis.RedisCluster(host="127.0.0.1", port=cluster.nodes[-1].port)
    try:
        await client.xgroup_create(keys.events, "g", id="0", mkstream=True)
        bad = {b"event_id": b"e-1", b"type": b"paused", b"\xff": b"\xfe"}
        entry_id = await client.xadd(keys.events, bad)  # type: ignore[arg-type]
        await client.xreadgroup("g", "c1", {keys.events: ">"}, count=10)
        await client.hset(keys.failure_counts, entry_id, 2)  # type: ignore[misc]
        letterer = DeadLetterer(client, keys, "g", "c1")  # type: ignore[arg-type]
        assert await letterer([(entry_id, bad, "unknown type")]) == 1
        assert await letterer([(entry_id, bad, "again")]) == 0
        [dead] = await list_dead(client, keys)  # type: ignore[arg-type]
        assert dead.source_id == entry_id.decode() and dead.error == "unknown type"
        assert not await client.exists(keys.failure_counts, keys.dead_sources)
        assert int((await client.xpending(keys.events, "g"))["pending"]) == 0
        assert await sweep_markers(client, keys, "g") == 0  # type: ignore[arg-type]
        assert await replay(client, keys, fixes={"type": "created"}) == 1  # type: ignore[arg-type]
        assert await client.xlen(keys.dead) == 0 and not await client.exists(keys.replayed)
        _, republished = (await client.xrevrange(keys.events, count=1))[0]
        assert republished == {**bad, b"type": b"created"}
    finally:
        await client.aclose()
