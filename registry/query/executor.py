"""The executor: reads a plan's cardinalities, lets the cost model pick a strategy, and runs that strategy's step."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from functools import wraps
from typing import Any, Concatenate, ParamSpec, TypeVar

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from registry.domain.model import Job, JobDetail
from registry.keys import Keys
from registry.live.changes import ORIGIN, Position, current_position
from registry.query import cost
from registry.query.context import QueryContext
from registry.query.execute.bitmap import run_bitmap
from registry.query.execute.candidates import run_candidates
from registry.query.execute.counts import run_counts, run_total, zero_counts
from registry.query.execute.onecall import run_one_call, run_pick
from registry.query.page_call import reply_position
from registry.query.planner import IdIn, IdPrefix, Members, Plan, Predicate, prune
from registry.query.scripts import Scripts
from registry.query.spec import Counts, Page
from registry.settings import Settings
from registry.store import record

# The job shape a renderer gives (registry/store/record.py: the list's Job, the single job's JobDetail).
_J = TypeVar("_J", bound=Job)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _reloading(
    method: Callable[Concatenate[Executor, _P], Coroutine[Any, Any, _R]],
) -> Callable[Concatenate[Executor, _P], Coroutine[Any, Any, _R]]:
    """Run ``method`` again, once, after NOSCRIPT: the server lost its script cache since the
    scripts were loaded (restarted, SCRIPT FLUSH, a replica promoted at the same address), and
    pipelined EVALSHAs do not reload by themselves. Queries only write temporary keys: safe to repeat."""

    @wraps(method)
    async def run(self: Executor, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await method(self, *args, **kwargs)
        except NoScriptError:
            self.scripts.forget()
            return await method(self, *args, **kwargs)

    return run


class Listing(msgspec.Struct, kw_only=True):
    """A list query's answer: its exact total, the page's jobs rendered, how it was answered, and
    the change log's position read at or before the page's first read (None: the filters can
    never match, nothing was read). ``version``: with partitions, the vector of their positions read
    before the page (registry/live/merged.py), where ``position`` is None."""

    total: int
    jobs: list[Job]
    strategy: str
    position: Position | None
    version: str | None = None


class Executor:
    """Runs plans against one Redis client with bounded calls; returns exact totals and pages."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, settings: Settings) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.scripts = Scripts(redis)

    def _context(self) -> QueryContext:
        return QueryContext(self.redis, self.keys, self.settings, self.scripts)

    @_reloading
    async def run(self, plan: Plan) -> Page:
        """The plan's exact total and page of job ids, in order, and the change log's position read
        at or before the page's first read (the page's records too when its one call read them)."""
        if plan.empty:
            return Page(total=0, job_ids=[], strategy="empty")  # known empty without asking Redis anything
        await self.scripts.load()
        sizes, position = await self._sizes(plan.predicates, position=True)
        plan = prune(plan, sizes)
        strategy, driver = cost.choose(plan, sizes, self.settings.candidate_threshold, self.settings.walk_chunk)
        async with self._context() as ctx:
            # PAGE and PICK read the position themselves, in the call that finds the page.
            if strategy != "empty" and cost.one_call_pays(plan, sizes, strategy, self.settings.one_call_budget):
                return await run_one_call(ctx, plan, sizes, no_filter=strategy == "rank")
            if strategy == "candidates" and cost.pick_pays(plan, driver, sizes, self.settings.one_call_budget):
                assert isinstance(driver, (Members, IdPrefix, IdIn))
                picked = await run_pick(ctx, plan, driver, sizes)
                if isinstance(picked, Page):
                    return picked
                position = position or picked
            # Any other path reads the position first (a round trip of its own only when no
            # sizes were read to go with it).
            if position is None:
                position = await current_position(self.redis, self.keys)
            if strategy == "empty":
                page = Page(total=0, job_ids=[], strategy="empty")
            elif strategy == "candidates":
                assert driver is not None
                page = await run_candidates(ctx, plan, driver, sizes)
            else:
                page = await run_bitmap(ctx, plan, sizes, no_filter=strategy == "rank")
            return msgspec.structs.replace(page, position=position)

    async def listing(self, plan: Plan) -> Listing:
        """What GET /api/v2/jobs answers: the total, the page's jobs rendered and the change log's
        position read before them; one round trip when the page's call read its records too."""
        page = await self.run(plan)
        if page.records is not None:
            rendered = _render_records(record.render_job, page.job_ids, page.records)
        else:
            rendered = await self.jobs(page.job_ids)
        jobs = [job for job in rendered if job is not None]
        return Listing(total=page.total, jobs=jobs, strategy=page.strategy, position=page.position)

    @_reloading
    async def counts(self, plan: Plan) -> Counts:
        """Exact counts by status and origin of the jobs the plan's filters match (ordering and paging ignored)."""
        if plan.empty:
            return zero_counts()
        await self.scripts.load()
        sizes, _ = await self._sizes(plan.predicates, position=False)
        plan = prune(plan, sizes)
        if plan.empty:
            return zero_counts()
        async with self._context() as ctx:
            return await run_counts(ctx, plan, sizes)

    @_reloading
    async def total(self, plan: Plan) -> int:
        """The exact number of jobs the plan's filters match (ordering and paging ignored)."""
        if plan.empty:
            return 0
        await self.scripts.load()
        sizes, _ = await self._sizes(plan.predicates, position=False)
        plan = prune(plan, sizes)
        if plan.empty:
            return 0
        async with self._context() as ctx:
            return await run_total(ctx, plan, sizes)

    async def jobs(self, job_ids: Sequence[str]) -> list[Job | None]:
        """Records of these jobs, rendered; None for unknown or not-yet-created ones."""
        return await self._rendered(record.render_job, job_ids)

    async def details(self, job_ids: Sequence[str]) -> list[JobDetail | None]:
        """These jobs in full (results link and sequence included); None for unknown or not-yet-created ones."""
        return await self._rendered(record.render_detail, job_ids)

    @_reloading
    async def _rendered(
        self, render: Callable[[bytes, str, int], _J | None], job_ids: Sequence[str]
    ) -> list[_J | None]:
        """These jobs' records, read in one script call and rendered; None for unknown or unlisted ones."""
        await self.scripts.load()
        if not job_ids:
            return []
        flat = await self.scripts.records([self.keys.job(job_id) for job_id in job_ids])
        return _render_records(render, job_ids, flat)

    async def _sizes(
        self, predicates: Sequence[Predicate], *, position: bool
    ) -> tuple[dict[str, int | None], Position | None]:
        """Sizes of the candidate sources: SCARD, BITCOUNT of member bitmaps, ZLEXCOUNT; and, when
        asked and some size is read, the change log's position in the same round trip (else None)."""
        pipe = self.redis.pipeline(transaction=False)
        names: list[str] = []
        for pred in predicates:
            if isinstance(pred, Members):
                for s, b in zip(pred.sets, pred.bitmaps, strict=True):
                    pipe.scard(s)
                    pipe.bitcount(b)
                    names += [s, b]
            elif isinstance(pred, IdPrefix):
                self.scripts.sortread_on(pipe, self.keys.sort("id"), "lexcount", *pred.lex_bounds())
                names.append(pred.text)
        if not names:
            return {}, None
        if position:
            pipe.xrevrange(self.keys.changes, count=1)
        replies = await pipe.execute()
        sizes = dict(zip(names, replies, strict=False))
        if not position:
            return sizes, None
        last = replies[-1]
        return sizes, reply_position(last[0][0]) if last else ORIGIN


def _render_records(
    render: Callable[[bytes, str, int], _J | None], job_ids: Sequence[str], flat: Sequence[Any]
) -> list[_J | None]:
    """Flat (handle, state) pairs of these jobs' records (RECORDS, PAGE, PICK: one pair per id, in
    order), rendered; None for unknown or unlisted jobs. The stored state leaves the job's id out
    (registry/store/record.py), so the renderer is given it."""
    return [
        render(s, job_id, int(h)) if h and s else None
        for job_id, h, s in zip(job_ids, flat[::2], flat[1::2], strict=True)
    ]
