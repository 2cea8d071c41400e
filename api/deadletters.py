"""Admin routes over the dead-letter stream: list entries with their reasons (paged), replay some or all."""

from __future__ import annotations

import logging
import re

import msgspec
from litestar import Controller, get, post
from litestar.exceptions import PermissionDeniedException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, Parameter

from api.auth import CurrentPrincipal
from api.controllers import Success
from api.errors import JSendError, ValidationBody
from api.services import ServicesDep
from registry.auth.principal import Principal
from registry.ops.text import printable
from registry.wire import deadletter

log = logging.getLogger("jobreg.api.deadletters")

# A stream entry id (`ms-seq`, or `ms` alone as Redis accepts): anything else would be a Redis error.
ENTRY_ID_RE = re.compile(r"[0-9]{1,20}(-[0-9]{1,20})?")
MAX_PAGE = 100
MAX_REPLAY_IDS = 1000
# An entry can carry 64 KiB values and thousands of fields (that may be why it is here): the list
# shows a readable excerpt; `jobreg dead-letters` and replay always work on the whole entry.
MAX_VALUE_CHARS = 1024
MAX_FIELDS = 100


class DeadLetterView(msgspec.Struct, kw_only=True):
    id: str  # the dead-letter entry's id (what replay takes)
    source_id: str  # the original entry's id in the events stream
    error: str  # why it was dead-lettered
    fields: dict[str, str]  # the original fields (values cut at MAX_VALUE_CHARS, at most MAX_FIELDS)
    truncated: bool  # some value or field was left out of ``fields``


class DeadLetterPagination(msgspec.Struct, kw_only=True):
    total: int  # entries in the dead-letter stream
    next: str | None  # pass as ``after`` for the next page; null on the last page


class DeadLetterPage(Success, kw_only=True):
    data: list[DeadLetterView]
    pagination: DeadLetterPagination


class ReplayRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Either ``ids`` (entries to replay) or ``all: true``; not both, not neither."""

    ids: list[str] | None = None
    all: bool = False


class ReplayedData(msgspec.Struct):
    replayed: int


class ReplayedBody(Success, kw_only=True):
    data: ReplayedData


def view(d: deadletter.DeadLetter) -> DeadLetterView:
    items = list(d.fields.items())
    cut = len(items) > MAX_FIELDS or any(len(v) > MAX_VALUE_CHARS for _, v in items)
    fields = {k: v if len(v) <= MAX_VALUE_CHARS else v[:MAX_VALUE_CHARS] + "…" for k, v in items[:MAX_FIELDS]}
    return DeadLetterView(id=d.id, source_id=d.source_id, error=d.error, fields=fields, truncated=cut)


def _invalid(source: str, errors: list[tuple[str, str]]) -> ValidationException:
    """A 422 naming every offending (parameter, message), in the API's usual detail format."""
    extra = [{"source": source, "key": key, "message": msg, "type": "value_error"} for key, msg in errors]
    return ValidationException(detail="; ".join(msg for _, msg in errors), extra=extra)


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        # Dead letters hold any project's raw events, and replay writes to the events stream.
        raise PermissionDeniedException("dead letters need an operator (admin) token")


_ERRORS = {
    401: ResponseSpec(JSendError, description="Missing or invalid bearer token"),
    403: ResponseSpec(JSendError, description="Not an operator (admin) token"),
    422: ResponseSpec(ValidationBody, description="Invalid parameters, every offending one named"),
    503: ResponseSpec(JSendError, description="Redis unreachable; retry after Retry-After seconds"),
}
_BODY_ERRORS = {**_ERRORS, 400: ResponseSpec(JSendError, description="A request body that is not JSON")}


class DeadLetterController(Controller):
    path = "/api/v2/dead-letters"
    tags = ["ops"]  # noqa: RUF012 (Litestar reads it as a class attribute)

    @get(summary="List dead letters (admins)", responses=_ERRORS)
    async def list_dead_letters(
        self,
        services: ServicesDep,
        principal: CurrentPrincipal,
        after: str | None = Parameter(default=None, description="Entry id of the last entry already seen"),
        limit: int = Parameter(default=50, description=f"Page size, 1..{MAX_PAGE}"),
    ) -> DeadLetterPage:
        """Oldest first, each with its reason and original fields; page on with ``after=pagination.next``."""
        _require_admin(principal)
        errors: list[tuple[str, str]] = []
        if after is not None and not ENTRY_ID_RE.fullmatch(after):
            errors.append(("after", "not a stream entry id (ms-seq)"))
        if not 1 <= limit <= MAX_PAGE:
            errors.append(("limit", f"must be between 1 and {MAX_PAGE}"))
        if errors:
            raise _invalid("query", errors)
        redis, keys = services.redis, services.keys
        # One more than the page tells whether there is a next page; "(" makes the cursor exclusive.
        rows = await deadletter.list_dead(redis, keys, count=limit + 1, start="-" if after is None else f"({after}")
        total = int(await redis.xlen(keys.dead))
        page = rows[:limit]
        more = len(rows) > limit
        return DeadLetterPage(
            data=[view(d) for d in page],
            pagination=DeadLetterPagination(total=total, next=page[-1].id if more and page else None),
        )

    @post("/replay", summary="Replay dead letters (admins)", status_code=200, responses=_BODY_ERRORS)
    async def replay_dead_letters(
        self, services: ServicesDep, principal: CurrentPrincipal, data: JSONBody[ReplayRequest]
    ) -> ReplayedBody:
        """Re-publish the entries to the events stream and delete them here; one still invalid comes back."""
        _require_admin(principal)
        if data.all == (data.ids is not None):
            raise _invalid("body", [("ids", "give either ids or all: true")])
        ids = data.ids
        if ids is not None:
            if not ids or len(ids) > MAX_REPLAY_IDS:
                raise _invalid("body", [("ids", f"give 1 to {MAX_REPLAY_IDS} entry ids")])
            bad = next((i for i in ids if not ENTRY_ID_RE.fullmatch(i)), None)
            if bad is not None:
                raise _invalid("body", [("ids", f"not a stream entry id: {printable(bad[:64])}")])
        n = await deadletter.replay(services.redis, services.keys, ids)
        who = printable(principal.user_id) or "(auth off)"
        log.info("%s replayed %d dead letter(s)%s", who, n, "" if ids is None else f" of {len(ids)} requested")
        return ReplayedBody(data=ReplayedData(replayed=n))
