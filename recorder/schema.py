"""The tables, their columns and dedup keys, the same in every sink.

Records become plain row tuples here, once; sinks, the spool and replay all work on rows.
Every table has the exchange time ``ts`` (the designated timestamp, integer nanoseconds
in the program), ``code`` and ``market`` as symbols, typed numeric columns, ``source``
(``live`` or ``backfill``) and ``recv_ts`` (local receive time, nanoseconds).

Dedup keys make re-sending a batch harmless:

- trades: ``(ts, code, price, size, side, k)``, see :mod:`recorder.identity`;
- depth: ``(ts, code, bids, asks, n)``, ``n`` counting earlier identical books of the
  second, so a book that goes A, B, A keeps all three updates;
- snapshots: ``(ts, code, volume, last, n)``, likewise;
- klines: ``(ts, code, kt)``, the later version of a bar replaces the earlier;
- gaps: ``(ts, code, stream, cause)``, a gap's later state replaces the earlier.

Every decimal comes back as the string it was received as (``"212.30"``, not ``212.3``):
the doubles are for SQL; ``dp`` holds how many decimals each field's string had (5 bits a
field, the first field in the lowest bits), and ``digits`` is NULL unless a string cannot
be given back by its double at that many decimals (more digits than a double holds,
``"147479220.1710000038"``): then it holds those fields' strings, comma-separated, ``""``
for the others. Depth books and extended-session quotes are JSON text whose numbers are
written with the received digits (``[[212.30,100]]``). Rows without ``dp`` (recorded
before) come back in the shortest decimal form, books in the digits of their doubles.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Final, Literal, TypeAlias

import orjson

from .feed import Feed
from .gaps import Gap, GapCause, GapStatus, GapUnit
from .protocol import (
    Depth,
    Instrument,
    Kline,
    Level,
    LevelText,
    Record,
    SessionQuote,
    Snapshot,
    Trade,
    fmt,
    market_of,
)

#: How a column is written: designated timestamp, other timestamp (ns), symbol, double,
#: integer, long, text.
Kind: TypeAlias = Literal["ts", "time", "sym", "f64", "int", "long", "text"]
Row: TypeAlias = tuple[Any, ...]

_QDB_TYPE: Final[dict[str, str]] = {
    "ts": "TIMESTAMP",
    "time": "TIMESTAMP",
    "f64": "DOUBLE",
    "int": "INT",
    "long": "LONG",
    "text": "VARCHAR",
}
_SQLITE_TYPE: Final[dict[str, str]] = {
    "ts": "INTEGER NOT NULL",
    "time": "INTEGER",
    "sym": "TEXT",
    "f64": "REAL",
    "int": "INTEGER",
    "long": "INTEGER",
    "text": "TEXT",
}


@dataclass(frozen=True, slots=True)
class Table:
    """One table: ``columns`` in row order, ``keys`` its dedup keys, ``upsert`` whether a
    row with the same keys replaces the stored one (otherwise the first one stays).

    ``added`` names the columns added to the table after its first release, always at the
    end: databases created earlier get them by migration, and rows spooled by an earlier
    version are padded with ``defaults`` (``None`` where none is given)."""

    name: str
    columns: tuple[tuple[str, Kind], ...]
    keys: tuple[str, ...]
    upsert: bool = False
    symbol_capacity: dict[str, int] = field(default_factory=dict)
    added: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    def pad(self, row: Row) -> Row:
        """A row as this version writes it, from a row an earlier version spooled."""
        missing = self.columns[len(row) :]
        return row + tuple(self.defaults.get(name) for name, _ in missing) if missing else row

    def questdb_migrations(self, found: dict[str, tuple[str, bool]] | None = None) -> list[str]:
        """What makes the table QuestDB holds match this one: ``ADD COLUMN`` for each
        column missing from ``found`` (column -> (type, is an upsert key), as
        ``table_columns()`` reads it), then the dedup keys if they differ. ``found=None``
        means the table as the first release made it (no ``added`` column).

        Plain ``ADD COLUMN`` of the missing ones only: ``ADD COLUMN IF NOT EXISTS`` needs
        QuestDB 8.2.2 (8.3.2 on a column that exists), above our minimum."""
        if found is None:
            found = {
                name: (self.questdb_type(name), name in self.keys)
                for name in self.names
                if name not in self.added
            }
        out = [
            f"ALTER TABLE {self.name} ADD COLUMN {name} {self.questdb_type(name)};"
            for name in self.names
            if name not in found
        ]
        keys = {name for name, (_, key) in found.items() if key}
        if keys != set(self.keys):
            out.append(f"ALTER TABLE {self.name} DEDUP ENABLE UPSERT KEYS({', '.join(self.keys)});")
        return out

    def questdb_type(self, name: str) -> str:
        """The column's QuestDB type as ``CREATE``/``ADD COLUMN`` spell it."""
        kind = dict(self.columns)[name]
        if kind == "sym":
            return f"SYMBOL CAPACITY {self.symbol_capacity.get(name, 256)} CACHE"
        return _QDB_TYPE[kind]

    def questdb_mismatch(self, found: dict[str, tuple[str, bool]]) -> str | None:
        """A column QuestDB holds with another type than ours: the recorder cannot fix that
        by itself (QuestDB changes a type only by rewriting the column)."""
        for name in self.names:
            have = found.get(name, (None, False))[0]
            want = self.questdb_type(name).split()[0]
            if have is not None and have != want:
                return f"table {self.name} column {name} is {have}, the recorder writes {want}"
        return None

    def sqlite_key(self) -> tuple[str, ...]:
        """The unique index's columns: code and ts first, so one code's rows come in order."""
        return ("code", "ts", *(k for k in self.keys if k not in ("code", "ts")))

    def questdb_ddl(self) -> str:
        """``CREATE TABLE IF NOT EXISTS`` for QuestDB: WAL, day partitions, dedup keys."""
        cols = [f"  {name} {self.questdb_type(name)}" for name in self.names]
        return (
            f"CREATE TABLE IF NOT EXISTS {self.name} (\n" + ",\n".join(cols) + "\n)"
            f" TIMESTAMP(ts) PARTITION BY DAY WAL\nDEDUP UPSERT KEYS({', '.join(self.keys)});"
        )

    def sqlite_ddl(self) -> list[str]:
        """The SQLite table and its unique index on the dedup keys (code first, then ts)."""
        cols = ", ".join(f"{name} {_SQLITE_TYPE[kind]}" for name, kind in self.columns)
        keys = ", ".join(self.sqlite_key())
        return [
            f"CREATE TABLE IF NOT EXISTS {self.name} ({cols})",
            f"CREATE UNIQUE INDEX IF NOT EXISTS {self.name}_key ON {self.name} ({keys})",
        ]

    def sqlite_column(self, name: str) -> str:
        """``ALTER TABLE ... ADD COLUMN`` for an added column, with its default."""
        kind = dict(self.columns)[name]
        default = self.defaults.get(name)
        tail = "" if default is None else f" NOT NULL DEFAULT {default!r}"
        return f"ALTER TABLE {self.name} ADD COLUMN {name} {_SQLITE_TYPE[kind]}{tail}"


