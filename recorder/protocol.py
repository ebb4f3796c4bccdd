"""The QOS wire protocol: frame bytes in, typed records out, and commands back out.

Pure and I/O free. Push frames carry ``tp`` (T, D, S, K); command replies carry ``type``.
Prices, sizes and amounts arrive as decimal strings and become floats, and every record
also keeps the strings themselves (``text``), so what was received can be given back digit
for digit (``"212.30"`` stays ``"212.30"``); ``ts`` arrives in seconds and becomes integer
nanoseconds. Every record also carries ``recv_ts``, the local
receive time in nanoseconds, given by the caller.

Anything malformed raises :class:`~recorder.exceptions.DecodeError` with the raw frame, so
the caller can count it and keep it in the dead-letter file. An unknown ``tp`` is not an
error: :func:`decode` returns ``None`` for it and the caller counts it.

What "malformed" means beyond the shapes: every ``ts`` (trades, books, snapshots and their
``pq``/``aq``/``nq`` quotes, K-lines) must be whole seconds in ``[TS_MIN, TS_MAX)``, i.e.
1970-01-01 up to 2100-01-01, so a timestamp in milliseconds or absurdly far ahead never
reaches a database that cannot hold it as nanoseconds. Decimal strings must be plain
ASCII decimals (digits, at most one ``.``, a leading ``-`` only where the field may be
negative); Python's ``float()`` would also take ``"1_000"``, ``" 1"``, ``"1e3"``, ``"inf"``
and other scripts' digits. Sizes and volumes are never negative.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Final, TypeAlias

import orjson

from .exceptions import DecodeError

NS: Final = 1_000_000_000
#: The window of a sane ``ts`` in seconds: 1970-01-01 up to (not including) 2100-01-01.
TS_MIN: Final = 0
TS_MAX: Final = 4_102_444_800

#: The K-line types of the reference: minutes, hours, day, week, month, year.
KLINE_TYPES: Final = frozenset({1, 5, 15, 30, 60, 120, 240, 1001, 1007, 1030, 2001})
#: Markets of the reference, ``MARKET:SYMBOL``.
MARKETS: Final = frozenset({"US", "HK", "SH", "SZ", "CF", "FX", "CM", "IX", "SI"})


class Stream(StrEnum):
    """A QOS push stream: its name in the config and the tables, its push ``tp`` and its
    subscribe and cancel commands. The one place a stream is mapped to anything."""

    TRADES = "trades"
    DEPTH = "depth"
    SNAPSHOTS = "snapshots"
    KLINES = "klines"

    @property
    def tp(self) -> str:
        """The push frame's ``tp``, which is also the subscribe command: T, D, S or K."""
        return _TP[self]

    @property
    def cancel(self) -> str:
        """The cancel command: TC, DC, SC or KC."""
        return _TP[self] + "C"

    @classmethod
    def of_tp(cls, tp: str) -> Stream:
        """The stream of a push ``tp``; KeyError for another."""
        return _OF_TP[tp]

    @classmethod
    def of_command(cls, kind: str) -> tuple[Stream, bool] | None:
        """A subscribe or cancel command's stream and whether it subscribes; else None."""
        stream = _OF_TP.get(kind.removesuffix("C"))
        if stream is None or kind not in (stream.tp, stream.cancel):
            return None
        return stream, kind == stream.tp


_TP: Final[dict[Stream, str]] = {
    Stream.TRADES: "T",
    Stream.DEPTH: "D",
    Stream.SNAPSHOTS: "S",
    Stream.KLINES: "K",
}
_OF_TP: Final[dict[str, Stream]] = {tp: stream for stream, tp in _TP.items()}
STREAMS: Final[tuple[Stream, ...]] = tuple(Stream)
#: The heartbeat command.
HEARTBEAT: Final = "H"
#: The one-off requests and what each asks for: a push ``tp``, or ``I`` instrument info
#: (``RH`` is K-lines ending at a time, ``RK`` the latest).
REQUESTS: Final[dict[str, str]] = {"RS": "S", "RT": "T", "RD": "D", "RI": "I", "RK": "K", "RH": "K"}
#: Every command type a client may send: the heartbeat, subscribe and cancel per stream,
#: the requests. The one place command letters are written, with ``Stream.tp``.
COMMAND_TYPES: Final = frozenset(
    {HEARTBEAT, *(s.tp for s in STREAMS), *(s.cancel for s in STREAMS), *REQUESTS}
)
#: The most trades one ``RT`` command or ``/trade`` request returns per code.
MAX_TRADE_COUNT: Final = 50


