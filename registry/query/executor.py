"""The executor: reads a plan's cardinalities, lets the cost model pick a strategy, and runs that strategy's step."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from registry.domain.fold import to_detail, to_job
from registry.domain.model import Job, JobDetail, JobState
from registry.keys import Keys
from registry.query import cost
from registry.query.context import QueryContext
from registry.query.execute.bitmap import run_bitmap
from registry.query.execute.candidates import run_candidates
from registry.query.execute.counts import run_counts, zero_counts
from registry.query.execute.onecall import run_one_call, run_pick
from registry.query.planner import IdPrefix, Members, Plan, Predicate, prune
from registry.query.scripts import Scripts
from registry.query.spec import Counts, Page
from registry.settings import Settings
from registry.store import record


class Executor:
    """Runs plans against one Redis client with bounded calls; returns exact totals and pages."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, settings: Settings) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.scripts = Scripts(redis)

    def _context(self) -> QueryContext:
        return QueryContext(self.redis, self.keys, self.settings, self.scripts)

    async def run(self, plan: Plan) -> Page:
        """The plan's exact total and page of job ids, in order."""
        if plan.empty:
            return Page(total=0, job_ids=[], strategy="empty")  # known empty without asking Redis anything
        await self.scripts.load()
        sizes = await self._sizes(plan.predicates)
        plan = prune(plan, sizes)
        strategy, driver = cost.choose(plan, sizes, self.settings.candidate_threshold, self.settings.walk_chunk)
        if strategy == "empty":
            return Page(total=0, job_ids=[], strategy="empty")
        async with self._context() as ctx:
            if cost.one_call_pays(plan, sizes, strategy, self.settings.one_call_budget):
                return await run_one_call(ctx, plan, sizes, no_filter=strategy == "rank")
            if strategy == "candidates" and cost.pick_pays(plan, driver, sizes, self.settings.one_call_budget):
                assert isinstance(driver, (Members, IdPrefix))
                page = await run_pick(ctx, plan, driver, sizes)
                if page is not None:
                    return page
            if strategy == "candidates":
                assert driver is not None
                return await run_candidates(ctx, plan, driver, sizes)
            return await run_bitmap(ctx, plan, sizes, no_filter=strategy == "rank")

    async def counts(self, plan: Plan) -> Counts:
        """Exact counts by status and origin of the jobs the plan's filters match (ordering and paging ignored)."""
        if plan.empty:
            return zero_counts()
        await self.scripts.load()
        sizes = await self._sizes(plan.predicates)
        plan = prune(plan, sizes)
        if plan.empty:
            return zero_counts()
        async with self._context() as ctx:
            return await run_counts(ctx, plan, sizes)

    async def jobs(self, job_ids: Sequence[str]) -> list[Job | None]:
        """Records of these jobs, rendered; None for unknown or not-yet-created ones."""
        return [to_job(state, h) if state else None for state, h in await self._states(job_ids)]

    async def details(self, job_ids: Sequence[str]) -> list[JobDetail | None]:
        """These jobs in full (results link and sequence included); None for unknown or not-yet-created ones."""
        return [to_detail(state, h) if state else None for state, h in await self._states(job_ids)]

    async def _states(self, job_ids: Sequence[str]) -> list[tuple[JobState | None, int]]:
        """Each job's folded state and handle, in one script call; (None, 0) for unknown or unlisted ones."""
        await self.scripts.load()
        if not job_ids:
            return []
        reply = await self.scripts.records([self.keys.job(job_id) for job_id in job_ids])
        return [
            (record.decode_state(s, job_id), int(h)) if h and s else (None, 0)
            for job_id, h, s in zip(job_ids, reply[::2], reply[1::2], strict=True)
        ]

    async def _sizes(self, predicates: Sequence[Predicate]) -> dict[str, int | None]:
        """Sizes of the candidate sources: SCARD, BITCOUNT of member bitmaps, ZLEXCOUNT."""
        pipe = self.redis.pipeline(transaction=False)
        names: list[str] = []
        for pred in predicates:
            if isinstance(pred, Members):
                for s, b in zip(pred.sets, pred.bitmaps, strict=True):
                    pipe.scard(s)
                    pipe.bitcount(b)
                    names += [s, b]
            elif isinstance(pred, IdPrefix):
                pipe.zlexcount(self.keys.sort("id"), *pred.lex_bounds())  # type: ignore[no-untyped-call]
                names.append(pred.text)
        if not names:
            return {}
        return dict(zip(names, await pipe.execute(), strict=True))
