"""The one-call cost decisions: which plans PAGE and PICK take, bounded by the command budget."""

from __future__ import annotations

from registry.domain.model import Status
from registry.keys import Keys
from registry.query import cost
from registry.query.planner import AnyBit, Members, narrowed, plan
from registry.query.spec import Direction, JobQuery, OrderBy

KEYS = Keys("t")


def _sizes(q: JobQuery, size: int) -> dict[str, int | None]:
    p = plan(q, KEYS)
    out: dict[str, int | None] = {}
    for pred in p.predicates:
        if isinstance(pred, Members):
            out.update({s: size for s in pred.sets})
            out.update({b: 0 for b in pred.bitmaps})
    return out


def test_pick_budget_counts_commands_per_candidate() -> None:
    q = JobQuery(project_ids=("p",), order_by=OrderBy.RUNS)
    p = plan(q, KEYS)
    driver = p.predicates[0]
    assert cost.pick_pays(p, driver, _sizes(q, 999), 1000)  # one column read each
    assert not cost.pick_pays(p, driver, _sizes(q, 1001), 1000)
    # Three status bitmaps and the column: four reads per candidate when checked in chunks; PICK
    # ORs the three first (PRE_OR), then tests one bit and reads the column.
    q3 = JobQuery(project_ids=("p",), statuses=tuple(Status)[:3])
    p3 = plan(q3, KEYS)
    assert cost.check_calls([p3.predicates[1]], p3.order_column) == 4
    fits = (1000 - cost.PRE_OR) // 2
    assert cost.pick_pays(p3, p3.predicates[0], _sizes(q3, fits), 1000)
    assert not cost.pick_pays(p3, p3.predicates[0], _sizes(q3, fits + 1), 1000)
    assert not cost.pick_pays(p, driver, _sizes(q, 1), 0)  # budget 0: the one-call path is off


def test_check_chunks_stay_near_the_command_budget() -> None:
    p = plan(JobQuery(statuses=tuple(Status)[:4]), KEYS)
    per = cost.check_calls(p.predicates, p.order_column)
    assert per == 5
    assert cost.check_chunk(p.predicates, p.order_column, 1000) == cost.CHECK_CALLS // per
    assert cost.check_chunk(p.predicates, p.order_column, 50) == 50
    assert cost.check_chunk(list(p.predicates) * 100, p.order_column, 1000) == 16  # never below 16


def test_page_takes_bitmap_filters_only() -> None:
    ranged = plan(JobQuery(statuses=None, min_runs=3), KEYS)
    assert not cost.one_call_pays(ranged, {}, "bitmap-walk", 1000)
    bits = plan(JobQuery(errors=True), KEYS)
    assert cost.one_call_pays(bits, {}, "bitmap-walk", 1000)
    assert not cost.one_call_pays(bits, {}, "bitmap-walk", 0)
    assert not cost.one_call_pays(bits, {}, "candidates", 1000)


def test_zone_maps_bound_walks_of_time_orders() -> None:
    def bound(order: OrderBy, desc: bool) -> tuple[str, bool] | None:
        direction = Direction.DESC if desc else Direction.ASC
        return cost.zone_bound(plan(JobQuery(errors=True, order_by=order, direction=direction), KEYS))

    assert bound(OrderBy.START_TIMESTAMP, True) == ("start_timestamp", True)
    assert bound(OrderBy.CREATED_AT, False) == ("created_at", False)
    # updated_at has its own zone map (layout 8): both directions are bounded by it.
    assert bound(OrderBy.UPDATED_AT, False) == ("updated_at", False)
    assert bound(OrderBy.UPDATED_AT, True) == ("updated_at", True)
    assert bound(OrderBy.RUNS, True) is None
    assert bound(OrderBy.ID, False) is None


def test_collect_past_the_threshold_when_even_the_walk_estimate_costs_more() -> None:
    p = plan(JobQuery(errors=True, order_by=OrderBy.RUNS, offset=1000, limit=100), KEYS)
    # 12,000 matches of 1,000,000 jobs: the walk's estimate is 1,100 * 83 = 91,667 entries.
    assert cost.refine(p, 12_000, 1_000_000, 8000) == "bitmap-collect"
    assert cost.refine(p, 60_000, 1_000_000, 8000) == "bitmap-walk"  # 18,333 entries: walk
    assert cost.refine(p, 12_000, 1_000_000, 0) == "bitmap-walk"  # collecting is off


def test_top_selection_beats_reading_every_match_or_a_long_walk() -> None:
    p = plan(JobQuery(errors=True, order_by=OrderBy.START_TIMESTAMP, offset=0, limit=100), KEYS)
    # 7,000 matches of a million: collecting reads 7,000 values, a walk ~14,000 entries; TOP
    # costs 34 slices of a few bitmap operations and ~164 values.
    assert cost.top_pays(p, "bitmap-collect", 7000, 1_000_000, 7000)
    assert cost.top_pays(p, "bitmap-walk", 7000, 1_000_000, 7000)
    assert not cost.top_pays(p, "bitmap-walk", 500_000, 1_000_000, 500_000)  # a 200-entry walk
    assert not cost.top_pays(p, "bitmap-collect", 300, 1_000_000, 300)  # 300 values
    assert not cost.top_pays(p, "bitmap-walk", 7000, 1_000_000, 50)  # the page reaches the nulls
    deep = plan(JobQuery(errors=True, order_by=OrderBy.RUNS, offset=cost.TOP_MAX), KEYS)
    assert not cost.top_pays(deep, "bitmap-walk", 7000, 1_000_000, 7000)  # deeper than TOP reads
    by_id = plan(JobQuery(errors=True, order_by=OrderBy.ID), KEYS)
    assert not cost.top_pays(by_id, "bitmap-walk", 7000, 1_000_000, 7000)  # no BSI
    assert cost.top_slices(1_000_000) < cost.top_slices(10_000)  # calls stay short as bitmaps grow