@dataclass(slots=True)
class Trade:
    """One trade. ``k`` counts earlier identical trades of the same code and second.
    ``text`` holds the wire strings of price and size (empty when not decoded)."""

    stream: ClassVar[Stream] = Stream.TRADES
    code: str
    ts: int
    price: float
    size: float
    side: int
    recv_ts: int
    k: int = 0
    source: str = "live"
    text: tuple[str, ...] = ()


Level: TypeAlias = tuple[float, float]
#: A level's wire strings, ``(price, size)``.
LevelText: TypeAlias = tuple[str, str]


@dataclass(slots=True)
class Depth:
    """The whole visible book of one code: bids and asks best first, ``(price, size)``.
    ``n`` counts earlier identical books of the same code and second; ``bid_text`` and
    ``ask_text`` hold the levels' wire strings (empty when not decoded)."""

    stream: ClassVar[Stream] = Stream.DEPTH
    code: str
    ts: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    recv_ts: int
    source: str = "live"
    n: int = 0
    bid_text: tuple[LevelText, ...] = ()
    ask_text: tuple[LevelText, ...] = ()


@dataclass(slots=True, frozen=True)
class SessionQuote:
    """A US extended-session quote inside a snapshot (``pq``, ``aq`` or ``nq``); ``text``
    holds the wire strings of its decimals in field order."""

    last: float
    prev_close: float
    high: float
    low: float
    ts: int
    volume: float
    turnover: float
    text: tuple[str, ...] = ()


@dataclass(slots=True)
class Snapshot:
    """A snapshot; ``volume`` and ``turnover`` are cumulative for the trading day. ``n``
    counts earlier snapshots of the same code and second with the same volume and last.
    ``text`` holds the wire strings of last to turnover in field order."""

    stream: ClassVar[Stream] = Stream.SNAPSHOTS
    code: str
    ts: int
    last: float
    prev_close: float
    open: float
    high: float
    low: float
    volume: float
    turnover: float
    suspended: int
    session: int | None
    recv_ts: int
    extended: dict[str, SessionQuote] = field(default_factory=dict)
    source: str = "live"
    n: int = 0
    text: tuple[str, ...] = ()


@dataclass(slots=True)
class Kline:
    """One K-line bar; ``ts`` is the bar's open time. A later push of a bar replaces it in
    ``klines``, and every push is kept in ``kline_updates``, where ``n`` counts identical
    earlier pushes of the bar. ``text`` holds the wire strings of open to volume in field
    order."""

    stream: ClassVar[Stream] = Stream.KLINES
    code: str
    kt: int
    ts: int
    open: float
    close: float
    high: float
    low: float
    volume: float
    recv_ts: int
    source: str = "live"
    text: tuple[str, ...] = ()
    n: int = 0


@dataclass(slots=True)
class Reply:
    """A reply to a command: ``msg`` is ``"OK"`` on success, a description otherwise."""

    type: str
    msg: str
    time: int | None
    reqid: int | None
    data: list[Any] | None

    @property
    def ok(self) -> bool:
        return self.msg == "OK"


