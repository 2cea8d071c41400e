"""Every cost decision of the query path, from cheap cardinalities: which strategy, and how each step reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from registry.query.planner import AnyBit, IdIn, IdPrefix, Members, NoBit, Plan, Predicate, Range, narrowed
from registry.settings import Settings
from registry.store import indexes

Strategy = Literal["empty", "candidates", "rank", "bitmap-collect", "bitmap-handles", "bitmap-walk"]

# Rank selection narrows the value range until this few sort-set entries are left to walk.
SELECT_STOP = 256
# A walk's estimate (matches spread evenly along the order) may be this many times too
# optimistic before collecting the matches, bounded by their total, is preferred.
WALK_RISK = 4
# What collecting costs per match (a column read in a CHECK call, its share of the sort), in
# walked sort-set entries (a ZRANGE member and a GETBIT).
COLLECT_COST = 2
# A zone-map range: its two arrays read and up to MAX_STRADDLING blocks' values decoded (~1.5 ms).
ZONE_RANGE_COST = 1000
# Bitmap operations per BSI slice in a range comparison (execute.ranges._bsi_compare).
BSI_COMPARE_OPS = 2
# Zone blocks a range may read value by value before the bit-sliced index is cheaper.
MAX_STRADDLING = 24
# What OR-ing a few bitmaps costs, in commands' worth of time (~0.1 ms for 1M jobs).
PRE_OR = 50
# Redis commands one CHECK call makes at most: a scattered candidate costs a window read and a
# Lua decode per key (~3-4 us, measured on 1,000 scattered handles at 1M jobs), so ~1.5 ms a call.
CHECK_CALLS = 400
# PAGE walks only if its estimate is at most budget / ONE_CALL_SLACK.
ONE_CALL_SLACK = 2


def driver_size(pred: Predicate, sizes: dict[str, int | None]) -> int | None:
    """Upper bound on how many jobs a predicate admits, from cheap cardinalities; None if unbounded."""
    if isinstance(pred, IdIn):
        return len(pred.ids)
    if isinstance(pred, IdPrefix):
        return sizes.get(pred.text)
    if isinstance(pred, Members):
        # A value's jobs are in a small set or, once many, a bitmap (its size is a BITCOUNT).
        return sum((sizes.get(s) or 0) + (sizes.get(b) or 0) for s, b in zip(pred.sets, pred.bitmaps, strict=True))
    return None


def choose(
    plan: Plan, sizes: dict[str, int | None], candidate_threshold: int, chunk: int | None = None
) -> tuple[Strategy, Predicate | None]:
    """Pick the execution strategy (and the driving predicate, for ``candidates``).

    - candidates: some predicate admits few jobs; check each against the other predicates
      in one bounded script per chunk, then sort the matches by their column values.
    - rank: no predicates at all, so the page is a plain rank range of the sort set.
    - bitmap-*: AND the predicates' bitmaps (ranges last: when the rest already leaves few
      jobs, those are checked against the ranges' columns instead), count them, then read
      the page by collecting (few matches), by handle (creation_order) or by walking the
      sort set (a deep offset first selects its value range by counting over the order
      field's bit-sliced index, so the walk starts near the page).
    """
    if plan.empty:
        return "empty", None
    best: tuple[int, Predicate] | None = None
    for pred in plan.predicates:
        size = driver_size(pred, sizes)
        if size is not None and (best is None or size < best[0]):
            best = (size, pred)
    if best is not None and best[0] <= candidate_threshold and candidates_pay(plan, *best, chunk):
        return "candidates", best[1]
    if not plan.predicates:
        return "rank", None
    return "bitmap-walk", None  # refined after counting, see refine()


def candidates_pay(plan: Plan, size: int, driver: Predicate, chunk: int | None) -> bool:
    """Whether checking the driver's jobs one by one beats intersecting bitmaps.

    A check costs a few script steps per candidate (a GETBIT per other filter, a column
    read), while a BITOP costs ~0.1 ms per million jobs whatever they hold. A driver that
    fits one check call (``chunk``) is checked; a larger one that is or cheaply becomes a
    bitmap (project/batch/user values) goes through bitmaps: only the matches are then
    read, by handle, by collecting or by walking, not every candidate. Unless an id or id
    prefix filter is among the others: its bitmap costs far more than testing uuids.
    """
    if chunk is None or size <= chunk or not isinstance(driver, Members):
        return True
    return any(isinstance(p, (IdIn, IdPrefix)) for p in plan.predicates)


def refine(
    plan: Plan, total: int, listed: int, collect_threshold: int, *, first: int = 0, select_offset: int | None = None
) -> Strategy:
    """After the filter bitmap is counted: read by handle, collect the matches, or walk.

    creation_order is the handle, so the bitmap itself is the order. Otherwise collecting
    reads every match's value (bounded by the total, in one round trip), while a walk
    reads about (offset + limit) * listed / total sort-set entries only if the matches are
    spread evenly along the order; when the filter correlates with it (a project's jobs
    all recent, ordered by start) the walk reads far more. So collect unless the walk's
    estimate is a small fraction of the total. ``first`` (matches with an order value) and
    ``select_offset`` (settings.select_offset) let the estimate count a deep offset's start
    rank selected over the order's bit-sliced index (walk_estimate); without them it does not.
    """
    if plan.order_zset is None:
        return "bitmap-handles"
    walk = walk_estimate(plan, total, listed, first, select_offset)
    if total <= collect_threshold and total <= WALK_RISK * walk:
        return "bitmap-collect"
    # Past the threshold, collect still when even the walk's (optimistic) estimate costs more.
    if collect_threshold and total * COLLECT_COST <= walk:
        return "bitmap-collect"
    return "bitmap-walk"


def walk_estimate(plan: Plan, total: int, listed: int, first: int, select_offset: int | None) -> float:
    """Sort-set entries a walk reads (plus its selection's cost in the same units) if the matches are
    spread evenly along the order: (offset + limit) * listed / total from rank 0. A deep offset in
    an order with a bit-sliced index (select_pays) first selects the value range holding it by
    counting (a few bitmap operations per slice), then walks at most SELECT_STOP entries of that
    range plus the page's share, whatever the offset."""
    spread = listed / max(total, 1)
    deep = select_offset is not None and plan.offset > select_offset and plan.offset < first
    if deep and plan.order_bsi is not None:
        width = indexes.RUNS_BITS if plan.order_bsi == "runs" else indexes.SECOND_BITS
        return width * TOP_SLICE_OPS * bitop_cost(listed) + SELECT_STOP + plan.limit * spread
    return (plan.offset + plan.limit) * spread


def walk_alternative(plan: Plan, total: int, listed: int, first: int) -> tuple[Literal["top", "collect"], float]:
    """How a page is read when its walk stops early (execute.walk.walk_segment), and what that costs in
    sort-set entries: selecting the matches that can hold it over the order's bit-sliced index (top_pays's
    cost, which does not depend on how the filter correlates with the order), else collecting every match."""
    collect = total * COLLECT_COST
    k = plan.offset + plan.limit
    if plan.order_bsi is not None and k <= first and k <= TOP_MAX:
        width = indexes.RUNS_BITS if plan.order_bsi == "runs" else indexes.SECOND_BITS
        top = width * TOP_SLICE_OPS * bitop_cost(listed) + (k + TOP_STOP) * COLLECT_COST
        if top < collect:
            return "top", top
    return "collect", collect


def walk_gives_up(left: int, scanned: int, matched: int, alternative: float) -> bool:
    """Whether a walk that read ``scanned`` entries and found ``matched`` matches (skipped ones included) stops
    for the alternative costing ``alternative``: its ``left`` matches still wanted, at the density seen so
    far, would read more entries than that (no match yet counts as one). The walk's estimate up front
    (walk_estimate) assumes matches spread evenly along the order, which a filter whose matches sit at the
    far end of the order (a project's old jobs in a time order that new jobs fill at its front) belies.

    Not before the walk has read 1 / WALK_RISK of what the alternative costs, though: a barren stretch at
    its start (the newest jobs at the front of updated_at, outside a date filter, then the matches densely)
    is no proof that the rest is as sparse. So a walk that ends within that costs what it did, and one
    that stops costs at most (1 + 1 / WALK_RISK) times the alternative, plus what the projection misjudged."""
    return scanned * WALK_RISK >= alternative and left * scanned / max(matched, 1) > alternative


def check_ranges(few: int, ranges: Sequence[Range], plan: Plan, listed: int, settings: Settings) -> bool:
    """Whether to check the jobs the other filters leave against the range columns.

    Checking reads each job's range and order columns in CHECK calls; building the ranges'
    bitmaps costs a zone map read (a few straddling blocks decoded) or a bit-sliced comparison
    (a few BITOPs per bit of the value) per range, and then the page is read from the AND-ed
    bitmap, by selecting its top over the order's BSI at worst (or collecting the matches).
    """
    if few > settings.candidate_threshold:
        return False
    check = (
        few * check_calls(ranges, plan.order_column) * COLLECT_COST
    )  # a CHECK read costs what a collected match does
    page: float = few * COLLECT_COST
    if plan.order_bsi is not None:
        width = indexes.RUNS_BITS if plan.order_bsi == "runs" else indexes.SECOND_BITS
        top = width * TOP_SLICE_OPS * bitop_cost(listed) + (plan.offset + plan.limit + TOP_STOP) * COLLECT_COST
        page = min(page, top)
    return check <= sum(range_bitmap_cost(r, listed) for r in ranges) + page


def range_bitmap_cost(pred: Range, listed: int) -> float:
    """What building one range's bitmap costs, in commands' worth of time (see execute.ranges)."""
    if zone_map_tried(pred):
        return ZONE_RANGE_COST + 2 * bitop_cost(listed)
    return indexes.RUNS_BITS * BSI_COMPARE_OPS * bitop_cost(listed)


def scan_pays(plan: Plan, total: int, listed: int, settings: Settings) -> bool:
    """Whether to scan in handle order (see execute.scan) rather than walk the sort set or read every match.

    A scan reads the page's matches plus the rest of the blocks they sit in; a walk reads
    (offset + limit) * listed / total sort-set entries (``listed`` 0: no walk to compare with).
    """
    if plan.order.value not in indexes.ZONE_FIELDS or plan.nonnull is not None:
        return False  # nullable orders end with their nulls, which no zone bounds
    k = plan.offset + plan.limit
    if k > settings.select_offset:
        return False
    if not listed:
        return True
    scan = k + total / listed * indexes.ZONE_SIZE
    walk = k * listed / max(total, 1)
    return walk > 2 * scan


def select_pays(plan: Plan, skip: int, settings: Settings) -> bool:
    """Whether a deep offset first selects its start rank by counting over the order's bit-sliced index."""
    return skip > settings.select_offset and plan.order_bsi is not None


def zone_map_tried(pred: Range) -> bool:
    """Whether a range tries the zone map before the bit-sliced index (runs has no zone map)."""
    return pred.field in indexes.ZONE_FIELDS


def zone_map_pays(straddling: int) -> bool:
    """Whether the blocks straddling a range's bounds are few enough to read value by value."""
    return straddling <= MAX_STRADDLING


def one_call_pays(plan: Plan, sizes: dict[str, int | None], strategy: Strategy, budget: int) -> bool:
    """Whether to try the whole query in one PAGE call (execute.onecall) before the chunked path.

    It builds the filter from bitmaps server-side (BITOPs, ~0.1 ms per million jobs each) and
    walks at most ``budget`` sort-set entries; ranges and id filters stay on the chunked path
    (their bitmaps take many calls), and so do member sets too large to set bit by bit here.
    """
    if budget <= 0 or strategy not in ("rank", "bitmap-walk"):
        return False
    small = 0
    for pred in plan.predicates:
        if isinstance(pred, Members):
            small += sum(sizes.get(s) or 0 for s, b in zip(pred.sets, pred.bitmaps, strict=True) if not sizes.get(b))
        elif not isinstance(pred, (AnyBit, NoBit)):
            return False
    return small <= budget // ONE_CALL_SLACK  # a SETBIT each


def one_call_collect_limit(budget: int) -> int:
    """The most matches PAGE collects (instead of a walk it did not try): each costs its order value's
    read and a share of selecting the page (lua/checklib.lua order_page: the keys at the page's ends
    selected, only the page's window sorted and its uuids read), besides the filter's BITOPs; measured
    at 1M jobs, 712 and 761 matches took 1.4 and 2.0 ms in one call."""
    return budget * 3 // 4


def one_call_walk_limit(budget: int) -> int:
    """The largest walk estimate PAGE tries: a walk may read a few times its estimate
    (matches are rarely spread evenly), and one that runs out of budget is resumed."""
    return budget // ONE_CALL_SLACK


def pick_pays(plan: Plan, driver: Predicate | None, sizes: dict[str, int | None], budget: int) -> bool:
    """Whether a candidates query runs in one PICK call (execute.onecall): its driver is a few
    small member sets, an id prefix or a list of ids whose jobs, times the reads each needs, fit
    ``budget``, and every other filter is one PICK's program can test."""
    if budget <= 0 or not isinstance(driver, (Members, IdPrefix, IdIn)):
        return False
    if isinstance(driver, Members) and any(sizes.get(b) for b in driver.bitmaps):
        return False
    others = [narrowed(p, sizes) for p in plan.predicates if p is not driver]
    if isinstance(driver, IdPrefix) and plan.order.value == "id" and not others:
        # The prefix's range of the id sort set is in the order: the page is a rank range of it.
        return plan.offset + plan.limit <= budget
    if not all(isinstance(p, (AnyBit, NoBit, Members, Range)) for p in others):
        return False  # PICK's program has ops for these only (ids are tested in Python)
    size = driver_size(driver, sizes) or 0
    # PICK ORs a list of statuses or origins into one bitmap first (a BITOP, costed as PRE_OR):
    # one bit test per candidate; and when it pays, every bitmap filter into one (pick_combines).
    ors = [p for p in others if isinstance(p, AnyBit) and len(p.keys) > 1]
    bits = [p for p in others if isinstance(p, AnyBit)]
    built = len(ors)
    if pick_combines(len(bits), size):
        tested: list[Predicate] = [AnyBit(("",)), *[p for p in others if not isinstance(p, AnyBit)]]
        built += 1
    else:
        tested = [AnyBit(p.keys[:1]) if p in ors else p for p in others]
    per = check_calls(tested, plan.order_column)
    if plan.order.value == "id" and isinstance(driver, Members):
        per += 1  # every match's uuid is read (an id prefix's members and an id list carry theirs)
    if isinstance(driver, IdIn):
        per += 1  # each id's handle is read from its record
    return size * per + PRE_OR * built <= budget


def pick_combines(bit_filters: int, candidates: int) -> bool:
    """Whether PICK ANDs its bitmap filters (each a bitmap, or a list OR-ed into one) into one bitmap
    first (a BITOP, PRE_OR), so a candidate costs one bit test instead of one per filter."""
    return bit_filters > 1 and candidates * (bit_filters - 1) > PRE_OR


def pre_or_pays(keys: int, candidates: int) -> bool:
    """Whether OR-ing a list of statuses or origins into one bitmap first (a BITOP, PRE_OR) costs
    less than reading each of its bitmaps for every candidate (scattered ones share no window)."""
    return candidates * (keys - 1) > PRE_OR


def check_calls(preds: Sequence[Predicate], order_column: str | None) -> int:
    """Redis commands checking one candidate makes at most: one read per key it tests (candidates
    far apart share no read window), plus its order value."""
    calls = 1 if order_column else 0
    for pred in preds:
        if isinstance(pred, AnyBit):
            calls += len(pred.keys)
        elif isinstance(pred, Members):
            calls += 2 * len(pred.sets)  # SISMEMBER and a bitmap read per value
        elif isinstance(pred, (NoBit, Range)):
            calls += 1
    return max(calls, 1)


def check_chunk(preds: Sequence[Predicate], order_column: str | None, walk_chunk: int) -> int:
    """Candidates per CHECK call: at most ``walk_chunk``, and few enough that the call makes
    about CHECK_CALLS commands (~1.5 us each), so no call runs much over 2 ms."""
    return max(16, min(walk_chunk, CHECK_CALLS // check_calls(preds, order_column)))


# Byte windows of the filter bitmap counted to find where its matches lie (one pipelined BITCOUNT
# each; a window of a million-job bitmap is ~1 KB).
ZONE_WINDOWS = 128


def zone_bound(plan: Plan) -> tuple[str, bool] | None:
    """The zone map that bounds the order values of the matches, so a walk starts past every
    entry no match can be: (field, upper bound wanted). None when no zone map bounds the order.

    The zone maps bound created_at, updated_at, start and end per block of handles; matches sit
    in the blocks where the filter bitmap has bits, so a DESC walk skips the entries above the
    largest bound of those blocks and an ASC walk those below the smallest (updated_at's lower
    bounds may be stale, i.e. too low: a shorter skip, never a wrong one).
    """
    field = plan.order.value
    if field in indexes.ZONE_FIELDS:
        return field, plan.desc
    return None


# TOP stops narrowing once this few candidates are left in its value range (they are read).
TOP_STOP = 64
# The deepest page (offset + limit) TOP selects: it reads that many values.
TOP_MAX = 2000
# Bitmap operations per BSI slice in TOP (an AND, a BITCOUNT, an XOR or two ORs).
TOP_SLICE_OPS = 3


def bitop_cost(listed: int) -> float:
    """What one BITOP or BITCOUNT over every listed job costs, in commands' worth of time."""
    return max(1.0, PRE_OR * listed / 1_000_000)


def top_pays(plan: Plan, strategy: Strategy, total: int, listed: int, first: int) -> bool:
    """Whether to select the matches that can hold the page by counting over the order's bit-sliced
    index (execute.top), then read only their values, rather than collect every match or walk.

    Its cost does not depend on how the filter correlates with the order: a few bitmap operations
    per bit of the value, then offset + limit (and a few more) values read. The walk's estimate
    assumes matches spread evenly along the order; collecting reads every match's value.
    """
    k = plan.offset + plan.limit
    if plan.order_bsi is None or k > first or k > TOP_MAX:
        return False
    width = indexes.RUNS_BITS if plan.order_bsi == "runs" else indexes.SECOND_BITS
    top = width * TOP_SLICE_OPS * bitop_cost(listed) + (k + TOP_STOP) * COLLECT_COST
    other = total * COLLECT_COST if strategy == "bitmap-collect" else k * listed / max(total, 1)
    return top < other


def top_slices(listed: int) -> int:
    """BSI slices per TOP call, so that a call makes about CHECK_CALLS commands' worth of work."""
    return max(1, int(CHECK_CALLS / (TOP_SLICE_OPS * bitop_cost(listed))))