#: What the tables need of QuestDB, (version, feature); the highest is the minimum the
#: recorder supports, checked at start-up. Add a row with a feature that needs a newer one.
QUESTDB_NEEDS: Final[tuple[tuple[tuple[int, int, int], str], ...]] = (
    ((8, 1, 1), "VARCHAR dedup keys (depth's bids and asks)"),
)


def questdb_minimum() -> tuple[tuple[int, int, int], str]:
    """The oldest QuestDB the tables work on, and the feature that makes it so."""
    return max(QUESTDB_NEEDS)


_COMMON_TAIL: Final[tuple[tuple[str, Kind], ...]] = (("source", "sym"), ("recv_ts", "long"))
_CAP: Final = {"code": 1024, "market": 16, "source": 4}

TRADES: Final = Table(
    "trades",
    (
        ("ts", "ts"),
        ("code", "sym"),
        ("market", "sym"),
        ("price", "f64"),
        ("size", "f64"),
        ("side", "int"),
        ("k", "int"),
        *_COMMON_TAIL,
        ("dp", "int"),
        ("digits", "text"),
    ),
    ("ts", "code", "price", "size", "side", "k"),
    symbol_capacity=_CAP,
    added=("dp", "digits"),
)
DEPTH: Final = Table(
    "depth",
    (
        ("ts", "ts"),
        ("code", "sym"),
        ("market", "sym"),
        ("bid_px", "f64"),
        ("bid_sz", "f64"),
        ("ask_px", "f64"),
        ("ask_sz", "f64"),
        ("levels", "int"),
        ("bids", "text"),
        ("asks", "text"),
        *_COMMON_TAIL,
        ("n", "int"),
    ),
    ("ts", "code", "bids", "asks", "n"),
    symbol_capacity=_CAP,
    added=("n",),
    defaults={"n": 0},
)
SNAPSHOTS: Final = Table(
    "snapshots",
    (
        ("ts", "ts"),
        ("code", "sym"),
        ("market", "sym"),
        ("last", "f64"),
        ("prev_close", "f64"),
        ("open", "f64"),
        ("high", "f64"),
        ("low", "f64"),
        ("volume", "f64"),
        ("turnover", "f64"),
        ("suspended", "int"),
        ("session", "int"),
        ("extended", "text"),
        *_COMMON_TAIL,
        ("n", "int"),
        ("dp", "long"),
        ("digits", "text"),
    ),
    ("ts", "code", "volume", "last", "n"),
    symbol_capacity=_CAP,
    added=("n", "dp", "digits"),
    defaults={"n": 0},
)
KLINES: Final = Table(
    "klines",
    (
        ("ts", "ts"),
        ("code", "sym"),
        ("market", "sym"),
        ("kt", "int"),
        ("open", "f64"),
        ("close", "f64"),
        ("high", "f64"),
        ("low", "f64"),
        ("volume", "f64"),
        *_COMMON_TAIL,
        ("dp", "int"),
        ("digits", "text"),
    ),
    ("ts", "code", "kt"),
    upsert=True,
    symbol_capacity=_CAP,
    added=("dp", "digits"),
)
KLINE_UPDATES: Final = Table(
    "kline_updates",
    # the columns of klines, and n before dp and digits (those last two close every row)
    (*KLINES.columns[:-2], ("n", "int"), *KLINES.columns[-2:]),
    ("ts", "code", "kt", "open", "close", "high", "low", "volume", "n"),
    symbol_capacity=_CAP,
)
GAPS: Final = Table(
    "gaps",
    (
        ("ts", "ts"),
        ("end_ts", "time"),
        ("code", "sym"),
        ("market", "sym"),
        ("stream", "sym"),
        ("cause", "sym"),
        ("detected_ts", "time"),
        ("backfilled", "long"),
        ("missing", "f64"),
        ("missing_unit", "sym"),
        ("status", "sym"),
        ("detail", "text"),
        ("lost_volume", "f64"),
        ("lost_trades", "long"),
    ),
    ("ts", "code", "stream", "cause"),
    upsert=True,
    symbol_capacity={**_CAP, "stream": 8, "cause": 16, "missing_unit": 8, "status": 8},
    added=("lost_volume", "lost_trades"),
)
INSTRUMENTS: Final = Table(
    "instruments",
    (
        ("ts", "ts"),
        ("code", "sym"),
        ("market", "sym"),
        ("exchange", "sym"),
        ("currency", "sym"),
        ("name_cn", "text"),
        ("name_en", "text"),
        ("lot_size", "long"),
        ("total_shares", "long"),
        ("outstanding_shares", "long"),
        ("eps", "f64"),
        ("net_assets", "f64"),
        ("dividend_yield", "f64"),
        # the per-code decimals replay once formatted with (they dropped digits): rows
        # keep their own strings since #19, and these stay NULL
        ("price_dp", "int"),
        ("size_dp", "int"),
        ("turnover_dp", "int"),
        ("recv_ts", "long"),
    ),
    ("ts", "code"),
    upsert=True,
    symbol_capacity={**_CAP, "exchange": 64, "currency": 32},
)
#: Every table: the one place their names are written (the config's ``retention`` keys and
#: the batches' tables are held to these names by tests).
TABLES: Final = (TRADES, DEPTH, SNAPSHOTS, KLINES, KLINE_UPDATES, GAPS, INSTRUMENTS)
MARKET_TABLES: Final = tuple(t.name for t in (TRADES, DEPTH, SNAPSHOTS, KLINES))
BY_NAME: Final = {t.name: t for t in TABLES}