class Wire:
    """The wire field letters of push frames and REST records (``qos-protocol.md``), written
    here only: the decoders, :func:`push_frame` and the simulator spell every field through
    this table. ``v`` is a size on trades and levels and a volume elsewhere."""

    TP: Final = "tp"
    CODE: Final = "c"
    TS: Final = "ts"
    PRICE: Final = "p"
    SIZE: Final = "v"
    SIDE: Final = "d"
    BIDS: Final = "b"
    ASKS: Final = "a"
    LAST: Final = "lp"
    PREV_CLOSE: Final = "yp"
    OPEN: Final = "o"
    HIGH: Final = "h"
    LOW: Final = "l"
    CLOSE: Final = "cl"
    VOLUME: Final = "v"
    TURNOVER: Final = "t"
    SUSPENDED: Final = "s"
    SESSION: Final = "tt"
    KT: Final = "kt"
    #: the bars of one code in K-line data, and a K-line request's count, adjustment, end
    BARS: Final = "k"
    COUNT: Final = "co"
    ADJUST: Final = "a"
    END: Final = "e"
    #: ``/instrument-info``
    EXCHANGE: Final = "e"
    CURRENCY: Final = "tc"
    NAME_CN: Final = "nc"
    NAME_EN: Final = "ne"
    LOT_SIZE: Final = "ls"
    TOTAL_SHARES: Final = "ts"
    OUTSTANDING_SHARES: Final = "os"
    EPS: Final = "ep"
    NET_ASSETS: Final = "na"
    DIVIDEND_YIELD: Final = "dy"


Record: TypeAlias = Trade | Depth | Snapshot | Kline
EXTENDED_SESSIONS: Final = ("pq", "aq", "nq")
#: The wire keys of each record's decimals, in the order of its fields and its ``text``.
TRADE_FIELDS: Final = (Wire.PRICE, Wire.SIZE)
SNAPSHOT_FIELDS: Final = (
    Wire.LAST,
    Wire.PREV_CLOSE,
    Wire.OPEN,
    Wire.HIGH,
    Wire.LOW,
    Wire.VOLUME,
    Wire.TURNOVER,
)
QUOTE_FIELDS: Final = (Wire.LAST, Wire.PREV_CLOSE, Wire.HIGH, Wire.LOW, Wire.VOLUME, Wire.TURNOVER)
KLINE_FIELDS: Final = (Wire.OPEN, Wire.CLOSE, Wire.HIGH, Wire.LOW, Wire.VOLUME)


# --- decoding -----------------------------------------------------------------------------


class _Bad(Exception):
    """Internal: a field is missing or of the wrong type; becomes a DecodeError."""


def plain(text: str) -> bool:
    """Whether ``text`` is a plain unsigned ASCII decimal: digits with at most one ``.``."""
    return text.isascii() and text.replace(".", "", 1).isdigit()


def _dec(obj: dict[str, Any], key: str, signed: bool = True) -> float:
    """A decimal field; ``signed=False`` for sizes and volumes, which are never negative."""
    try:
        value = obj[key]
    except KeyError:
        raise _Bad(f"missing field {key!r}") from None
    if type(value) is str:
        digits = value[1:] if signed and value[:1] == "-" else value
        if not plain(digits):
            raise _Bad(f"field {key!r} is not a plain decimal: {value[:40]!r}")
        number = float(value)
    elif type(value) is int or type(value) is float:
        if not signed and value < 0:
            raise _Bad(f"field {key!r} is negative")
        try:
            number = float(value)
        except OverflowError:
            raise _Bad(f"field {key!r} is out of range") from None
    else:
        raise _Bad(f"field {key!r} is not a decimal string")
    if not math.isfinite(number):
        raise _Bad(f"field {key!r} is not finite")
    return number


def _size(obj: dict[str, Any], key: str) -> float:
    return _dec(obj, key, signed=False)


#: Plain unsigned decimal strings the hot path has checked, and their values. Trades repeat
#: the same few hundred prices and sizes per code, so checking plainness once per distinct
#: string makes the hot path faster than calling float() on every field; cleared when full.
_FLOATS: dict[str, float] = {}
_FLOATS_MAX: Final = 16384


def _plain_float(text: str) -> float | None:
    """``text`` as a float if it is a plain unsigned decimal and finite (remembered), else
    None (the checked path then says what is wrong)."""
    if not plain(text):
        return None
    number = float(text)
    if number - number != 0:  # inf: 400 digits
        return None
    if len(_FLOATS) >= _FLOATS_MAX:
        _FLOATS.clear()
    _FLOATS[text] = number
    return number


def _text(obj: dict[str, Any], *keys: str) -> tuple[str, ...]:
    """The wire strings of decimal fields :func:`_dec` accepted (a tolerated JSON number
    becomes its shortest decimal form)."""
    return tuple(v if type(v := obj[key]) is str else fmt(float(v)) for key in keys)


