"""Rows and Arrow: the typed columns every source reads into.

Timestamps (``ts``, other time columns and ``recv_ts``) are UTC nanoseconds, codes and
the other symbols are dictionary-encoded strings, numbers keep the width the schema gives
them. pyarrow is an optional dependency (``qos-recorder[data]``); :func:`pyarrow` names
the extra when it is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

from ..exceptions import ConfigError
from ..schema import BY_NAME, Kind, Row


def pyarrow() -> ModuleType:
    """The pyarrow module, or one line saying how to install it."""
    try:
        import pyarrow as pa
    except ImportError:
        raise ConfigError(
            "pyarrow is not installed: pip install 'qos-recorder[data]' for Arrow and Parquet"
        ) from None
    module: ModuleType = pa
    return module


def is_time(name: str, kind: Kind) -> bool:
    """Whether a column holds a time in nanoseconds (``recv_ts`` is stored as a long)."""
    return kind in ("ts", "time") or (kind == "long" and name.endswith("_ts"))


def arrow_type(name: str, kind: Kind) -> Any:
    pa = pyarrow()
    if is_time(name, kind):
        return pa.timestamp("ns", tz="UTC")
    return {
        "sym": pa.dictionary(pa.int32(), pa.string()),
        "f64": pa.float64(),
        "int": pa.int32(),
        "long": pa.int64(),
        "text": pa.string(),
    }[kind]


def schema(table: str) -> Any:
    """The Arrow schema of a table."""
    pa = pyarrow()
    return pa.schema([pa.field(n, arrow_type(n, k)) for n, k in BY_NAME[table].columns])


def to_batch(table: str, rows: Sequence[Row]) -> Any:
    """A record batch of stored rows (tuples in the table's column order)."""
    pa = pyarrow()
    spec = BY_NAME[table]
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in spec.columns]
    arrays = []
    for (name, kind), values in zip(spec.columns, columns, strict=True):
        if kind == "sym":
            arrays.append(pa.array(values, pa.string()).dictionary_encode())
        else:
            arrays.append(pa.array(values, arrow_type(name, kind)))
    return pa.RecordBatch.from_arrays(arrays, schema=schema(table))


def to_rows(table: str, data: Any) -> list[Row]:
    """Stored rows back from a record batch or table with the table's columns."""
    pa = pyarrow()
    spec = BY_NAME[table]
    columns = []
    for name, kind in spec.columns:
        if name not in data.schema.names:  # written by an older version: padded
            columns.append([spec.defaults.get(name)] * data.num_rows)
            continue
        column = data.column(name)
        if is_time(name, kind):
            column = column.cast(pa.int64())
        columns.append(values(column))
    return list(zip(*columns, strict=True))


#: struct codes of the fixed-width types read straight from their buffers
_FORMATS = {"int64": "q", "int32": "i", "double": "d"}


def values(column: Any) -> list[Any]:
    """A column as Python values. Fixed-width columns without nulls are read from their
    buffers and dictionaries are decoded once per chunk: several times faster than
    ``to_pylist``, which makes a scalar object per value."""
    pa = pyarrow()
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    out: list[Any] = []
    for chunk in chunks:
        if pa.types.is_dictionary(chunk.type) and chunk.null_count == 0:
            words = chunk.dictionary.to_pylist()
            out += [words[i] for i in values(chunk.indices)]
            continue
        code = _FORMATS.get(str(chunk.type))
        if code is None or chunk.null_count:
            out += chunk.to_pylist()
            continue
        width = chunk.type.bit_width // 8
        data = memoryview(chunk.buffers()[1])[
            chunk.offset * width : (chunk.offset + len(chunk)) * width
        ]
        out += data.cast(code).tolist()  # type: ignore[call-overload]
    return out


def conform(table: str, data: Any) -> Any:
    """An Arrow table with exactly the table's columns and types (missing ones null)."""
    pa = pyarrow()
    want = schema(table)
    arrays = []
    for field in want:
        if field.name in data.schema.names:
            column = data.column(field.name)
            arrays.append(column if column.type == field.type else column.cast(field.type))
        else:
            arrays.append(pa.nulls(data.num_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=want)


def sort(data: Any, order: Sequence[str]) -> Any:
    """``data`` sorted by the columns ``order`` (codes by their text, not dictionary index)."""
    pa = pyarrow()
    if data.num_rows < 2:
        return data
    keys = {}
    for name in order:
        column = data.column(name)
        if pa.types.is_dictionary(column.type):
            column = column.cast(pa.string())
        keys[name] = column
    import pyarrow.compute as pc

    # the keys of a time order are never null (dedup keys, times, codes)
    index = pc.sort_indices(pa.table(keys), sort_keys=[(n, "ascending") for n in order])
    return data.take(index)