#: bits of ``dp`` per field: up to 31 decimals
DP_BITS: Final = 5
_DP_MASK: Final = (1 << DP_BITS) - 1
_PLACES: dict[str, int] = {}  # wire string -> its decimals, or -1: the hot path's memo
_PLAIN: set[str] = set()  # the wire strings in _PLACES with decimals (not -1)
_PLACES_MAX: Final = 1 << 16


def _places(text: str) -> int:
    """How many decimals ``text`` has, when its double formatted with that many gives it
    back exactly; -1 when it does not (too many digits, or not in plain decimal form)."""
    places = _PLACES.get(text)
    if places is None:
        dot = text.find(".")
        places = len(text) - dot - 1 if dot >= 0 else 0
        try:
            if places > _DP_MASK or f"{float(text):.{places}f}" != text:
                places = -1
        except ValueError:
            places = -1
        if len(_PLACES) >= _PLACES_MAX:
            _PLACES.clear()
            _PLAIN.clear()
        _PLACES[text] = places
        if places >= 0:
            _PLAIN.add(text)
    return places


_EXACT: dict[tuple[str, ...], tuple[int | None, str | None]] = {}  # texts -> exact(texts)


def exact(texts: tuple[str, ...]) -> tuple[int | None, str | None]:
    """``dp`` and ``digits`` of a row whose decimal fields were received as ``texts``
    (``None, None`` when the record kept no strings). Memoised: a code's prices and sizes
    repeat, and this runs for every row on the event loop."""
    found = _EXACT.get(texts)
    if found is None:
        if len(_EXACT) >= _PLACES_MAX:
            _EXACT.clear()
        found = _EXACT[texts] = _exact(texts)
    return found


