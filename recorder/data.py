"""Recorded ticks straight into backtests: Arrow tables, and through them pandas and polars.

Every function takes a ``source`` that :func:`recorder.store.open_source` reads (a SQLite
file, a QuestDB address such as ``http://localhost:9000``, an archive folder or URL from
``qos-recorder export``) or an open :class:`~recorder.store.Reader`. Columns are typed:
``ts`` and the other times are UTC nanosecond timestamps, ``code`` and the other symbols
dictionary-encoded strings::

    from recorder import data
    trades = data.read("ticks.sqlite", "trades", "2026-11-26", "2026-11-27")
    df = trades.to_pandas()              # polars: polars.from_arrow(trades)

:func:`scan` yields record batches of bounded size for ranges larger than memory,
:func:`book_at` the last depth at or before a time, :func:`bars` OHLCV bars of any width
from the trades. Bad input (an unknown table, a range with no data, a source that is not
one) raises :class:`~recorder.exceptions.ConfigError` with one line saying which.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from .config import check_code_entry
from .exceptions import ConfigError
from .protocol import NS, Depth
from .report import parse_time
from .schema import BY_NAME, DEPTH, TRADES, record_of
from .store import BATCH_ROWS, Reader, open_source
from .store.arrow import pyarrow, schema

Source: TypeAlias = "str | Path | Reader"
When: TypeAlias = "int | str | dt.datetime | dt.date"
#: looking back for the last book: a minute, an hour, a day, a week, a month
_BOOK_WINDOWS = (60, 3600, 86400, 7 * 86400, 31 * 86400)
_WIDTH = re.compile(r"^\s*(\d+)\s*(ns|us|ms|s|sec|min|m|h|d)?\s*$")
_UNIT = {"ns": 1, "us": 1000, "ms": 10**6, "s": NS, "sec": NS, "min": 60 * NS, "m": 60 * NS,
         "h": 3600 * NS, "d": 86400 * NS}  # fmt: skip


def ns(when: When, what: str = "time") -> int:
    """A time as integer nanoseconds: ns since the epoch, an ISO date or time (UTC unless
    it says otherwise), a datetime or a date."""
    if isinstance(when, bool):
        raise ConfigError(f"{what}: {when!r} is not a time")
    if isinstance(when, int):
        return when
    if isinstance(when, dt.datetime):
        aware = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
        return int(aware.timestamp()) * NS + aware.microsecond * 1000
    if isinstance(when, dt.date):
        return ns(dt.datetime(when.year, when.month, when.day, tzinfo=dt.UTC), what)
    if isinstance(when, str):
        return parse_time(when, what)
    raise ConfigError(f"{what}: {when!r} is not a time")


def _reader(source: Source) -> Reader:
    return source if not isinstance(source, str | Path) else open_source(source)


def _check(table: str, start: int, end: int, codes: Sequence[str]) -> None:
    if table not in BY_NAME:
        raise ConfigError(f"{table!r} is not a table: one of {', '.join(BY_NAME)}")
    if end <= start:
        raise ConfigError("the end of the range must be after its start")
    for code in codes:
        problem = check_code_entry(code)
        if problem:
            raise ConfigError(f"codes: {problem}")


def _codes(codes: str | Iterable[str]) -> tuple[str, ...]:
    return (codes,) if isinstance(codes, str) else tuple(codes)


def scan(
    source: Source,
    table: str,
    start: When,
    end: When,
    codes: str | Iterable[str] = (),
    batch_rows: int = BATCH_ROWS,
) -> Iterator[Any]:
    """Arrow record batches of at most ``batch_rows`` rows of ``table`` with
    ``start <= ts < end`` (of ``codes``, all when empty), by code then time (from an
    archive: day by day); memory stays bounded by one batch however long the range."""
    first, last, wanted = ns(start, "start"), ns(end, "end"), _codes(codes)
    _check(table, first, last, wanted)
    if batch_rows < 1:
        raise ConfigError("batch_rows must be at least 1")
    return _reader(source).batches(table, first, last, wanted, batch_rows)


def read(
    source: Source,
    table: str,
    start: When,
    end: When,
    codes: str | Iterable[str] = (),
) -> Any:
    """An Arrow table of ``table`` with ``start <= ts < end`` (of ``codes``, all when
    empty), by code then time (from an archive: day by day). ConfigError when the range
    holds no row."""
    pa = pyarrow()
    reader = _reader(source)
    batches = list(scan(reader, table, start, end, codes))
    if not batches:
        which = f"codes {', '.join(_codes(codes))}" if _codes(codes) else "any code"
        raise ConfigError(
            f"{reader.source}: no {table} rows from {_iso(ns(start))} to {_iso(ns(end))} "
            f"for {which}"
        )
    return pa.Table.from_batches(batches, schema=batches[0].schema)


def book_at(source: Source, code: str, at: When) -> Depth | None:
    """The last depth of ``code`` at or before ``at`` (None if there is none in the month
    before), as the typed record the decoder produces."""
    t = ns(at, "at")
    _check(DEPTH.name, t, t + 1, [code])
    reader = _reader(source)
    for window in _BOOK_WINDOWS:
        last = None
        for row in reader.rows(DEPTH.name, t - window * NS + 1, t + 1, [code]):
            last = row
        if last is not None:
            book = record_of(DEPTH.name, last)
            assert isinstance(book, Depth)
            return book
    return None


def width_ns(width: int | str | dt.timedelta) -> int:
    """A bar width as nanoseconds: seconds (an int), ``"5s"``, ``"1min"``, ``"4h"``,
    ``"1d"``, or a timedelta."""
    if isinstance(width, dt.timedelta):
        out = int(width.total_seconds() * NS)
    elif isinstance(width, int) and not isinstance(width, bool):
        out = width * NS
    elif isinstance(width, str) and (match := _WIDTH.match(width)):
        out = int(match[1]) * _UNIT[match[2] or "s"]
    else:
        raise ConfigError(f"width: {width!r} is not a bar width such as 60, '5s', '1min', '1h'")
    if out <= 0:
        raise ConfigError(f"width: {width!r} must be positive")
    return out


def bars(
    source: Source,
    start: When,
    end: When,
    width: int | str | dt.timedelta,
    codes: str | Iterable[str] = (),
) -> Any:
    """OHLCV bars of any width from the trades (bars open at multiples of ``width`` since
    the epoch, UTC; a bar with no trade is absent): code, ts (the bar's open), open, high,
    low, close, volume, trades."""
    pa = pyarrow()
    import pyarrow.compute as pc

    step = width_ns(width)
    trades = read(source, TRADES.name, start, end, codes)
    stamp = trades.column("ts").cast(pa.int64())
    bucket = pc.multiply(pc.divide(stamp, step), step)  # integer division: floors (ts >= 0)
    keyed = pa.table(
        {
            "code": trades.column("code").cast(pa.string()),
            "bar": bucket,
            "price": trades.column("price"),
            "size": trades.column("size"),
        }
    )
    # rows come by code then time and one thread keeps that order, so first/last are the
    # open and close
    grouped = pa.TableGroupBy(keyed, ["code", "bar"], use_threads=False).aggregate(
        [
            ("price", "first"),
            ("price", "max"),
            ("price", "min"),
            ("price", "last"),
            ("size", "sum"),
            ("price", "count"),
        ]
    )
    grouped = grouped.sort_by([("code", "ascending"), ("bar", "ascending")])
    return pa.table(
        {
            "code": grouped.column("code").dictionary_encode(),
            "ts": grouped.column("bar").cast(schema(TRADES.name).field("ts").type),
            "open": grouped.column("price_first"),
            "high": grouped.column("price_max"),
            "low": grouped.column("price_min"),
            "close": grouped.column("price_last"),
            "volume": grouped.column("size_sum"),
            "trades": grouped.column("price_count"),
        }
    )


def _iso(t: int) -> str:
    return dt.datetime.fromtimestamp(t // NS, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
