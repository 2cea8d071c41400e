"""OpenAPI documentation of the job query parameters, generated from registry.query.params.PARAMS."""

from __future__ import annotations

from typing import Any

from litestar.openapi.spec import Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import QueryParameter

from registry.query.params import PARAMS, Kind, Param
from registry.query.spec import MAX_LIST

_TYPE = {
    Kind.ENUM: OpenAPIType.STRING,
    Kind.UUID: OpenAPIType.STRING,
    Kind.STRING: OpenAPIType.STRING,
    Kind.PATTERN: OpenAPIType.STRING,
    Kind.INT: OpenAPIType.INTEGER,
    Kind.BOOL: OpenAPIType.BOOLEAN,
    Kind.DATETIME: OpenAPIType.STRING,
}
_FORMAT = {Kind.UUID: OpenAPIFormat.UUID, Kind.DATETIME: OpenAPIFormat.DATE_TIME}


def schema_of(param: Param) -> Schema:
    """The schema of one value (of each item, for a list parameter)."""
    return Schema(
        type=_TYPE[param.kind],
        format=_FORMAT.get(param.kind),
        enum=[v.value for v in param.values] if param.values is not None else None,
        default=param.default,
        minimum=param.minimum,
        maximum=param.maximum,
        min_length=param.min_length,
        max_length=param.max_length,
        pattern=param.pattern,
    )


def _doc(param: Param) -> Any:
    # Declared as optional strings so the framework never rejects them: parse_query is the
    # one validator (it names every bad parameter in a single 422). ``schema_extra``
    # documents the real types.
    schema = schema_of(param)
    if param.many:
        schema = Schema(type=OpenAPIType.ARRAY, items=schema, max_items=MAX_LIST)
    return QueryParameter(
        annotation=list[str] | None if param.many else str | None,
        name=param.name,
        default=None,
        required=False,
        description=param.description,
        schema_extra={"oneOf": [schema]},
    )


# Keyed by JobQuery field (the Python name); each QueryParameter carries its query-string name.
JOB_QUERY_PARAMETERS: dict[str, Any] = {param.field: _doc(param) for param in PARAMS}