def _int(obj: dict[str, Any], key: str) -> int:
    try:
        value = obj[key]
    except KeyError:
        raise _Bad(f"missing field {key!r}") from None
    if type(value) is not int:
        raise _Bad(f"field {key!r} is not an integer")
    return value


def _ts(obj: dict[str, Any]) -> int:
    seconds = _int(obj, Wire.TS)
    if not TS_MIN <= seconds < TS_MAX:
        raise _Bad(
            f"field {Wire.TS!r} is {seconds}: not seconds between 1970 and 2100 (milliseconds?)"
        )
    return seconds * NS


def _code(obj: dict[str, Any]) -> str:
    code = obj.get(Wire.CODE)
    if type(code) is not str or ":" not in code:
        raise _Bad(f"field {Wire.CODE!r} is not a MARKET:SYMBOL code")
    return code


def _levels(obj: dict[str, Any], key: str) -> tuple[tuple[Level, ...], tuple[LevelText, ...]]:
    side = obj.get(key, [])
    if type(side) is not list:
        raise _Bad(f"field {key!r} is not a list of levels")
    levels = []
    texts = []
    for level in side:
        if type(level) is not dict:
            raise _Bad(f"field {key!r} holds a level that is not an object")
        levels.append((_dec(level, Wire.PRICE), _size(level, Wire.SIZE)))
        price, size = _text(level, Wire.PRICE, Wire.SIZE)
        texts.append((price, size))
    return tuple(levels), tuple(texts)


def trade_from(obj: dict[str, Any], recv_ts: int) -> Trade:
    """A trade from a ``T`` push or a ``/trade`` record."""
    side = _int(obj, Wire.SIDE)
    if side not in (0, 1, 2):
        raise _Bad(f"field {Wire.SIDE!r} is {side}, not 0, 1 or 2")
    price, size = _dec(obj, Wire.PRICE), _size(obj, Wire.SIZE)
    return Trade(_code(obj), _ts(obj), price, size, side, recv_ts, text=_text(obj, *TRADE_FIELDS))


def depth_from(obj: dict[str, Any], recv_ts: int) -> Depth:
    """A book from a ``D`` push or a ``/depth`` record."""
    (bids, bid_text), (asks, ask_text) = _levels(obj, Wire.BIDS), _levels(obj, Wire.ASKS)
    return Depth(_code(obj), _ts(obj), bids, asks, recv_ts, bid_text=bid_text, ask_text=ask_text)


def _session_quote(obj: Any, key: str) -> SessionQuote:
    if type(obj) is not dict:
        raise _Bad(f"field {key!r} is not an object")
    return SessionQuote(
        _dec(obj, Wire.LAST),
        _dec(obj, Wire.PREV_CLOSE),
        _dec(obj, Wire.HIGH),
        _dec(obj, Wire.LOW),
        _ts(obj),
        _size(obj, Wire.VOLUME),
        _dec(obj, Wire.TURNOVER),
        _text(obj, *QUOTE_FIELDS),
    )


def snapshot_from(obj: dict[str, Any], recv_ts: int) -> Snapshot:
    """A snapshot from an ``S`` push or a ``/snapshot`` record."""
    session = obj.get(Wire.SESSION)
    if session is not None and type(session) is not int:
        raise _Bad(f"field {Wire.SESSION!r} is not an integer")
    extended = {
        key: _session_quote(obj[key], key) for key in EXTENDED_SESSIONS if obj.get(key) is not None
    }
    suspended = obj.get(Wire.SUSPENDED, 0)
    if type(suspended) is not int:
        raise _Bad(f"field {Wire.SUSPENDED!r} is not an integer")
    return Snapshot(
        _code(obj),
        _ts(obj),
        _dec(obj, Wire.LAST),
        _dec(obj, Wire.PREV_CLOSE),
        _dec(obj, Wire.OPEN),
        _dec(obj, Wire.HIGH),
        _dec(obj, Wire.LOW),
        _size(obj, Wire.VOLUME),
        _dec(obj, Wire.TURNOVER),
        suspended,
        session,
        recv_ts,
        extended,
        text=_text(obj, *SNAPSHOT_FIELDS),
    )


