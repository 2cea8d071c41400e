"""The PostgreSQL peer: GET /api/v2/jobs served from PostgreSQL by the same HTTP stack as jobreg.

What a user would otherwise run: Litestar under uvicorn (uvloop, httptools), a psycopg async
connection pool, the SQL of :mod:`tests.benchmarks.pg` (the indexes there match each order),
an exact ``COUNT(*)`` and ``LIMIT``/``OFFSET`` paging, the same JSend envelope and headers,
and an HS256 bearer token verified with pyjwt on every request (as jobreg verifies one), so
that only the store differs. Started by :mod:`tests.benchmarks.compare`::

    JOBREG_AUTH_SECRET=... python -m tests.benchmarks.pg_service --port 8101 [--dsn ...]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import jwt
import msgspec
import uvicorn
from litestar import Litestar, Request, Response, get
from litestar.middleware import DefineMiddleware
from litestar.response.base import ASGIResponse
from litestar.types import ASGIApp, Receive, Scope, Send
from psycopg_pool import AsyncConnectionPool

from tests.benchmarks import pg

_PUBLIC = ("/healthz",)
_UNAUTHORIZED = msgspec.json.encode({"status": "fail", "message": "invalid token", "code": "401", "data": None})


class Pagination(msgspec.Struct):
    total: int
    start: int
    end: int


class JobsPage(msgspec.Struct):
    data: list[dict[str, Any]]
    pagination: Pagination
    status: str = "success"
    message: str = "OK."
    code: str = "200"


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="microseconds")


def _job(row: tuple[Any, ...]) -> dict[str, Any]:
    # Column order of pg._COLUMNS; uuids and timestamps rendered as jobreg renders them.
    (
        job_id,
        parent,
        batch,
        project,
        user,
        status,
        runs,
        origin,
        errors,
        variables,
        order,
        created,
        updated,
        start,
        end,
    ) = row
    return {
        "id": str(job_id),
        "parent_id": None if parent is None else str(parent),
        "batch_id": str(batch),
        "project_id": str(project),
        "user_id": user,
        "status": status,
        "runs": runs,
        "origin": origin,
        "errors": errors,
        "variables": variables,
        "creation_order": order,
        "created_at": _ts(created),
        "updated_at": _ts(updated),
        "start_timestamp": _ts(start),
        "end_timestamp": _ts(end),
    }


def auth_middleware_factory(secret: str, issuer: str, audience: str) -> Any:
    """ASGI middleware: 401 unless ``Authorization: Bearer`` carries a valid HS256 JWT."""

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"] not in _PUBLIC:
                header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
                scheme, _, token = header.partition(" ")
                try:
                    if scheme.lower() != "bearer":
                        raise jwt.InvalidTokenError("no bearer token")
                    jwt.decode(token, secret, algorithms=["HS256"], issuer=issuer, audience=audience)
                except jwt.InvalidTokenError:
                    response = ASGIResponse(body=_UNAUTHORIZED, status_code=401, media_type="application/json")
                    await response(scope, receive, send)
                    return
            await app(scope, receive, send)

        return middleware

    return factory


def create_app(dsn: str, secret: str, pool_size: int) -> Litestar:
    pool = AsyncConnectionPool(
        dsn,
        min_size=pool_size,
        max_size=pool_size,
        open=False,
        # Custom plans per query (the data is heavily skewed), timestamps rendered in UTC.
        kwargs={"autocommit": True, "prepare_threshold": None, "options": "-c timezone=UTC"},
    )

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await pool.open(wait=True)
        try:
            yield
        finally:
            await pool.close()

    @get("/healthz", sync_to_thread=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/api/v2/jobs")
    async def list_jobs(request: Request[Any, Any, Any]) -> Response[Any]:
        params = list(request.query_params.multi_items())  # an iterator: read twice below
        try:
            query = pg.sql_for(params)
        except ValueError as exc:
            return Response({"detail": [{"loc": ["query"], "msg": str(exc), "type": "value_error"}]}, status_code=422)
        offset = int(dict(params).get("offset", "0"))
        async with pool.connection() as conn:
            rows = await (await conn.execute(query.page, query.args)).fetchall()
            count = await (await conn.execute(query.count, query.args)).fetchone()
        total = int(count[0]) if count else 0
        jobs = [_job(row) for row in rows]
        end = offset + len(jobs)
        body = JobsPage(data=jobs, pagination=Pagination(total=total, start=offset, end=end))
        content_range = f"{offset + 1}-{end}/{total}" if jobs else f"0-0/{total}"
        headers = {"Content-Range": content_range, "Access-Control-Expose-Headers": "Content-Range"}
        return Response(body, headers=headers)

    return Litestar(
        route_handlers=[healthz, list_jobs],
        lifespan=[lifespan],
        middleware=[DefineMiddleware(auth_middleware_factory(secret, "jobreg", "jobreg"))],
        openapi_config=None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", default=pg.DEFAULT_DSN)
    parser.add_argument("--pool-size", type=int, default=4)
    args = parser.parse_args()
    app = create_app(args.dsn, os.environ["JOBREG_AUTH_SECRET"], args.pool_size)
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools", log_level="warning")


if __name__ == "__main__":
    main()
