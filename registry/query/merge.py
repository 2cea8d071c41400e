"""Merging partitions' pages (issue 14): the global order of rows, creation_order across partitions, k-way merge.

Listing is ordered by (order value, id), both in the requested direction, nulls last (by id, in the
same direction). That order is total and the same in every partition, so the global page is the
k-way merge of the partitions' pages by one sort key. Pure functions, no I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from typing import TypeVar

import msgspec

from registry.domain.model import Job
from registry.query.seek import order_value
from registry.query.spec import OrderBy

# A row's place in the global order, comparable across partitions: (is null, signed value, signed id).
SortKey = tuple[bool, int, int]
# An order key's value as the rank search and page tokens carry it: µs, runs or creation_order
# (int), the id itself for order_by=id (str), None for a nullable order's nulls.
Value = int | str | None
_J = TypeVar("_J", bound=Job)


def creation_order(handle: int, partitions: int, i: int) -> int:
    """The creation_order of the job with handle ``handle`` in partition ``i`` of ``partitions``: unique
    across partitions, increasing in application order within one; the handle itself when P = 1."""
    return handle * partitions + i


def id_int(job_id: str) -> int:
    """The canonical id as an integer: ordered as the id text and the indexes' uuid bytes are."""
    return int(job_id.replace("-", ""), 16)


def row_value(job: Job, order: OrderBy) -> Value:
    """The job's order value as the merge compares it (the id itself for order_by=id)."""
    return job.id if order is OrderBy.ID else order_value(job, order)


def value_key(value: Value, desc: bool) -> tuple[bool, int]:
    """A value's place in the order (nulls last in both directions); ids as integers."""
    if value is None:
        return True, 0
    v = id_int(value) if isinstance(value, str) else value
    return False, -v if desc else v


def key_of(value: Value, job_id: str, desc: bool) -> SortKey:
    """The sort key of the row (``value``, ``job_id``)."""
    null, v = value_key(value, desc)
    u = id_int(job_id)
    return null, v, -u if desc else u


def sort_key(job: Job, order: OrderBy, desc: bool) -> SortKey:
    """The job's place in the global order of a listing by ``order``."""
    return key_of(row_value(job, order), job.id, desc)


def merge(pages: Iterable[Sequence[Job]], order: OrderBy, desc: bool, skip: int, limit: int) -> list[Job]:
    """Rows ``skip`` .. ``skip + limit - 1`` of the merge of ``pages`` (each sorted in the order)."""
    merged = heapq.merge(*pages, key=lambda job: sort_key(job, order, desc))
    out: list[Job] = []
    for n, job in enumerate(merged):
        if n >= skip + limit:
            break
        if n >= skip:
            out.append(job)
    return out


def renumber(jobs: Iterable[_J], partitions: int, i: int) -> list[_J]:
    """Partition ``i``'s jobs (rendered with creation_order = handle) with their global creation_order."""
    if partitions == 1:
        return list(jobs)
    return [
        msgspec.structs.replace(job, creation_order=creation_order(job.creation_order, partitions, i)) for job in jobs
    ]