def kline_from(obj: dict[str, Any], recv_ts: int, code: str | None = None) -> Kline:
    """A bar from a ``K`` push or a ``/kline`` / ``/history`` bar."""
    kt = _int(obj, Wire.KT)
    if kt not in KLINE_TYPES:
        raise _Bad(f"field {Wire.KT!r} is {kt}, not a K-line type")
    return Kline(
        code if code is not None and Wire.CODE not in obj else _code(obj),
        kt,
        _ts(obj),
        _dec(obj, Wire.OPEN),
        _dec(obj, Wire.CLOSE),
        _dec(obj, Wire.HIGH),
        _dec(obj, Wire.LOW),
        _size(obj, Wire.VOLUME),
        recv_ts,
        text=_text(obj, *KLINE_FIELDS),
    )


_PUSH: dict[str, Callable[[dict[str, Any], int], Record]] = {
    "T": trade_from,
    "D": depth_from,
    "S": snapshot_from,
    "K": kline_from,
}


def decode(frame: bytes | str, recv_ts: int) -> Record | Reply | None:
    """Decode one WebSocket frame: a push record, a command reply, or ``None`` for unknown."""
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}", _raw(frame)) from None
    if type(obj) is not dict:
        raise DecodeError("frame is not a JSON object", _raw(frame))
    tp = obj.get(Wire.TP)
    if tp == "T":
        # The hot path, inlined (a call costs as much as the checks): a well-formed trade
        # returns here; anything else goes on to the checked path, which says what is wrong.
        code, p, v = obj.get(Wire.CODE), obj.get(Wire.PRICE), obj.get(Wire.SIZE)
        ts, d = obj.get(Wire.TS), obj.get(Wire.SIDE)
        if (
            type(code) is str
            and type(p) is str
            and type(v) is str
            and type(ts) is int
            and type(d) is int
            and 0 <= d <= 2
            and 0 <= ts < 4_102_444_800  # [TS_MIN, TS_MAX)
            and ":" in code
        ):
            # a price or size string seen before is a dict hit, cheaper than float() alone
            price = _FLOATS.get(p)
            if price is None:
                price = _plain_float(p)
            size = _FLOATS.get(v)
            if size is None:
                size = _plain_float(v)
            if price is not None and size is not None:
                return Trade(code, ts * NS, price, size, d, recv_ts, 0, "live", (p, v))
    try:
        if tp is not None:
            if type(tp) is not str:
                raise _Bad(f"field {Wire.TP!r} is not a string")
            parse = _PUSH.get(tp)
            return None if parse is None else parse(obj, recv_ts)
        if "type" in obj:
            return _reply(obj)
    except _Bad as exc:
        raise DecodeError(str(exc), _raw(frame)) from None
    raise DecodeError("frame has neither 'tp' nor 'type'", _raw(frame))


def _reply(obj: dict[str, Any]) -> Reply:
    kind, msg = obj.get("type"), obj.get("msg")
    if type(kind) is not str:
        raise _Bad("field 'type' is not a string")
    if type(msg) is not str:
        raise _Bad("field 'msg' is missing or not a string")
    time, reqid, data = obj.get("time"), obj.get("reqid"), obj.get("data")
    if time is not None and type(time) is not int:
        raise _Bad("field 'time' is not an integer")
    if reqid is not None and type(reqid) is not int:
        raise _Bad("field 'reqid' is not an integer")
    if data is not None and type(data) is not list:
        raise _Bad("field 'data' is not a list")
    return Reply(kind, msg, time, reqid, data)


def _raw(frame: bytes | str) -> bytes:
    return frame.encode() if isinstance(frame, str) else bytes(frame)


@dataclass(slots=True)
class Instrument:
    """Reference data of one code from ``/instrument-info`` (crypto: only the first three
    fields)."""

    code: str
    exchange: str | None
    currency: str | None
    name_cn: str | None = None
    name_en: str | None = None
    lot_size: int | None = None
    total_shares: int | None = None
    outstanding_shares: int | None = None
    eps: float | None = None
    net_assets: float | None = None
    dividend_yield: float | None = None


