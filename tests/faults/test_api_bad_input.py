"""Case 6, the API under bad input: schemathesis drives a real `jobreg api` process from the app's own OpenAPI
schema (no 5xx, every response matching the schema); oversized query strings and huge lists get a fast 4xx."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from api.params import MAX_QUERY_BYTES
from tests.conftest import free_port
from tests.faults.conftest import report
from tests.harness import Cluster, cluster
from tests.integration.test_api import load
from tests.reference import Reference, make_traffic
from tests.topology import Store

EXAMPLES = 150  # per operation; the fuzzing budget of the default run
FAST_S = 0.5


@pytest.fixture(scope="module")
def api(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    prefix = f"fuzz{os.urandom(3).hex()}"
    traffic = make_traffic(random.Random(6), 300)
    ref = Reference()
    for entry in traffic:
        ref.add(entry)
    asyncio.run(load(store.url, prefix, traffic, list(ref.jobs())))
    with cluster(store.url, prefix, tmp_path_factory.mktemp("fuzz")) as c:
        c.start_api(free_port())
        yield c


@pytest.fixture(scope="module")
def api_schema(api: Cluster) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{api.api_url}/schema/openapi.json")


def test_api_conforms_to_its_own_schema(api_schema: schemathesis.BaseSchema, api: Cluster) -> None:
    # Driven by hand rather than by schemathesis' pytest plugin, which does not support this pytest.
    # The watch endpoint is a Server-Sent Events stream that never ends by design (its own tests cover it).
    operations = [op for op in (r.ok() for r in api_schema.get_all_operations()) if not op.path.endswith("/watch")]
    assert {op.path for op in operations} >= {"/api/v2/jobs", "/api/v2/jobs/{id}", "/healthz"}
    codes: Counter[int] = Counter()
    ran: list[str] = []
    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            # Every response documented and matching its schema, and no 5xx whatever the input. Data the
            # schema allows but the contract rejects (e.g. `limit` given twice) may get a 422.
            # Negative data the API accepts anyway (e.g. a query parameter declared once, given twice) is fine.
            response = case.call_and_validate(
                excluded_checks=[positive_data_acceptance, negative_data_rejection], timeout=30
            )
            codes[response.status_code] += 1
            assert response.status_code < 500, response.text

        try:
            check()
        except Unsatisfiable:
            # Nothing negative exists for some operations (no parameters; a free-form string path id).
            assert mode is GenerationMode.NEGATIVE, operation.path
            continue
        ran.append(f"{mode.value} {operation.path}")
    assert codes[200] > 0 and codes[422] > 0, codes
    assert "negative /api/v2/jobs" in ran, ran
    report("api_schema_fuzz", runs=ran, requests=sum(codes.values()), status_codes=dict(codes))


def test_oversized_queries_are_refused_fast(api: Cluster) -> None:
    timings: dict[str, float] = {}

    def get(name: str, params: list[tuple[str, str]]) -> tuple[int | None, Any]:
        # A bare socket: httpx itself refuses to send URLs past 64 KiB.
        start = time.perf_counter()
        status, body = _raw_get(api.api_url, "/api/v2/jobs?" + urlencode(params))
        timings[name] = time.perf_counter() - start
        return status, body

    status, body = get("10,000 values", [("status", "DONE")] * 10_000)
    _assert_too_long(status, body)
    status, body = get("10,000 values under the size limit", [("id", "1")] * 10_000)
    assert status == 422, (status, body)
    assert body["detail"] == [{"loc": ["query", "id"], "msg": "at most 100 values", "type": "too_long"}]
    status, body = get("101 values", [("batch_id", "0f8e3f0c-1c6b-4c1a-9b7e-3e1d2c3b4a59")] * 101)
    assert status == 422 and body["detail"][0]["loc"] == ["query", "batch_id"], body
    status, body = get("query string over the limit", [("user_id", "u" * (MAX_QUERY_BYTES + 1))])
    _assert_too_long(status, body)
    # The longest valid query still works.
    longest = [(p, "0f8e3f0c-1c6b-4c1a-9b7e-3e1d2c3b4a59") for p in ("id", "batch_id", "project_id")] * 100
    longest += [("user_id", "u" * 128)] * 100
    status, body = get("longest valid", longest)
    assert status == 200, body
    status, body = get("one huge value", [("user_id", "u" * 50_000)])
    assert status == 422 and body["detail"][0]["loc"] == ["query", "user_id"], body
    # Far past any limit: the HTTP server itself refuses it (4xx) or closes the connection.
    status, _ = get("1 MB query", [("status", "x" * 1_000_000)])
    assert status is None or 400 <= status < 500, status
    slow = {k: v for k, v in timings.items() if v > FAST_S}
    assert not slow, slow
    api.check_alive()
    report("api_bad_input", schemathesis_examples_per_operation=EXAMPLES, refusal_ms=_ms(timings))


def _assert_too_long(status: int | None, body: Any) -> None:
    # The API's own 414; or, with uvicorn's httptools parser installed, that parser's 400 for a
    # request line past its own limit, which comes before the API sees the request.
    if status == 414:
        assert "exceeds" in body["message"], body
    else:
        assert status == 400, (status, body)


def _raw_get(base_url: str, target: str) -> tuple[int | None, Any]:
    """GET over a bare socket: (status, JSON body), or (None, None) if the server hung up first."""
    host, port = base_url.removeprefix("http://").split(":")
    chunks: list[bytes] = []
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        try:
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
    raw = b"".join(chunks)
    if not raw.startswith(b"HTTP/"):
        return None, None
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        return int(head.split()[1]), json.loads(body)
    except ValueError:
        return int(head.split()[1]), body


def _ms(timings: dict[str, float]) -> dict[str, float]:
    return {k: round(v * 1000, 1) for k, v in timings.items()}


def test_logs_show_no_unhandled_error(api: Cluster) -> None:
    # Runs after the fuzzing above (same module, file order): nothing reached the catch-all handler.
    assert "unhandled error" not in api.logs_text(), api.log_tail()