def _exact(texts: tuple[str, ...]) -> tuple[int | None, str | None]:
    if not texts:
        return None, None
    dp = 0
    kept: list[str] | None = None
    for i, text in enumerate(texts):
        places = _places(text)
        if places < 0:
            kept = kept or [""] * len(texts)
            kept[i] = text
        else:
            dp |= places << (DP_BITS * i)
    return dp, None if kept is None else ",".join(kept)


_TEXTS: dict[tuple[float, float, int], tuple[str, ...]] = {}  # a trade's (price, size, dp)


def texts(values: Sequence[float], dp: int | None, digits: str | None) -> tuple[str, ...]:
    """The strings :func:`exact` stored, back from the doubles, ``dp`` and ``digits``.
    Memoised for trades (two fields, the usual case in a replay): a code's prices and sizes
    repeat. Zero is never memoised: ``-0.0`` equals ``0.0`` as a key but prints ``-0``."""
    if dp is None:
        return ()
    if digits is None and len(values) == 2 and values[0] and values[1]:
        key = (values[0], values[1], dp)
        found = _TEXTS.get(key)
        if found is None:
            if len(_TEXTS) >= _PLACES_MAX:
                _TEXTS.clear()
            found = _TEXTS[key] = _texts(values, dp, ())
        return found
    return _texts(values, dp, digits.split(",") if digits else ())


def _texts(values: Sequence[float], dp: int, kept: Sequence[str]) -> tuple[str, ...]:
    return tuple(
        kept[i] if i < len(kept) and kept[i] else f"{v:.{(dp >> DP_BITS * i) & _DP_MASK}f}"
        for i, v in enumerate(values)
    )


