"""Pydantic field types that take JSON values as JSON Schema reads them.

Pydantic's lax mode turns `true` into 1, `"5"` into 5 and `0` into False; JSON Schema (the
OpenAPI contract) calls those a boolean, a string and an integer. Its strict mode goes too far
the other way: it refuses `2.0` for an integer, which JSON Schema accepts. These sit between:
the JSON type must be right, then the usual checks apply.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Strict
from pydantic_core import PydanticCustomError

__all__ = ["JSON_NUMBER", "JsonBool", "JsonDatetime", "JsonFloat", "JsonInt"]

_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")


def _json_number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("json_number_type", "Input should be a JSON number")
    return value


#: The check itself, for a constrained optional field: write the constraints first,
#: `Annotated[int, Field(ge=1), JSON_NUMBER] | None` (after it, pydantic renders a bound in a
#: union as `ge`, not `minimum`).
JSON_NUMBER = BeforeValidator(_json_number)
#: An integer; 2.0 is one (as in JSON Schema), `true` and "2" are not.
JsonInt = Annotated[int, JSON_NUMBER]
#: A number; `true` and "1.5" are not (pydantic's strict float takes ints: no Python check).
JsonFloat = Annotated[float, Strict()]
#: `true` or `false`, nothing else.
JsonBool = Annotated[bool, Strict()]


def _date_time_string(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str) or _NUMBER.fullmatch(value):
        raise PydanticCustomError("datetime_type", "Input should be an RFC 3339 date-time string")
    return value


#: A date-time as JSON Schema's `format: date-time` has it: a string such as
#: 2025-01-02T03:04:05Z, not a Unix timestamp (pydantic takes 1700000000 and "0.5" too).
JsonDatetime = Annotated[dt.datetime, BeforeValidator(_date_time_string)]
