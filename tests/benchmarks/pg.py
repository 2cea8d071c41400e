"""PostgreSQL baseline for the benchmarks: schema, bulk load, and GET /api/v2/jobs as SQL.

Usage::

    conn = connect()                          # autocommit, server-side prepares disabled
    stats = load(conn, make_plan(1_000_000))  # drop/create, COPY, indexes, VACUUM ANALYZE
    total, ids = run(conn, [("project_id", pid), ("status", "DONE"), ("limit", "100")])
    sizes = relation_bytes(conn)              # table + indexes on disk

The table lives in schema ``jobreg_bench`` (dropped and recreated by :func:`load`). Queries
take the API's query parameters as ``(name, value)`` pairs, list parameters repeated, exactly
as in CONTRACT.md section 3; they are assumed valid (the benchmark only sends valid ones).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb
from tqdm import tqdm

from tests.benchmarks.datagen import Plan, iter_jobs, to_datetime

DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
SCHEMA = "jobreg_bench"
TABLE = f"{SCHEMA}.jobs"

Params = Sequence[tuple[str, str]]

_CREATE = f"""
DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
CREATE SCHEMA {SCHEMA};
CREATE TABLE {TABLE} (
    id              uuid        NOT NULL,
    parent_id       uuid,
    batch_id        uuid        NOT NULL,
    project_id      uuid        NOT NULL,
    user_id         text        NOT NULL,
    status          text        NOT NULL,
    runs            integer     NOT NULL CHECK (runs >= 1),
    origin          text        NOT NULL,
    errors          text[]      NOT NULL DEFAULT '{{}}',
    has_errors      boolean     GENERATED ALWAYS AS (cardinality(errors) > 0) STORED,
    variables       jsonb,
    creation_order  bigint      NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    start_timestamp timestamptz,
    end_timestamp   timestamptz
);
CREATE TABLE {SCHEMA}.meta (n_jobs bigint NOT NULL, seed bigint NOT NULL);
"""

_COLUMNS = (
    "id", "parent_id", "batch_id", "project_id", "user_id", "status", "runs", "origin",
    "errors", "variables", "creation_order", "created_at", "updated_at", "start_timestamp",
    "end_timestamp",
)  # fmt: skip
_SELECT_COLUMNS = ", ".join(_COLUMNS)

#: Indexes, built after the COPY. Rationale: a list page is "filter, order by (key, id),
#: limit 100" plus an exact COUNT(*), so each index puts the equality filters first and the
#: sort key + id after them; PostgreSQL then reads a page by walking the index in order and
#: stopping after offset+limit rows, and counts with an index-only scan (the table is
#: vacuumed, so the visibility map is set). Trailing ``id`` makes the order total (the API's
#: tie-break) so no sort step is needed.
INDEXES: dict[str, str] = {
    # GET /jobs/{id}, id lists, and id__starts_with (translated to a uuid range).
    "jobs_pkey": f"ALTER TABLE {TABLE} ADD CONSTRAINT jobs_pkey PRIMARY KEY (id)",
    # Default order (created_at DESC) with no or weakly selective filters: walk and filter.
    "jobs_created": f"CREATE INDEX jobs_created ON {TABLE} (created_at, id)",
    # status filters (the most common operator query) in the default order; counts per status.
    "jobs_status_created": f"CREATE INDEX jobs_status_created ON {TABLE} (status, created_at, id)",
    # The SDK's bread and butter: one project, optionally a status, default order.
    "jobs_project_status_created": f"CREATE INDEX jobs_project_status_created ON {TABLE} "
    "(project_id, status, created_at, id)",
    # Project + order_by=runs or a runs range (min_runs/max_runs).
    "jobs_project_runs": f"CREATE INDEX jobs_project_runs ON {TABLE} (project_id, runs, id)",
    # get_batch_jobs: batch_id list ordered by creation_order.
    "jobs_batch_order": f"CREATE INDEX jobs_batch_order ON {TABLE} (batch_id, creation_order)",
    # One user's jobs in a start_date window.
    "jobs_user_start": f"CREATE INDEX jobs_user_start ON {TABLE} (user_id, start_timestamp)",
    # order_by=updated_at ("recently active" views: running/pending jobs).
    "jobs_updated": f"CREATE INDEX jobs_updated ON {TABLE} (updated_at, id)",
    # errors=true is ~8% of rows: a small partial index in the default order.
    "jobs_errors_created": f"CREATE INDEX jobs_errors_created ON {TABLE} (created_at, id) WHERE has_errors",
    # One user's jobs in the default order.
    "jobs_user_created": f"CREATE INDEX jobs_user_created ON {TABLE} (user_id, created_at, id)",
}
# Every other order, alone and within a project (the SDK's scope), so that any order_by walks
# an index instead of sorting: (key, id) serves ASC forwards and DESC backwards. A backward
# scan of a nullable key's index gives NULLS FIRST, so DESC NULLS LAST gets its own index.
for _key in ("creation_order", "runs", "start_timestamp", "end_timestamp"):
    INDEXES[f"jobs_{_key}"] = f"CREATE INDEX jobs_{_key} ON {TABLE} ({_key}, id)"
for _key in ("start_timestamp", "end_timestamp"):
    INDEXES[f"jobs_{_key}_desc"] = f"CREATE INDEX jobs_{_key}_desc ON {TABLE} ({_key} DESC NULLS LAST, id DESC)"
for _key in ("created_at", "updated_at", "creation_order", "start_timestamp", "end_timestamp"):
    INDEXES[f"jobs_project_{_key}"] = f"CREATE INDEX jobs_project_{_key} ON {TABLE} (project_id, {_key}, id)"
for _key in ("start_timestamp", "end_timestamp"):
    INDEXES[f"jobs_project_{_key}_desc"] = (
        f"CREATE INDEX jobs_project_{_key}_desc ON {TABLE} (project_id, {_key} DESC NULLS LAST, id DESC)"
    )

ORDER_KEYS = frozenset(("created_at", "updated_at", "creation_order", "start_timestamp", "end_timestamp", "runs", "id"))
_NULLABLE_KEYS = frozenset(("start_timestamp", "end_timestamp"))
_LIST_PARAMS = {
    "id": ("id", True),
    "batch_id": ("batch_id", True),
    "project_id": ("project_id", True),
    "user_id": ("user_id", False),
    "status": ("status", False),
    "origin": ("origin", False),
}  # param -> (column, is uuid)
_SCALAR_PARAMS = frozenset(
    ("order_by", "order_by_direction", "limit", "offset", "id__starts_with", "min_runs",
     "max_runs", "errors", "start_date", "end_date")
)  # fmt: skip
_UUID_TEMPLATE = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
_HEX = frozenset("0123456789abcdef")


class SqlQuery(NamedTuple):
    """The page query and the count query of one API request; both take ``args``."""

    page: str
    count: str
    args: list[Any]


class RelationBytes(NamedTuple):
    """On-disk size of the jobs table (heap + TOAST), of its indexes, and their sum."""

    table: int
    indexes: int
    total: int


@dataclass(frozen=True, slots=True)
class LoadStats:
    """How long each phase of :func:`load` took, in seconds."""

    rows: int
    copy_s: float  # generation + COPY (streamed together)
    index_s: float
    vacuum_analyze_s: float

    @property
    def total_s(self) -> float:
        return self.copy_s + self.index_s + self.vacuum_analyze_s


def connect(dsn: str = DEFAULT_DSN) -> psycopg.Connection[Any]:
    """An autocommit connection; ``prepare_threshold=None`` so every query gets a custom plan
    for its actual values (a generic plan would ignore the heavy project/status skew)."""
    return psycopg.connect(dsn, autocommit=True, prepare_threshold=None)


# --------------------------------------------------------------------------- load


def _row(job: dict[str, Any]) -> tuple[Any, ...]:
    start, end = job["start_timestamp"], job["end_timestamp"]
    variables = job["variables"]
    return (
        job["id"], job["parent_id"], job["batch_id"], job["project_id"], job["user_id"],
        job["status"], job["runs"], job["origin"], job["errors"],
        None if variables is None else Jsonb(variables), job["creation_order"],
        to_datetime(job["created_at"]), to_datetime(job["updated_at"]),
        None if start is None else to_datetime(start), None if end is None else to_datetime(end),
    )  # fmt: skip


def load(conn: psycopg.Connection[Any], plan: Plan, chunk_size: int = 10_000, progress: bool = True) -> LoadStats:
    """Drop and recreate ``jobreg_bench``, COPY all jobs of ``plan``, index, VACUUM ANALYZE."""
    t0 = time.perf_counter()
    copy_sql = f"COPY {TABLE} ({_SELECT_COLUMNS}) FROM STDIN WITH (FREEZE)"
    with (
        conn.transaction(),  # FREEZE needs the table created in the COPY's transaction
        conn.cursor() as cur,
        tqdm(total=plan.n_jobs, unit="job", unit_scale=True, disable=not progress) as bar,
    ):
        cur.execute(_CREATE)
        cur.execute(f"INSERT INTO {SCHEMA}.meta VALUES (%s, %s)", (plan.n_jobs, plan.seed))
        with cur.copy(copy_sql) as copy:
            for chunk in iter_jobs(plan, chunk_size):
                for job in chunk:
                    copy.write_row(_row(job))
                bar.update(len(chunk))
    t1 = time.perf_counter()
    conn.execute("SET maintenance_work_mem = '512MB'")
    for sql in tqdm(INDEXES.values(), desc="indexes", disable=not progress):
        conn.execute(sql)
    conn.execute("RESET maintenance_work_mem")
    t2 = time.perf_counter()
    conn.execute(f"VACUUM (ANALYZE) {TABLE}")
    t3 = time.perf_counter()
    return LoadStats(plan.n_jobs, t1 - t0, t2 - t1, t3 - t2)


def loaded_plan(conn: psycopg.Connection[Any]) -> tuple[int, int] | None:
    """``(n_jobs, seed)`` of the data currently loaded, or None if there is none."""
    try:
        row = conn.execute(f"SELECT n_jobs, seed FROM {SCHEMA}.meta").fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return None if row is None else (int(row[0]), int(row[1]))


def ensure_indexes(conn: psycopg.Connection[Any], progress: bool = True) -> int:
    """Create the indexes of :data:`INDEXES` a reused table lacks (then ANALYZE); how many."""
    have = {row[0] for row in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s", (SCHEMA,))}
    missing = [sql for name, sql in INDEXES.items() if name not in have]
    if missing:
        conn.execute("SET maintenance_work_mem = '512MB'")
        for sql in tqdm(missing, desc="missing indexes", disable=not progress):
            conn.execute(sql)
        conn.execute("RESET maintenance_work_mem")
        conn.execute(f"ANALYZE {TABLE}")
    return len(missing)


def relation_bytes(conn: psycopg.Connection[Any]) -> RelationBytes:
    """Disk size of the jobs table and of all its indexes."""
    row = conn.execute("SELECT pg_table_size(%s::regclass), pg_indexes_size(%s::regclass)", (TABLE, TABLE)).fetchone()
    assert row is not None
    return RelationBytes(int(row[0]), int(row[1]), int(row[0]) + int(row[1]))


# --------------------------------------------------------------------------- queries


def _parse_datetime(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _prefix_range(prefix: str) -> tuple[UUID, UUID] | None:
    """``id__starts_with`` as an inclusive uuid range (index-friendly), None if impossible."""
    prefix = prefix.lower()
    if len(prefix) > len(_UUID_TEMPLATE):
        return None
    for char, slot in zip(prefix, _UUID_TEMPLATE, strict=False):
        if (slot == "-") != (char == "-") or (char != "-" and char not in _HEX):
            return None
    rest = _UUID_TEMPLATE[len(prefix) :]
    return UUID(prefix + rest.replace("x", "0")), UUID(prefix + rest.replace("x", "f"))


def where_for(params: Params, implied_bounds: bool = True) -> tuple[str, list[Any]]:  # noqa: C901  one clause per filter
    """The WHERE clause (without the keyword) and its arguments for the API's filters.

    With ``implied_bounds``, a query with both ``start_date`` and ``end_date`` also gets
    ``start_timestamp <= end_date``: implied by ``end_timestamp <= end_date`` whenever
    ``start_timestamp <= end_timestamp`` (always true of generated data), it bounds the
    ``(user_id, start_timestamp)`` index range on both sides; without it PostgreSQL
    overestimates the matches and walks ``jobs_created`` instead (~50x slower at 1M jobs).
    """
    lists: dict[str, list[str]] = {}
    scalars: dict[str, str] = {}
    for name, value in params:
        if name in _LIST_PARAMS:
            lists.setdefault(name, []).append(value)
        elif name in _SCALAR_PARAMS:
            scalars[name] = value
        else:
            raise ValueError(f"unknown query parameter {name!r}")
    conds: list[str] = []
    args: list[Any] = []
    for name, values in lists.items():
        column, is_uuid = _LIST_PARAMS[name]
        vals: list[Any] = [UUID(v) for v in values] if is_uuid else list(dict.fromkeys(values))
        if len(vals) == 1:  # plain equality lets an index also provide the ORDER BY
            conds.append(f"{column} = %s")
            args.append(vals[0])
        else:
            conds.append(f"{column} = ANY(%s)")
            args.append(vals)
    if "id__starts_with" in scalars:
        bounds = _prefix_range(scalars["id__starts_with"])
        if bounds is None:
            conds.append("false")
        else:
            conds.append("id BETWEEN %s AND %s")
            args.extend(bounds)
    if "min_runs" in scalars:
        conds.append("runs >= %s")
        args.append(int(scalars["min_runs"]))
    if "max_runs" in scalars:
        conds.append("runs <= %s")
        args.append(int(scalars["max_runs"]))
    if "errors" in scalars:
        conds.append("has_errors" if scalars["errors"].lower() in ("true", "1") else "NOT has_errors")
    if "start_date" in scalars:
        conds.append("start_timestamp >= %s")
        args.append(_parse_datetime(scalars["start_date"]))
    if "end_date" in scalars:
        end_date = _parse_datetime(scalars["end_date"])
        conds.append("end_timestamp <= %s")
        args.append(end_date)
        if implied_bounds and "start_date" in scalars:
            conds.append("start_timestamp <= %s")
            args.append(end_date)
    return (" AND ".join(conds) or "true"), args


def order_by_for(params: Params) -> str:
    """``ORDER BY`` body: (key, id) in the requested direction, NULLs last either way.

    ``NULLS LAST`` is spelled only for nullable keys: for NOT NULL keys it changes nothing,
    but PostgreSQL would no longer match a backward index scan to ``DESC NULLS LAST``.
    """
    values = dict(params)
    key = values.get("order_by", "created_at")
    direction = values.get("order_by_direction", "DESC").upper()
    if key not in ORDER_KEYS or direction not in ("ASC", "DESC"):
        raise ValueError(f"bad ordering {key!r} {direction!r}")
    if key == "id":
        return f"id {direction}"
    nulls = " NULLS LAST" if key in _NULLABLE_KEYS else ""
    return f"{key} {direction}{nulls}, id {direction}"


def sql_for(params: Params, implied_bounds: bool = True) -> SqlQuery:
    """Translate a GET /api/v2/jobs query into its page query and its exact-count query.

    See :func:`where_for` for ``implied_bounds``.
    """
    where, args = where_for(params, implied_bounds)
    values = dict(params)
    limit, offset = int(values.get("limit", "100")), int(values.get("offset", "0"))
    if not 1 <= limit <= 100 or offset < 0:
        raise ValueError(f"bad pagination limit={limit} offset={offset}")
    page = (
        f"SELECT {_SELECT_COLUMNS} FROM {TABLE} WHERE {where} "
        f"ORDER BY {order_by_for(params)} LIMIT {limit} OFFSET {offset}"
    )
    return SqlQuery(page, f"SELECT count(*) FROM {TABLE} WHERE {where}", args)


def run_timed(
    conn: psycopg.Connection[Any], params: Params, implied_bounds: bool = True
) -> tuple[int, list[str], float, float]:
    """Like :func:`run`, plus the page and count query times in milliseconds."""
    query = sql_for(params, implied_bounds)
    t0 = time.perf_counter()
    rows = conn.execute(query.page, query.args).fetchall()
    t1 = time.perf_counter()
    count = conn.execute(query.count, query.args).fetchone()
    t2 = time.perf_counter()
    assert count is not None
    return int(count[0]), [str(row[0]) for row in rows], (t1 - t0) * 1e3, (t2 - t1) * 1e3


def run(conn: psycopg.Connection[Any], params: Params, implied_bounds: bool = True) -> tuple[int, list[str]]:
    """Answer one API query: ``(total, ids of the page)`` (full rows are fetched, ids kept)."""
    total, ids, _, _ = run_timed(conn, params, implied_bounds)
    return total, ids


def explain(conn: psycopg.Connection[Any], params: Params, count: bool = False, implied_bounds: bool = True) -> str:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of the page query (or of the count query)."""
    query = sql_for(params, implied_bounds)
    sql = f"EXPLAIN (ANALYZE, BUFFERS) {query.count if count else query.page}"
    rows: Iterable[tuple[Any, ...]] = conn.execute(sql, query.args).fetchall()
    return "\n".join(str(row[0]) for row in rows)
