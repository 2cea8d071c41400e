"""The query parameter table: one row per JobQuery field, and the parser, docs and matcher all driven by it."""

from __future__ import annotations

from api.query_docs import JOB_QUERY_PARAMETERS
from registry.query.params import FILTERS, PARAMS
from registry.query.spec import JobQuery


def test_every_query_field_has_exactly_one_parameter() -> None:
    fields = [p.field for p in PARAMS]
    assert sorted(fields) == sorted(JobQuery.__struct_fields__)
    assert len({p.name for p in PARAMS}) == len(PARAMS)


def test_filters_are_the_fields_besides_ordering_and_paging() -> None:
    assert {p.field for p in FILTERS} == set(JobQuery.__struct_fields__) - {
        "order_by",
        "direction",
        "limit",
        "offset",
        "page_token",
    }


def test_openapi_documents_every_parameter_by_its_query_name() -> None:
    assert [q.name for q in JOB_QUERY_PARAMETERS.values()] == [p.name for p in PARAMS]