def _literal(text: str) -> str:
    """A wire string inside JSON text: the number itself with its digits (``212.30``) when
    it is a plain decimal, so SQL's JSON functions still read numbers; else a string."""
    return text if _places(text) >= 0 else orjson.dumps(text).decode()


def _book(levels: tuple[Level, ...], text: tuple[LevelText, ...]) -> str:
    if len(text) != len(levels):  # not received from the wire: the shortest forms
        text = tuple((fmt(p), fmt(v)) for p, v in levels)
    # the usual case in C: every string a plain decimal seen before, so the JSON of the
    # strings without its quotes is the JSON of the numbers with their digits
    if _PLAIN.issuperset(chain.from_iterable(text)):
        return orjson.dumps(text).decode().replace('"', "")
    return "[" + ",".join(["[" + _literal(p) + "," + _literal(v) + "]" for p, v in text]) + "]"


def _extended(ext: dict[str, SessionQuote]) -> str | None:
    if not ext:
        return None
    return "{" + ",".join(f'"{key}":{_quote_values(q)}' for key, q in ext.items()) + "}"


def _quote_values(q: SessionQuote) -> str:
    values = (q.last, q.prev_close, q.high, q.low, q.volume, q.turnover)
    lp, yp, h, lo, v, t = map(_literal, q.text or tuple(map(fmt, values)))
    return f"[{lp},{yp},{h},{lo},{q.ts},{v},{t}]"


def _json_digits(text: str) -> Any:
    """JSON text with every number as the string of its digits, as it was written."""
    return json.loads(text, parse_float=str, parse_int=str)


def trade_row(t: Trade, market: str | None = None) -> Row:
    found = _EXACT.get(t.text)  # exact(), inlined on the hottest path
    dp, digits = exact(t.text) if found is None else found
    return (
        t.ts,
        t.code,
        market or market_of(t.code),
        t.price,
        t.size,
        t.side,
        t.k,
        t.source,
        t.recv_ts,
        dp,
        digits,
    )


def depth_row(d: Depth) -> Row:
    bid = d.bids[0] if d.bids else (None, None)
    ask = d.asks[0] if d.asks else (None, None)
    return (
        d.ts,
        d.code,
        market_of(d.code),
        bid[0],
        bid[1],
        ask[0],
        ask[1],
        max(len(d.bids), len(d.asks)),
        _book(d.bids, d.bid_text),
        _book(d.asks, d.ask_text),
        d.source,
        d.recv_ts,
        d.n,
    )


def snapshot_row(s: Snapshot) -> Row:
    dp, digits = exact(s.text)
    return (
        s.ts,
        s.code,
        market_of(s.code),
        s.last,
        s.prev_close,
        s.open,
        s.high,
        s.low,
        s.volume,
        s.turnover,
        s.suspended,
        s.session,
        _extended(s.extended),
        s.source,
        s.recv_ts,
        s.n,
        dp,
        digits,
    )


def kline_row(k: Kline) -> Row:
    dp, digits = exact(k.text)
    return (
        k.ts,
        k.code,
        market_of(k.code),
        k.kt,
        k.open,
        k.close,
        k.high,
        k.low,
        k.volume,
        k.source,
        k.recv_ts,
        dp,
        digits,
    )


def kline_update_row(k: Kline) -> Row:
    """Every live push of a bar, as it came (``n``: identical earlier pushes of the bar)."""
    row = kline_row(k)
    return (*row[:11], k.n, *row[11:])


def gap_row(g: Gap) -> Row:
    """The gap's row: the feed and the enums as their plain strings (the stored text)."""
    return (
        g.start,
        g.end,
        g.code,
        market_of(g.code),
        g.feed.key,
        g.cause.value,
        g.detected_ts,
        g.backfilled,
        g.missing,
        None if g.missing_unit is None else g.missing_unit.value,
        g.status.value,
        g.detail,
        g.lost_volume,
        g.lost_trades,
    )


