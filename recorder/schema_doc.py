"""What every table and column means, rendered with the tables of :mod:`recorder.schema`
into ``docs/schema.md`` (``qos-recorder schema --markdown``).

The columns, their types and the dedup keys come from ``schema.TABLES``; only the words
live here. A column added to ``schema.py`` without words here renders as
``UNDOCUMENTED`` and ``tests/test_docs.py`` fails, naming it, until it is described and
``docs/schema.md`` regenerated.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from .feed import Other
from .gaps import GapCause, GapStatus, GapUnit
from .protocol import Stream

# the schema's type names, so the page shows what each sink really declares
from .schema import _QDB_TYPE, _SQLITE_TYPE, TABLES, Table

_TS = "exchange time of the record (nanoseconds since 1970 UTC; the API gives whole seconds)"
_COMMON: Final[dict[str, str]] = {
    "code": "instrument code `MARKET:SYMBOL`, such as `US:AAPL`, `HK:700`, `CF:BTCUSDT`",
    "market": "the code's market: US HK SH SZ CF FX CM IX SI",
    "source": "`live` (pushed on the WebSocket) or `backfill` (fetched over REST to fill a gap)",
    "recv_ts": "local time the frame was received (nanoseconds since 1970 UTC)",
    "n": "how many identical rows of this code came earlier in the same second (0, 1, ...): "
    "a dedup key, so a state that goes A, B, A keeps all three rows and a re-sent row none",
}


def _dp(fields: str) -> dict[str, str]:
    """The words for ``dp`` and ``digits`` of a table whose decimal fields are ``fields``."""
    return {
        "dp": f"decimals of each received string, 5 bits a field in the order {fields}, the "
        "first in the lowest bits: replay prints each double with that many (`212.30` stays "
        "`212.30`); NULL for rows recorded before #19",
        "digits": "NULL unless a string has more digits than its double holds; then those "
        "fields' strings as received, comma-separated, empty for the others",
    }


_UNDOCUMENTED: Final = "UNDOCUMENTED"


def _values(words: Mapping[str, str], values: tuple[StrEnum, ...]) -> str:
    """Every stored value of an enum column with its words (``UNDOCUMENTED`` when it has
    none), so the page lists exactly what the recorder writes."""
    return ", ".join(f"`{_shown(v)}` ({words.get(v, _UNDOCUMENTED)})" for v in values)


def _shown(value: StrEnum) -> str:
    """A value as stored: K-lines only with their type (``Feed.key``)."""
    return "klines:<kt>" if value is Stream.KLINES else value.value


#: the words for each value of the gaps table's symbol columns
_STREAMS: Final[dict[str, str]] = {
    Stream.TRADES: "trades",
    Stream.DEPTH: "order books",
    Stream.SNAPSHOTS: "quote snapshots",
    Stream.KLINES: "K-line bars of one type, such as `klines:1`",
    Other.INSTRUMENTS: "`dropped` only: reference-data rows",
    Other.UNKNOWN: "`dropped` only: rows that could not be read, code `*`",
}
_CAUSES: Final[dict[str, str]] = {
    GapCause.DISCONNECT: "a session ended, or the recorder was not running",
    GapCause.SILENCE: "no trade for `silence_after` s while the market is open",
    GapCause.KLINE_SKIP: "a bar skipped open intervals",
    GapCause.DROPPED: "rows the recorder received and then lost itself: a full spool, a "
    "batch the database refused set aside, a damaged spool entry",
    GapCause.VOLUME: "the day volume grew by more than the trades recorded",
    GapCause.STARTUP: "the span between the trades subscription and the first snapshot, "
    "when it could not be filled",
    GapCause.ADDED: "a code a reload added, when its recent trades could not be fetched",
}
_UNITS: Final[dict[str, str]] = {
    GapUnit.SECONDS: "a span not recoverable",
    GapUnit.VOLUME: "day volume the trades recorded do not explain",
    GapUnit.BARS: "K-line bars",
    GapUnit.ROWS: "rows lost, of a `dropped` gap",
}
_STATUSES: Final[dict[str, str]] = {
    GapStatus.OPEN: "still lasting, or not backfilled yet",
    GapStatus.FILLED: "every record of the span is stored",
    GapStatus.PARTIAL: "some of it could not be fetched: `/trade` keeps only the latest trades",
    GapStatus.UNRECOVERABLE: "depth and snapshots: the states during the hole are lost, the "
    "current one was refreshed; `dropped` rows",
}

TABLE_DOCS: Final[dict[str, str]] = {
    "trades": "Every trade pushed (`T`) or backfilled from `/trade`.",
    "depth": "Every order book pushed (`D`): the whole visible book, not an increment.",
    "snapshots": "Every quote snapshot pushed (`S`), with the day's cumulative volume.",
    "klines": "K-line bars (`K`, `/history`); the latest version of a bar replaces earlier ones.",
    "kline_updates": "Every K-line push as it came (`K`): the live service pushes the forming "
    "bar again each time it changes; replay sends these at their receive times.",
    "gaps": "The ledger: every hole in the record, found live or at start-up, and what its "
    "backfill recovered. A hole neither filled nor listed here does not exist.",
    "instruments": "`/instrument-info` per code per day.",
}

COLUMN_DOCS: Final[dict[str, dict[str, str]]] = {
    "trades": {
        "ts": _TS,
        "price": "trade price",
        "size": "trade size (shares, contracts or coins)",
        "side": "direction as the API gives it (`d`): 0 unknown, 1 buy, 2 sell",
        "k": "how many identical trades (same code, second, price, size and side) came "
        "earlier in that second: 0 for the first. With it, two identical trades are two rows, "
        "and live, backfill and a second recorder merge without duplicates",
        **_dp("price, size"),
    },
    "depth": {
        "ts": _TS,
        "bid_px": "best bid price (NULL when the bid side is empty)",
        "bid_sz": "size at the best bid",
        "ask_px": "best ask price (NULL when the ask side is empty)",
        "ask_sz": "size at the best ask",
        "levels": "levels on the deeper side of the book",
        "bids": "the bid side as JSON `[[price, size], ...]`, best first, each number with "
        "the digits it was received with (`[[212.30,100]]`)",
        "asks": "the ask side as JSON `[[price, size], ...]`, best first, as `bids`",
    },
    "snapshots": {
        "ts": _TS,
        "last": "last price (`lp`)",
        "prev_close": "previous close (`yp`)",
        "open": "day open",
        "high": "day high",
        "low": "day low",
        "volume": "day volume, cumulative for the trading day (`v`)",
        "turnover": "day turnover, cumulative for the trading day (`t`)",
        "suspended": "`s`: 0 trading, 1 suspended",
        "session": "US trading session (`tt`): 0 unknown, 1 night, 2 pre-market, 3 intraday, "
        "4 after-hours; NULL for other markets",
        "extended": 'US extended-session quotes as JSON `{"pq"|"aq"|"nq": [last, '
        "prev_close, high, low, ts, volume, turnover]}` (pre-market, after-hours, night); "
        "NULL when none; numbers with their received digits",
        **_dp("last, prev_close, open, high, low, volume, turnover"),
    },
    "klines": {
        "ts": "bar open time (nanoseconds since 1970 UTC)",
        "kt": "bar type: 1 5 15 30 60 120 240 minutes, 1001 day, 1007 week, 1030 month, 2001 year",
        "open": "bar open",
        "close": "bar close (the latest price while the bar is open)",
        "high": "bar high",
        "low": "bar low",
        "volume": "bar volume",
        **_dp("open, close, high, low, volume"),
    },
    "kline_updates": {
        "ts": "open time of the bar pushed (nanoseconds since 1970 UTC)",
        "kt": "bar type, as in `klines`",
        "open": "bar open, as pushed",
        "close": "bar close as pushed: the latest price when the push came",
        "high": "bar high, as pushed",
        "low": "bar low, as pushed",
        "volume": "bar volume, as pushed",
        "recv_ts": "local time the push was received (nanoseconds): when replay sends it",
        **_dp("open, close, high, low, volume"),
    },
    "gaps": {
        "ts": "start of the hole: the last record of the code and stream before it",
        "end_ts": "end of the hole (the first record after it); NULL while it lasts",
        "stream": _values(_STREAMS, (*Stream, *Other)),
        "cause": _values(_CAUSES, tuple(GapCause)),
        "detected_ts": "local time the hole was found (nanoseconds)",
        "backfilled": "rows the backfill brought: trades or bars; for depth and snapshots "
        "(no history in the API) the current state refreshed",
        "missing": "what could not be recovered, in `missing_unit`; 0 once filled; NULL "
        "when not known",
        "missing_unit": _values(_UNITS, tuple(GapUnit)),
        "status": _values(_STATUSES, tuple(GapStatus)),
        "detail": "a sentence on what happened and why a figure is unknown",
        "lost_volume": "volume traded inside the hole and not stored (snapshot day volume "
        "across it minus the trades recorded and backfilled); 0 when filled; NULL when not "
        "known, never 0 for unknown",
        "lost_trades": "trades lost, where known: 0 when filled; NULL otherwise",
    },
    "instruments": {
        "ts": "the UTC day the row describes (midnight, nanoseconds)",
        "exchange": "listing exchange (`NASDAQ`, `HKEX`, `SSE`, `SZSE`, ...)",
        "currency": "trading currency",
        "name_cn": "name in Chinese",
        "name_en": "name in English",
        "lot_size": "board lot (shares per lot)",
        "total_shares": "total shares",
        "outstanding_shares": "shares outstanding",
        "eps": "earnings per share",
        "net_assets": "net assets per share",
        "dividend_yield": "dividend yield",
        "price_dp": "NULL: per-code decimals of releases before #19 (each row keeps its own "
        "in `dp` now)",
        "size_dp": "NULL, as `price_dp`",
        "turnover_dp": "NULL, as `price_dp`",
        "recv_ts": "local time the reference data was received (nanoseconds)",
    },
}


def describe(table: str, column: str) -> str:
    """The words for one column; ``UNDOCUMENTED`` when it has none yet."""
    words = COLUMN_DOCS.get(table, {}).get(column) or _COMMON.get(column)
    return words or _UNDOCUMENTED


def undocumented() -> list[str]:
    """``table.column`` of every column without words."""
    return [
        f"{t.name}.{name}"
        for t in TABLES
        for name in t.names
        if _UNDOCUMENTED in describe(t.name, name)
    ]


def markdown() -> str:
    """``docs/schema.md``: a table per table, its columns, types and dedup keys."""
    out = [
        "# The tables and their columns",
        "",
        "Generated from `recorder/schema.py` by `qos-recorder schema --markdown > "
        "docs/schema.md`; a test fails when this file is stale. Times are integer nanoseconds "
        "since 1970 UTC in SQLite and `TIMESTAMP` in QuestDB; every table is partitioned by "
        "day on `ts` (QuestDB) and has a unique index on its dedup keys (SQLite).",
        "",
    ]
    for table in TABLES:
        out += _table(table)
    return "\n".join(out)


def _table(table: Table) -> list[str]:
    keep = "the newest version replaces the stored one" if table.upsert else "the first stays"
    lines = [
        f"## {table.name}",
        "",
        TABLE_DOCS.get(table.name, _UNDOCUMENTED),
        "",
        f"Dedup keys: {', '.join(f'`{k}`' for k in table.keys)} ({keep}).",
        "",
        "| column | QuestDB | SQLite | meaning |",
        "|---|---|---|---|",
    ]
    for name, kind in table.columns:
        qdb = "SYMBOL" if kind == "sym" else _QDB_TYPE[kind]
        sqlite = _SQLITE_TYPE[kind].removesuffix(" NOT NULL")
        key = " (key)" if name in table.keys else ""
        lines.append(f"| `{name}`{key} | {qdb} | {sqlite} | {describe(table.name, name)} |")
    lines.append("")
    return lines
