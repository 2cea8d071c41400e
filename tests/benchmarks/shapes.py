"""The 16 GET /api/v2/jobs query shapes the benchmarks time, built from a BenchInfo."""

from __future__ import annotations

from tests.benchmarks.datagen import BenchInfo

Shape = tuple[str, list[tuple[str, str]]]

#: Fixed two-hex-digit prefix for the id__starts_with shape (~1/256 of all jobs).
ID_PREFIX = "a7"


def shapes(info: BenchInfo, limit: int = 100) -> list[Shape]:
    """``(name, params)`` for each shape; params are API query pairs, list params repeated."""
    big, mid, tiny = info.largest_project_id, info.mid_project_id, info.tiny_project_id
    page = [("limit", str(limit))]
    start, end = info.user_window
    return [
        ("01 no filter", [*page]),
        ("02 no filter, offset 500000", [*page, ("offset", "500000")]),
        ("03 status=DONE", [*page, ("status", "DONE")]),
        ("04 big project & DONE", [*page, ("project_id", big), ("status", "DONE")]),
        (
            "05 big project & DONE,ERROR",
            [*page, ("project_id", big), ("status", "DONE"), ("status", "ERROR")],
        ),
        ("06 mid project & ERROR", [*page, ("project_id", mid), ("status", "ERROR")]),
        ("07 tiny project & DONE", [*page, ("project_id", tiny), ("status", "DONE")]),
        (
            "08 big project by runs DESC",
            [*page, ("project_id", big), ("order_by", "runs"), ("order_by_direction", "DESC")],
        ),
        ("09 errors & origin=AZURE", [*page, ("errors", "true"), ("origin", "AZURE")]),
        ("10 DONE & origin=CLIENT", [*page, ("status", "DONE"), ("origin", "CLIENT")]),
        ("11 id prefix (2 hex)", [*page, ("id__starts_with", ID_PREFIX)]),
        (
            "12 5 batches by creation_order",
            [
                *page,
                *(("batch_id", b) for b in info.batch_ids),
                ("order_by", "creation_order"),
                ("order_by_direction", "ASC"),
            ],
        ),
        (
            "13 user & date window",
            [*page, ("user_id", info.user_id), ("start_date", start), ("end_date", end)],
        ),
        (
            "14 RUNNING,PENDING by updated_at",
            [
                *page,
                ("status", "RUNNING"),
                ("status", "PENDING"),
                ("order_by", "updated_at"),
                ("order_by_direction", "DESC"),
            ],
        ),
        (
            "15 big project runs 100-500 by end",
            [
                *page,
                ("project_id", big),
                ("min_runs", "100"),
                ("max_runs", "500"),
                ("order_by", "end_timestamp"),
                ("order_by_direction", "ASC"),
            ],
        ),
        (
            "16 big project & DONE, offset 100000",
            [*page, ("project_id", big), ("status", "DONE"), ("offset", "100000")],
        ),
    ]
