"""HTTP handlers: thin adapters from requests to the planner, executor and stream health."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.datastructures import ResponseHeader
from litestar.openapi import ResponseSpec
from litestar.params import FromPath

from api.auth import CurrentPrincipal
from api.errors import JSendError, ValidationBody, invalid_path_param
from api.params import check_query_size, parse_query
from api.query_docs import JOB_QUERY_PARAMETERS
from api.services import Services, ServicesDep
from registry.auth.principal import Principal, can_see, scope
from registry.domain.model import Job, JobDetail, Status
from registry.errors import InvalidQuery, JobNotFound
from registry.live.changes import format_position
from registry.ops.health import backlog
from registry.query.executor import Listing
from registry.query.page_token import binding
from registry.query.seek import Seek, next_seek
from registry.query.spec import JobQuery
from registry.wire.events import UUID_RE


class Pagination(msgspec.Struct):
    total: int
    start: int
    end: int
    # Resumes after this page's last row (request parameter page_token); null on the last page.
    next_page_token: str | None = None


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


_INVALID = ResponseSpec(ValidationBody, description="Invalid parameters, every offending one named")
_UNAVAILABLE = ResponseSpec(JSendError, description="Redis unreachable; retry after Retry-After seconds")
_NOT_FOUND = ResponseSpec(JSendError, description="Unknown or not-yet-created job, or one of another project")
_UNAUTHORIZED = ResponseSpec(JSendError, description="Missing, malformed, badly signed or expired bearer token")
_TOO_LONG = ResponseSpec(JSendError, description="Query string longer than any valid query needs")


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
                description=(
                    "how the query was answered (strategy and sizes), for diagnosing slow queries; "
                    "admins only (its sizes count every project's jobs)"
                ),
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
        self, request: Request[Any, Any, Any], services: ServicesDep, principal: CurrentPrincipal
    ) -> Response[JobsPage]:
        check_query_size(request.scope.get("query_string", b""))
        query = scope(parse_query(request.query_params.multi_items()), principal)
        # The change log's position comes read before the page (or in the same atomic call): every
        # change the list might not reflect comes after it. None for filters that can never match
        # (the watch has nothing to send; they cost no Redis call).
        page, start, more, seek = await _list(services, query, principal)
        jobs = page.jobs
        end = start + len(jobs)
        content_range = f"{start + 1}-{end}/{page.total}" if jobs else f"0-0/{page.total}"
        token = None
        if more and jobs:
            bound = binding(query, _caller(principal))
            token = await services.page_tokens.issue(next_seek(query.order_by, seek, start, jobs), bound)
        pagination = Pagination(total=page.total, start=start, end=end, next_page_token=token)
        body = JobsPage(data=jobs, pagination=pagination)
        headers = {
            "Content-Range": content_range,
            "Access-Control-Expose-Headers": "Content-Range, X-Jobreg-Plan, X-Resource-Version",
        }
        if principal.is_admin:
            # The plan's sizes are read before scoping narrows the match (how many jobs an id,
            # prefix, batch or user has in every project): only an operator may see them.
            headers["X-Jobreg-Plan"] = page.strategy
        if page.version is not None:
            headers["X-Resource-Version"] = page.version  # partitions: a vector, as the watch's ids
        elif page.position is not None:
            headers["X-Resource-Version"] = format_position(page.position)
        return Response(body, headers=headers)


def _caller(principal: Principal) -> str:
    """Who a page token is sealed to: the caller's role and user id (their projects scope the query)."""
    return f"{principal.role.value}:{principal.user_id}"


async def _list(services: Services, query: JobQuery, principal: Principal) -> tuple[Listing, int, bool, Seek | None]:
    """The page (at its offset, or after a page token), its start, whether rows follow it, and the token's Seek."""
    seek = None
    if query.page_token is not None:
        if query.offset:
            raise InvalidQuery([("page_token", "page_token replaces offset: give one or the other", "value_error")])
        seek = await services.page_tokens.open(query.page_token, binding(query, _caller(principal)))
    page, start, more = await services.executor.list_page(query, seek)
    return page, start, more, seek


class JobController(Controller):
    path = "/api/v2/jobs"
    tags = ["jobs"]  # noqa: RUF012 (Litestar reads it as a class attribute)

    @get(
        "/{id:str}",
        summary="Get one job",
        responses={401: _UNAUTHORIZED, 404: _NOT_FOUND, 422: _INVALID, 503: _UNAVAILABLE},
    )
    async def get_job(self, services: ServicesDep, id: FromPath[str], principal: CurrentPrincipal) -> OneJob:
        return OneJob(data=await _visible_job(services, id, principal))


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
    async def get_status(self, services: ServicesDep, id: FromPath[str], principal: CurrentPrincipal) -> JobStatusBody:
        job = await _visible_job(services, id, principal)
        return JobStatusBody(data=StatusData(status=job.status))

    @get(
        "/{id:str}/results_link",
        summary="Where one job's results are (null until its backend published a link)",
        responses={401: _UNAUTHORIZED, 404: _NOT_FOUND, 422: _INVALID, 503: _UNAVAILABLE},
    )
    async def get_results_link(
        self, services: ServicesDep, id: FromPath[str], principal: CurrentPrincipal
    ) -> ResultsLinkBody:
        job = await _visible_job(services, id, principal)
        return ResultsLinkBody(data=ResultsLinkData(results_link=job.results_link))


@get(
    "/healthz",
    summary="Liveness, Redis reachability and ingestion backlog",
    tags=["ops"],
    responses={503: _UNAVAILABLE},
)
async def healthz(services: ServicesDep) -> Health:
    # Every partition's stream too: the ingress stream alone reads 0 as soon as the router has moved its
    # entries on, before their partitions apply them (a cluster run of tests/e2e found it).
    route = services.executor.route
    lag, pending = await backlog(services.redis, services.keys, services.settings.group, route)
    dead = int(await services.redis.xlen(services.keys.dead))
    return Health(consumer_lag=lag, pending=pending, dead_letters=dead)