def test_a_deep_offset_over_a_bsi_order_walks_from_its_selected_start_instead_of_collecting() -> None:
    p = plan(JobQuery(errors=True, order_by=OrderBy.RUNS, offset=50_000, limit=100), KEYS)
    # From rank 0 the walk would read 50,100 * 16.7 entries: collecting 60,000 matches costs less.
    assert cost.refine(p, 60_000, 1_000_000, 8000) == "bitmap-collect"
    # Selected by counting over the runs BSI, the walk starts near the page: a few thousand entries' worth.
    assert cost.walk_estimate(p, 60_000, 1_000_000, 60_000, 5000) < 10_000
    assert cost.refine(p, 60_000, 1_000_000, 8000, first=60_000, select_offset=5000) == "bitmap-walk"
    # Past the matches with a value (a nullable order's nulls), or in an order without a BSI: no selection.
    nulls = plan(JobQuery(errors=True, order_by=OrderBy.START_TIMESTAMP, offset=50_000, limit=100), KEYS)
    assert cost.refine(nulls, 60_000, 1_000_000, 8000, first=40_000, select_offset=5000) == "bitmap-collect"
    by_id = plan(JobQuery(errors=True, order_by=OrderBy.ID, offset=50_000, limit=100), KEYS)
    assert cost.refine(by_id, 60_000, 1_000_000, 8000, first=60_000, select_offset=5000) == "bitmap-collect"


def test_members_indexed_by_bitmaps_alone_are_checked_as_bit_tests() -> None:
    """A project whose values are all bitmaps costs PICK one bit test each, not a SISMEMBER and a bit."""
    q = JobQuery(user_ids=("u",), project_ids=("p1", "p2"), order_by=OrderBy.RUNS)
    p = plan(q, KEYS)
    projects, users = p.predicates
    assert isinstance(users, Members) and isinstance(projects, Members)
    bitmaps = {b: 5000 for b in projects.bitmaps} | {s: 0 for s in projects.sets}
    assert narrowed(projects, bitmaps) == AnyBit(projects.bitmaps)
    mixed = {**bitmaps, projects.sets[0]: 10, projects.bitmaps[0]: 0}  # p1 still a small set
    assert narrowed(projects, mixed) == projects
    assert narrowed(users, bitmaps) is users  # sizes unknown: left as it is
    sizes = {users.sets[0]: 400, users.bitmaps[0]: 0, **bitmaps}
    # The user's 400 jobs: a column read and one bit test of the OR-ed bitmaps each, plus the OR;
    # as set tests (SISMEMBER and a bit per value): 2 * 2 + 1.
    assert cost.pick_pays(p, users, sizes, 400 * 2 + cost.PRE_OR)
    assert not cost.pick_pays(p, users, {**sizes, **mixed}, 400 * 5 - 1)


def test_a_walk_stops_once_the_density_it_sees_says_the_alternative_costs_less() -> None:
    p = plan(JobQuery(errors=True, order_by=OrderBy.CREATED_AT, direction=Direction.DESC, limit=100), KEYS)
    # 200,000 matches of a million: the page's 100 are expected within ~500 entries, so the walk is
    # chosen; its alternative is selecting the top over the created BSI (34 slices, ~164 values read).
    kind, alternative = cost.walk_alternative(p, 200_000, 1_000_000, 200_000)
    assert kind == "top" and alternative < 200_000 * cost.COLLECT_COST
    assert not cost.walk_gives_up(100, 2000, 400, alternative)  # as dense as expected: walk on
    assert cost.walk_gives_up(100, 2000, 0, alternative)  # no match in two chunks: stop
    assert cost.walk_gives_up(100, 2000, 10, alternative)  # 1 in 200: 20,000 entries more
    assert not cost.walk_gives_up(1, 2000, 0, alternative)  # one match left: still cheaper to walk on
    # A barren first chunk alone is no proof: the walk reads a quarter of the alternative's cost first.
    assert not cost.walk_gives_up(100, 1000, 0, alternative)
    assert alternative / cost.WALK_RISK > 1000
    by_id = plan(JobQuery(errors=True, order_by=OrderBy.ID), KEYS)
    assert cost.walk_alternative(by_id, 300, 1_000_000, 300) == ("collect", 300 * cost.COLLECT_COST)  # no BSI
    nulls = plan(JobQuery(errors=True, order_by=OrderBy.END_TIMESTAMP), KEYS)
    assert cost.walk_alternative(nulls, 9000, 1_000_000, 50)[0] == "collect"  # the page reaches the nulls
