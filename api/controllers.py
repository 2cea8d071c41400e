"""HTTP handlers: thin adapters from requests to the planner, executor and stream health."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import redis.asyncio as aioredis
from litestar import Controller, Request, Response, get
from litestar.datastructures import ResponseHeader, State
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import FromPath, QueryParameter

from api.auth import CurrentPrincipal
from api.errors import JSendError, ValidationBody, invalid_path_param
from api.params import check_query_size, parse_query
from registry.auth.principal import Principal, can_see, scope
from registry.domain.model import Job, JobDetail, Origin, Status
from registry.errors import JobNotFound
from registry.keys import Keys
from registry.live.changes import current_position, format_position
from registry.ops.health import group_backlog
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.query.spec import MAX_LIMIT, MAX_LIST, Direction, OrderBy
from registry.settings import Settings
from registry.wire.events import UUID_RE


@dataclass(frozen=True)
class Services:
    """What the handlers use; built in the app's lifespan and kept on ``app.state.services``."""

    settings: Settings
    redis: aioredis.Redis
    keys: Keys
    executor: Executor


class Pagination(msgspec.Struct):
    total: int
    start: int
    end: int


class Success(msgspec.Struct, kw_only=True):
    """The JSend envelope of every successful response (Pasqal's shape); subclasses add ``data``."""

    status: str = "success"
    message: str = "OK."
    code: str = "200"


class JobsPage(Success, kw_only=True):
    data: list[Job]
    pagination: Pagination


class OneJob(Success, kw_only=True):
    data: JobDetail


class StatusData(msgspec.Struct):
    status: Status


class JobStatusBody(Success, kw_only=True):
    data: StatusData


class ResultsLinkData(msgspec.Struct):
    results_link: str | None


class ResultsLinkBody(Success, kw_only=True):
    data: ResultsLinkData


class Health(msgspec.Struct, kw_only=True):
    status: str = "ok"
    redis: bool = True
    consumer_lag: int | None
    pending: int
    dead_letters: int


# -- OpenAPI documentation of the query parameters -----------------------------------
# Declared as optional strings so the framework never rejects them: parse_query is the one
# validator (it names every bad parameter in a single 422). ``schema_extra`` documents the
# real types.


def _enum(values: Any, default: str | None = None) -> Schema:
    return Schema(type=OpenAPIType.STRING, enum=[v.value for v in values], default=default)


def _doc(description: str, schema: Schema, *, many: bool = False, query: str | None = None) -> Any:
    if many:
        schema = Schema(type=OpenAPIType.ARRAY, items=schema, max_items=MAX_LIST)
    return QueryParameter(
        annotation=list[str] | None if many else str | None,
        name=query,
        default=None,
        required=False,
        description=description,
        schema_extra={"oneOf": [schema]},
    )


_UUID = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.UUID)
_INT = Schema(type=OpenAPIType.INTEGER)
_DATE = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME)
_PREFIX = Schema(type=OpenAPIType.STRING, pattern="^[0-9a-fA-F-]{1,36}$")
_LIMIT = Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=MAX_LIMIT, default=MAX_LIMIT)
_OFFSET = Schema(type=OpenAPIType.INTEGER, minimum=0, default=0)

_INVALID = ResponseSpec(ValidationBody, description="Invalid parameters, every offending one named")
_UNAVAILABLE = ResponseSpec(JSendError, description="Redis unreachable; retry after Retry-After seconds")
_NOT_FOUND = ResponseSpec(JSendError, description="Unknown or not-yet-created job, or one of another project")
_UNAUTHORIZED = ResponseSpec(JSendError, description="Missing, malformed, badly signed or expired bearer token")
_TOO_LONG = ResponseSpec(JSendError, description="Query string longer than any valid query needs")

JOB_QUERY_PARAMETERS: dict[str, Any] = {
    "order_by": _doc("Sort key; ties are broken by id; nulls come last.", _enum(OrderBy, OrderBy.CREATED_AT.value)),
    "order_by_direction": _doc("Sort direction.", _enum(Direction, Direction.DESC.value)),
    "limit": _doc(f"Page size (1..{MAX_LIMIT}).", _LIMIT),
    "offset": _doc("Items skipped; past the end gives an empty page.", _OFFSET),
    "job_ids": _doc("Job ids.", _UUID, many=True, query="id"),
    "id__starts_with": _doc("Prefix of the canonical lowercase id.", _PREFIX),
    "batch_id": _doc("Batch ids.", _UUID, many=True),
    "project_id": _doc("Project ids.", _UUID, many=True),
    "user_id": _doc("User ids.", Schema(type=OpenAPIType.STRING, min_length=1, max_length=128), many=True),
    "status": _doc("Job statuses.", _enum(Status), many=True),
    "origin": _doc("Job origins.", _enum(Origin), many=True),
    "min_runs": _doc("Inclusive lower bound on runs.", _INT),
    "max_runs": _doc("Inclusive upper bound on runs.", _INT),
    "errors": _doc("true: jobs with at least one error; false: jobs with none.", Schema(type=OpenAPIType.BOOLEAN)),
    "start_date": _doc("start_timestamp >= start_date (no zone = UTC).", _DATE),
    "end_date": _doc("end_timestamp <= end_date (no zone = UTC).", _DATE),
}