def instrument_from(obj: Any) -> Instrument:
    """An ``/instrument-info`` record; DecodeError when it is not one."""
    try:
        if type(obj) is not dict:
            raise _Bad("instrument entry is not an object")

        def text(key: str) -> str | None:
            value = obj.get(key)
            return value if isinstance(value, str) else None

        def whole(key: str) -> int | None:
            value = obj.get(key)
            if isinstance(value, str) and plain(value) and "." not in value:  # a count as text
                return int(value)
            return value if type(value) is int else None

        def number(key: str) -> float | None:
            return _dec(obj, key) if obj.get(key) is not None else None

        return Instrument(
            _code(obj),
            text(Wire.EXCHANGE),
            text(Wire.CURRENCY),
            text(Wire.NAME_CN),
            text(Wire.NAME_EN),
            whole(Wire.LOT_SIZE),
            whole(Wire.TOTAL_SHARES),
            whole(Wire.OUTSTANDING_SHARES),
            number(Wire.EPS),
            number(Wire.NET_ASSETS),
            number(Wire.DIVIDEND_YIELD),
        )
    except _Bad as exc:
        raise DecodeError(str(exc), orjson.dumps(obj)) from None


def records_from(kind: str, data: list[Any], recv_ts: int) -> list[Record]:
    """Decode the ``data`` of an HTTP response or ``R*`` reply (``kind``: T, D, S, K)."""
    out: list[Record] = []
    try:
        if kind == "K":
            for entry in data:
                if type(entry) is not dict or type(entry.get(Wire.BARS)) is not list:
                    raise _Bad(f"K-line data entry has no {Wire.BARS!r} list")
                code = _code(entry)
                out.extend(kline_from(bar, recv_ts, code) for bar in entry[Wire.BARS])
            return out
        parse = _PUSH[kind]
        for obj in data:
            if type(obj) is not dict:
                raise _Bad("data entry is not an object")
            out.append(parse(obj, recv_ts))
    except _Bad as exc:
        raise DecodeError(str(exc), orjson.dumps(data)) from None
    return out


# --- encoding -----------------------------------------------------------------------------


def command(kind: str, reqid: int | None = None, **fields: Any) -> bytes:
    """Encode a client command such as ``command("T", codes=["US:AAPL"])``."""
    if kind not in COMMAND_TYPES:
        raise ValueError(f"unknown QOS command type {kind!r}")
    body: dict[str, Any] = {"type": kind}
    body.update((k, v) for k, v in fields.items() if v is not None)
    if reqid is not None:
        body["reqid"] = reqid
    return orjson.dumps(body)


def heartbeat(reqid: int | None = None) -> bytes:
    """The ``H`` heartbeat command."""
    return command(HEARTBEAT, reqid)


def subscribe(
    stream: Stream, codes: list[str], kt: int | None = None, reqid: int | None = None
) -> bytes:
    """A subscribe command for one stream; K-lines need ``kt``."""
    if stream is Stream.KLINES and kt is None:
        raise ValueError("a K-line subscription needs kt")
    return command(stream.tp, reqid, codes=codes, kt=kt)


def cancel(
    stream: Stream, codes: list[str], kt: int | None = None, reqid: int | None = None
) -> bytes:
    """A cancel (unsubscribe) command for one stream; K-lines need ``kt``."""
    if stream is Stream.KLINES and kt is None:
        raise ValueError("cancelling a K-line subscription needs kt")
    return command(stream.cancel, reqid, codes=codes, kt=kt)