def instrument_row(i: Instrument, day: int, recv_ts: int) -> Row:
    """One code's reference data as of ``day`` (ns, midnight UTC): one row a code a day."""
    return (
        day,
        i.code,
        market_of(i.code),
        i.exchange,
        i.currency,
        i.name_cn,
        i.name_en,
        i.lot_size,
        i.total_shares,
        i.outstanding_shares,
        i.eps,
        i.net_assets,
        i.dividend_yield,
        None,
        None,
        None,
        recv_ts,
    )


def gap_of(row: Row) -> Gap:
    """The gap a stored row of the gaps table holds: its texts parsed here, once;
    ValueError naming the row's code, start and what is wrong when one is not ours."""
    (ts, end, code, _, stream, cause, detected, backfilled, missing, unit, status, detail) = row[
        :12
    ]
    lost_volume, lost_trades = GAPS.pad(row)[12:]
    try:
        feed, why = Feed.parse(stream), GapCause(cause)
        state, unit = GapStatus(status), None if unit is None else GapUnit(unit)
    except ValueError as exc:
        raise ValueError(f"gaps row of {code} at {ts}: {exc}") from None
    return Gap(
        ts,
        end,
        code,
        feed,
        why,
        detected,
        backfilled or 0,
        missing,
        unit,
        state,
        detail,
        lost_volume=lost_volume,
        lost_trades=lost_trades,
    )


def record_of(table: str, row: Row) -> Record:
    """The record a stored row came from (for replay), with the strings it was received
    with where the row kept them."""
    if table == TRADES.name:
        ts, code, _, price, size, side, k, source, recv, dp, digits = TRADES.pad(row)
        text = texts((price, size), dp, digits)
        return Trade(code, ts, price, size, side, recv, k, source, text)
    if table == DEPTH.name:
        ts, code, _, _, _, _, _, _, bids, asks, source, recv, n = DEPTH.pad(row)
        (bid, bid_text), (ask, ask_text) = _levels(bids), _levels(asks)
        return Depth(code, ts, bid, ask, recv, source, n, bid_text, ask_text)
    if table == SNAPSHOTS.name:
        (ts, code, _, last, yp, o, h, lo, v, t, s, tt, ext, source, recv, n, dp, digits) = (
            SNAPSHOTS.pad(row)
        )
        extended = {key: _quote(vals) for key, vals in _json_digits(ext).items()} if ext else {}
        text = texts((last, yp, o, h, lo, v, t), dp, digits)
        return Snapshot(code, ts, last, yp, o, h, lo, v, t, s, tt, recv, extended, source, n, text)
    if table == KLINES.name:
        ts, code, _, kt, o, c, h, lo, v, source, recv, dp, digits = KLINES.pad(row)
        text = texts((o, c, h, lo, v), dp, digits)
        return Kline(code, kt, ts, o, c, h, lo, v, recv, source, text)
    if table == "kline_updates":
        ts, code, _, kt, o, c, h, lo, v, source, recv, n, dp, digits = KLINE_UPDATES.pad(row)
        text = texts((o, c, h, lo, v), dp, digits)
        return Kline(code, kt, ts, o, c, h, lo, v, recv, source, text, n)
    raise ValueError(f"no record type for table {table!r}")


def _levels(text: str) -> tuple[tuple[Level, ...], tuple[LevelText, ...]]:
    """A stored book: its levels' doubles and digits (recorded before #19: the digits of
    the doubles)."""
    if '"' in text:  # a string among the numbers (more digits than JSON numbers keep)
        levels = tuple((p, v) for p, v in _json_digits(text))
    elif len(text) > 2:  # [[p,v],[p,v]]: plain numbers only, split without a JSON parser
        levels = tuple(_pair(level.split(",")) for level in text[2:-2].split("],["))
    else:
        levels = ()
    return tuple((float(p), float(v)) for p, v in levels), levels


def _pair(fields: list[str]) -> LevelText:
    price, size = fields
    return price, size


def _quote(vals: list[str]) -> SessionQuote:
    lp, yp, h, lo, ts, v, t = vals
    return SessionQuote(
        float(lp),
        float(yp),
        float(h),
        float(lo),
        int(ts),
        float(v),
        float(t),
        (lp, yp, h, lo, v, t),
    )