class JobListController(Controller):
    path = "/api/v2/jobs"
    tags = ["jobs"]  # noqa: RUF012 (Litestar reads it as a class attribute)
    # Documented here, read by parse_query; handler-level layered parameters do not exist.
    parameters = JOB_QUERY_PARAMETERS

    @get(
        "/",
        summary="List jobs",
        description="Filter (all filters AND-ed; a list means any of), order and page the registry's jobs.",
        responses={401: _UNAUTHORIZED, 414: _TOO_LONG, 422: _INVALID, 503: _UNAVAILABLE},
        response_headers=[
            ResponseHeader(
                name="Content-Range",
                documentation_only=True,
                description="{start+1}-{end}/{total}, or 0-0/{total} for an empty page",
            ),
            ResponseHeader(
                name="X-Jobreg-Plan",
                documentation_only=True,
                description="how the query was answered (strategy and sizes), for diagnosing slow queries",
            ),
            ResponseHeader(
                name="X-Resource-Version",
                documentation_only=True,
                description=(
                    "Change log position read before the query: watch from it to miss nothing "
                    "(absent when the filters can never match)"
                ),
            ),
        ],
    )
    async def list_jobs(
        self, request: Request[Any, Any, Any], state: State, principal: CurrentPrincipal
    ) -> Response[JobsPage]:
        services: Services = state.services
        check_query_size(request.scope.get("query_string", b""))
        query = scope(parse_query(request.query_params.multi_items()), principal)
        job_plan = plan(query, services.keys)
        # Read before the query: every change the list might not reflect comes after it. Not
        # for filters that can never match (the watch has nothing to send; they cost no Redis call).
        position = None if job_plan.empty else await current_position(services.redis, services.keys)
        page = await services.executor.run(job_plan)
        jobs = [job for job in await services.executor.jobs(page.job_ids) if job is not None]
        start, end = query.offset, query.offset + len(jobs)
        content_range = f"{start + 1}-{end}/{page.total}" if jobs else f"0-0/{page.total}"
        body = JobsPage(data=jobs, pagination=Pagination(total=page.total, start=start, end=end))
        headers = {
            "Content-Range": content_range,
            "X-Jobreg-Plan": page.strategy,
            "Access-Control-Expose-Headers": "Content-Range, X-Jobreg-Plan, X-Resource-Version",
        }
        if position is not None:
            headers["X-Resource-Version"] = format_position(position)
        return Response(body, headers=headers)


class JobController(Controller):
    path = "/api/v2/jobs"
    tags = ["jobs"]  # noqa: RUF012 (Litestar reads it as a class attribute)

    @get(
        "/{id:str}",
        summary="Get one job",
        responses={401: _UNAUTHORIZED, 404: _NOT_FOUND, 422: _INVALID, 503: _UNAVAILABLE},
    )
    async def get_job(self, state: State, id: FromPath[str], principal: CurrentPrincipal) -> OneJob:
        return OneJob(data=await _visible_job(state.services, id, principal))


async def _visible_job(services: Services, id: str, principal: Principal) -> JobDetail:
    """The job ``id`` in full, if the caller may see it; every other case is the same 404."""
    if not UUID_RE.fullmatch(id):
        raise invalid_path_param("id", f"{id[:60]!r} is not a valid UUID", "uuid_parsing")
    job_id = id.lower()
    (job,) = await services.executor.details([job_id])
    # Another project's job gets the very same 404 as a missing one.
    if job is None or not can_see(principal, job.project_id):
        raise JobNotFound(job_id)
    return job


class JobReadsV1Controller(Controller):
    """The SDK's other reads of one job (`get_job_status`, `Job.full_result`), scoped like GET /api/v2/jobs/{id}."""

    path = "/api/v1/jobs"
    tags = ["jobs"]  # noqa: RUF012 (Litestar reads it as a class attribute)

    @get(
        "/{id:str}/status",
        summary="Status of one job",
        responses={401: _UNAUTHORIZED, 404: _NOT_FOUND, 422: _INVALID, 503: _UNAVAILABLE},
    )
    async def get_status(self, state: State, id: FromPath[str], principal: CurrentPrincipal) -> JobStatusBody:
        job = await _visible_job(state.services, id, principal)
        return JobStatusBody(data=StatusData(status=job.status))

    @get(
        "/{id:str}/results_link",
        summary="Where one job's results are (null until its backend published a link)",
        responses={401: _UNAUTHORIZED, 404: _NOT_FOUND, 422: _INVALID, 503: _UNAVAILABLE},
    )
    async def get_results_link(self, state: State, id: FromPath[str], principal: CurrentPrincipal) -> ResultsLinkBody:
        job = await _visible_job(state.services, id, principal)
        return ResultsLinkBody(data=ResultsLinkData(results_link=job.results_link))


@get(
    "/healthz",
    summary="Liveness, Redis reachability and ingestion backlog",
    tags=["ops"],
    responses={503: _UNAVAILABLE},
)
async def healthz(state: State) -> Health:
    services: Services = state.services
    lag, pending = await group_backlog(services.redis, services.keys.events, services.settings.group)
    dead = int(await services.redis.xlen(services.keys.dead))
    return Health(consumer_lag=lag, pending=pending, dead_letters=dead)
