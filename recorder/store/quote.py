"""The one way a value gets into QuestDB SQL.

QuestDB's HTTP ``/exec`` and ``/exp`` take a statement and no bind variables, so every
value that goes into one passes :func:`literal`, which checks its type and quotes it, and
statements are written as constant templates filled by :func:`bind`. Table and column
names come from :mod:`recorder.schema`; :func:`name` refuses any other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeAlias

from ..schema import TABLES


@dataclass(frozen=True, slots=True)
class At:
    """A time (integer nanoseconds) compared with a ``TIMESTAMP`` column."""

    ns: int


@dataclass(frozen=True, slots=True)
class Name:
    """A table or column name of the schema, written as it is."""

    text: str


Value: TypeAlias = "int | float | str | At | Name | None"
_NAMES = frozenset({t.name for t in TABLES} | {c for t in TABLES for c in t.names})


def literal(value: Value) -> str:
    """``value`` as a QuestDB SQL literal; ValueError for anything that is not plainly one."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):  # an int subclass, but never meant as a number here
        raise ValueError("a bool is not an SQL value here")
    if isinstance(value, At):
        # QuestDB's TIMESTAMP counts microseconds; floor keeps [start, end) ranges exact
        return f"cast({_integer(value.ns) // 1000} AS TIMESTAMP)"
    if isinstance(value, Name):
        if value.text not in _NAMES:
            raise ValueError(f"{value.text!r} is not a table or column of the schema")
        return value.text
    if isinstance(value, int):
        return str(_integer(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no SQL literal")
        return repr(value)
    if isinstance(value, str):
        if any(ord(ch) < 0x20 or ch == "\x7f" for ch in value):
            raise ValueError(f"{value!r}: control characters are not allowed in a literal")
        return "'" + value.replace("'", "''") + "'"
    raise ValueError(f"{type(value).__name__} is not an SQL value")


def _integer(value: int) -> int:
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{value} does not fit a 64-bit integer")
    return int(value)


def bind(template: str, *values: Value) -> str:
    """``template`` (a constant) with each ``{}`` replaced by the literal of a value."""
    parts = template.split("{}")
    if len(parts) != len(values) + 1:
        raise ValueError(f"{len(parts) - 1} placeholders for {len(values)} values")
    out = [parts[0]]
    for value, part in zip(values, parts[1:], strict=True):
        out += [literal(value), part]
    return "".join(out)


def names(*texts: str) -> str:
    """A comma-separated list of schema names (a SELECT list), each checked."""
    return ", ".join(literal(Name(text)) for text in texts)
