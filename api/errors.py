"""Maps domain, store and framework errors to HTTP responses, once, for the whole app."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.auth import challenge
from registry.errors import (
    InvalidQuery,
    JobNotFound,
    LayoutMismatch,
    QueryTooLong,
    StoreUnavailable,
    TooManyWatches,
    Unauthorized,
)
from registry.live.changes import ResumeGone
from registry.ops.text import printable

log = logging.getLogger("jobreg.api")

RETRY_AFTER_SECONDS = 2
UNAVAILABLE_MESSAGE = "registry store unavailable, retry shortly"


class ErrorDetail(msgspec.Struct):
    """One offending input, as FastAPI-style clients expect it."""

    loc: list[str]
    msg: str
    type: str


class ValidationBody(msgspec.Struct):
    detail: list[ErrorDetail]


class JSendError(msgspec.Struct, kw_only=True):
    """A JSend ``fail`` (client error) or ``error`` (server error) envelope."""

    status: str
    message: str
    code: str
    data: None = None


def jsend_error(status_code: int, message: str, headers: dict[str, str] | None = None) -> Response[JSendError]:
    kind = "fail" if status_code < 500 else "error"
    body = JSendError(status=kind, message=message, code=str(status_code))
    return Response(body, status_code=status_code, headers=headers)


def invalid_path_param(name: str, msg: str, kind: str) -> ValidationException:
    """A 422 naming one bad path parameter, in the same detail format as query errors."""
    return ValidationException(detail=msg, extra=[{"source": "path", "key": name, "message": msg, "type": kind}])


def _validation_response(details: list[ErrorDetail]) -> Response[ValidationBody]:
    return Response(ValidationBody(detail=details), status_code=422)


def _invalid_query(_: Request[Any, Any, Any], exc: InvalidQuery) -> Response[ValidationBody]:
    return _validation_response([ErrorDetail(["query", param], msg, kind) for param, msg, kind in exc.errors])


def _invalid_request(_: Request[Any, Any, Any], exc: ValidationException) -> Response[ValidationBody]:
    details: list[ErrorDetail] = []
    extra = exc.extra if isinstance(exc.extra, list) else []
    for item in extra:
        if isinstance(item, dict):
            loc = [str(item.get("source") or "request"), str(item.get("key") or "")]
            msg, kind = str(item.get("message") or exc.detail), str(item.get("type") or "value_error")
            details.append(ErrorDetail(loc, msg, kind))
    if not details:
        details.append(ErrorDetail(["request"], exc.detail, "value_error"))
    return _validation_response(details)


def _not_found(_: Request[Any, Any, Any], exc: JobNotFound) -> Response[JSendError]:
    return jsend_error(404, str(exc))


def _too_long(_: Request[Any, Any, Any], exc: QueryTooLong) -> Response[JSendError]:
    return jsend_error(414, str(exc))


def _gone(_: Request[Any, Any, Any], exc: ResumeGone) -> Response[JSendError]:
    return jsend_error(410, str(exc))


def _unauthorized(_: Request[Any, Any, Any], exc: Unauthorized) -> Response[JSendError]:
    return jsend_error(401, exc.reason, headers={"WWW-Authenticate": challenge(exc)})


def _where(request: Request[Any, Any, Any]) -> str:
    """The request's method and decoded path for a log line, control characters escaped (no forged lines)."""
    return printable(f"{request.method} {request.url.path}")


def _unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[JSendError]:
    log.warning("store unavailable on %s: %s", _where(request), printable(str(exc)))
    return jsend_error(503, UNAVAILABLE_MESSAGE, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def _too_many_watches(_: Request[Any, Any, Any], exc: TooManyWatches) -> Response[JSendError]:
    # The caller's own bound is theirs to fix (close a stream): 429. The process's is capacity: 503.
    status = 429 if exc.per_caller else 503
    return jsend_error(status, exc.reason, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def _layout(request: Request[Any, Any, Any], exc: LayoutMismatch) -> Response[JSendError]:
    # The operator's fix is in the message (`jobreg migrate`); no Retry-After: it lasts until they act.
    log.error("refusing %s %s: %s", request.method, request.url.path, exc)
    return jsend_error(503, str(exc))


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[JSendError]:
    message = exc.detail if exc.status_code < 500 else "internal server error"
    return jsend_error(exc.status_code, message, headers=exc.headers)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[JSendError]:
    log.exception("unhandled error on %s", _where(request), exc_info=exc)
    return jsend_error(500, "internal server error")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    InvalidQuery: _invalid_query,
    ValidationException: _invalid_request,
    JobNotFound: _not_found,
    QueryTooLong: _too_long,
    ResumeGone: _gone,
    Unauthorized: _unauthorized,
    TooManyWatches: _too_many_watches,
    StoreUnavailable: _unavailable,
    LayoutMismatch: _layout,
    RedisConnectionError: _unavailable,
    RedisTimeoutError: _unavailable,
    HTTPException: _http_error,
    Exception: _unexpected,
}