def fmt(value: float) -> str:
    """A float as the decimal string the API would send (shortest round-trip form)."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def push_frame(record: Record) -> dict[str, Any]:
    """The QOS push frame (``tp``, string decimals, ``ts`` in seconds) of a record: the
    strings it was received with, digit for digit, where it kept them (``text``); else the
    shortest decimal form of its floats. The one place a record becomes a frame again; its
    keys come in the order the service sends them."""
    return _FRAME_OF[type(record)](record)


_TRADE_TP: Final = Stream.TRADES.tp
_DEPTH_TP: Final = Stream.DEPTH.tp
_SNAPSHOT_TP: Final = Stream.SNAPSHOTS.tp
_KLINE_TP: Final = Stream.KLINES.tp


def _trade_frame(record: Trade) -> dict[str, Any]:
    price, size = record.text or _shortest(record.price, record.size)
    return {
        Wire.TP: _TRADE_TP,
        Wire.CODE: record.code,
        Wire.PRICE: price,
        Wire.SIZE: size,
        Wire.TS: record.ts // NS,
        Wire.SIDE: record.side,
    }


def _depth_frame(record: Depth) -> dict[str, Any]:
    return {
        Wire.TP: _DEPTH_TP,
        Wire.CODE: record.code,
        Wire.BIDS: _book_frame(record.bids, record.bid_text),
        Wire.ASKS: _book_frame(record.asks, record.ask_text),
        Wire.TS: record.ts // NS,
    }


def _snapshot_frame(record: Snapshot) -> dict[str, Any]:
    lp, yp, o, h, lo, v, t = record.text or _shortest(
        record.last,
        record.prev_close,
        record.open,
        record.high,
        record.low,
        record.volume,
        record.turnover,
    )
    frame: dict[str, Any] = {
        Wire.TP: _SNAPSHOT_TP,
        Wire.CODE: record.code,
        Wire.LAST: lp,
        Wire.PREV_CLOSE: yp,
        Wire.OPEN: o,
        Wire.HIGH: h,
        Wire.LOW: lo,
        Wire.TS: record.ts // NS,
        Wire.VOLUME: v,
        Wire.TURNOVER: t,
        Wire.SUSPENDED: record.suspended,
    }
    if record.session is not None:
        frame[Wire.SESSION] = record.session
    for key, quote in record.extended.items():
        frame[key] = _quote_frame(quote)
    return frame


def _quote_frame(q: SessionQuote) -> dict[str, Any]:
    """A US snapshot's ``pq``/``aq``/``nq`` object."""
    lp, yp, h, lo, v, t = q.text or _shortest(
        q.last, q.prev_close, q.high, q.low, q.volume, q.turnover
    )
    return {
        Wire.LAST: lp,
        Wire.PREV_CLOSE: yp,
        Wire.HIGH: h,
        Wire.LOW: lo,
        Wire.TS: q.ts // NS,
        Wire.VOLUME: v,
        Wire.TURNOVER: t,
    }


def _kline_frame(record: Kline) -> dict[str, Any]:
    o, cl, h, lo, v = record.text or _shortest(
        record.open, record.close, record.high, record.low, record.volume
    )
    return {
        Wire.TP: _KLINE_TP,
        Wire.CODE: record.code,
        Wire.OPEN: o,
        Wire.CLOSE: cl,
        Wire.HIGH: h,
        Wire.LOW: lo,
        Wire.VOLUME: v,
        Wire.TS: record.ts // NS,
        Wire.KT: record.kt,
    }


#: the builder of each record type's frame; a push's ``tp``, looked up once (enum
#: attributes are slow to reach on the replay's path)
_FRAME_OF: Final[dict[type, Callable[[Any], dict[str, Any]]]] = {
    Trade: _trade_frame,
    Depth: _depth_frame,
    Snapshot: _snapshot_frame,
    Kline: _kline_frame,
}


def _shortest(*values: float) -> tuple[str, ...]:
    return tuple(fmt(value) for value in values)


def _book_frame(levels: tuple[Level, ...], text: tuple[LevelText, ...]) -> list[dict[str, str]]:
    if len(text) == len(levels):
        return [{Wire.PRICE: p, Wire.SIZE: v} for p, v in text]
    return [{Wire.PRICE: fmt(p), Wire.SIZE: fmt(v)} for p, v in levels]


def market_of(code: str) -> str:
    """``"US"`` for ``"US:AAPL"``."""
    return code.partition(":")[0]


def split_codes(entries: list[str] | tuple[str, ...]) -> list[str]:
    """Expand list entries such as ``"US:AAPL,TSLA"`` into single codes, order kept."""
    codes: list[str] = []
    for entry in entries:
        market, _, symbols = entry.partition(":")
        for symbol in symbols.split(","):
            code = f"{market}:{symbol.strip()}"
            if code not in codes:
                codes.append(code)
    return codes
