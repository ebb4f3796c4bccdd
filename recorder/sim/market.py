"""The simulated market: deterministic per seed, consistent across every stream.

Each tick draws trades per code from one ``random.Random(seed)``; snapshots carry the day's
cumulative volume and turnover of exactly those trades (kept as integers, so they add up),
K-lines aggregate them, depth brackets the last price, and the recent trades and bars are
kept for ``/trade`` and ``/history``. Several trades of one code share a second, identical
ones included. No I/O: the server pushes what :meth:`Market.step` returns.

A code trades only while its market is open (the reference's hours, lunch breaks included,
Monday to Friday; crypto 24 h; markets whose hours the reference leaves open always), as
``recorder.markets.is_open`` says, so the gap detector's silence rule and the coverage
picture's "market closed" agree with it; its past has minutes in those hours only and no
day bar for a day closed throughout. ``market_hours=False`` trades round the clock, for
tests. US snapshots carry the session (``tt``) of the moment.

Before a code's market starts (when the simulator first serves it), its past is a
deterministic function of the seed, the code and the minute: a random walk run backwards
from the starting price, one generator per (code, day). ``/kline`` and ``/history`` serve
any past range from it; every bar aggregates the minutes inside it (so bars of different
intervals agree with each other), and the live day's bars, snapshot open, high, low, volume
and turnover include the minutes of that day before the start.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias
from zoneinfo import ZoneInfo

from ..markets import bar_end, bar_open, is_open
from ..protocol import KLINE_TYPES, MAX_TRADE_COUNT, NS, Stream, Wire, market_of, split_codes

DEFAULT_CODES: Final = ("US:AAPL", "US:TSLA", "HK:700", "SH:600519", "CF:BTCUSDT")

#: price decimals, size decimals, start price (in price units), sizes (in size units)
_MARKET_SHAPE: Final[dict[str, tuple[int, int, int, tuple[int, ...]]]] = {
    "US": (2, 0, 21000, (1, 10, 100, 100, 200, 500)),
    "HK": (1, 0, 4000, (100, 100, 200, 500, 1000)),
    "SH": (2, 0, 150000, (100, 100, 200, 300)),
    "SZ": (2, 0, 2500, (100, 100, 200, 300)),
    "CF": (1, 3, 830000, (1, 10, 25, 100, 1000)),
}
_DEFAULT_SHAPE: Final = (4, 0, 10000, (1, 2, 5, 10))
#: Markets whose sizes and volumes come with trailing zeros cut (``"0.025"``, ``"1.25"``,
#: ``"10"``) and whose turnover carries ten decimals (``"147479220.1710000000"``, more
#: digits than a double holds), as the service sends crypto.
_TRIMMED: Final = frozenset({"CF"})
_TURNOVER_DP: Final = 10
#: /instrument-info per market: exchange, trading currency, lot size
_INSTRUMENT: Final[dict[str, tuple[str, str, int]]] = {
    "US": ("NASDAQ", "USD", 1),
    "HK": ("HKEX", "HKD", 100),
    "SH": ("SSE", "CNY", 100),
    "SZ": ("SZSE", "CNY", 100),
    "CF": ("BINANCE", "USDT", 1),
    "FX": ("FX", "USD", 1000),
    "CM": ("COMEX", "USD", 1),
    "IX": ("INDEX", "USD", 1),
    "SI": ("INDEX", "USD", 1),
}


_NY: Final = ZoneInfo("America/New_York")
#: whether a market trades on a UTC day, by (market, weekday, New York's UTC offset): the
#: simulator's calendar is Monday to Friday, so that is all the answer depends on
_OPEN_DAYS: dict[tuple[str, int, float], bool] = {}


def _trades_on(market: str, day: int) -> bool:
    """Whether ``market`` is open at some time of the UTC ``day`` (every session lasts over
    5 minutes, so a look every 5 minutes finds it)."""
    noon = dt.datetime.fromtimestamp(day * _DAY + _DAY // 2, _NY)
    offset = noon.utcoffset()
    key = (market, noon.weekday(), offset.total_seconds() if offset else 0.0)
    found = _OPEN_DAYS.get(key)
    if found is None:
        times = range(day * _DAY, (day + 1) * _DAY, 300)
        found = _OPEN_DAYS[key] = any(is_open(market, t * NS) is not False for t in times)
    return found


def us_session(ts: int) -> int:
    """The US session at ``ts`` (unix s) as ``tt``: 1 night, 2 pre-market, 3 intraday,
    4 after-hours; 0 in the pause between the night session and the pre-market."""
    local = dt.datetime.fromtimestamp(ts, _NY)
    minute = local.hour * 60 + local.minute
    if minute < 3 * 60 + 50 or minute >= 20 * 60:
        return 1
    if minute < 4 * 60:
        return 0
    if minute < 9 * 60 + 30:
        return 2
    return 3 if minute < 16 * 60 else 4


@dataclass(slots=True)
class _Bar:
    """A live bar in integer units (prices in the code's price units)."""

    open: int
    high: int
    low: int
    close: int
    volume: int

    @classmethod
    def of(cls, minute: Minute) -> _Bar:
        o, h, lo, cl, v, _ = minute
        return cls(o, h, lo, cl, v)


@dataclass
class _Code:
    code: str
    price_dp: int
    size_dp: int
    price: int
    sizes: tuple[int, ...]
    rng: random.Random
    trimmed: bool = False
    day: int = -1
    open: int = 0
    high: int = 0
    low: int = 0
    prev_close: int = 0
    volume: int = 0
    turnover: int = 0
    last_trade: tuple[int, int, int] | None = None
    trades: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=1000))
    bars: dict[int, dict[int, _Bar]] = field(default_factory=dict)
    #: the minute the live market began (unix s), and its price then
    started: int = 0
    start_price: int = 0
    #: the past: whole days (permanent, small) and the minutes of the days last used
    day_bar: dict[int, Minute | None] = field(default_factory=dict)
    minutes: OrderedDict[int, dict[int, Minute]] = field(default_factory=OrderedDict)


#: one minute of the past, in integer units: open, high, low, close, volume, turnover
Minute: TypeAlias = tuple[int, int, int, int, int, int]
_DAY: Final = 86400
_KEEP_DAYS: Final = 16  # days of minutes kept per code; older ones are made again
_EARLIEST: Final = 20 * 365 * _DAY  # how far back bars are served


def _dec(units: int, dp: int) -> str:
    """Integer units with ``dp`` implied decimals as a decimal string."""
    if dp == 0:
        return str(units)
    sign = "-" if units < 0 else ""
    digits = str(abs(units)).rjust(dp + 1, "0")
    return f"{sign}{digits[:-dp]}.{digits[-dp:]}"


def _trimmed(units: int, dp: int) -> str:
    """Like :func:`_dec`, trailing zeros of the fraction cut: ``"0.025"``, ``"10"``."""
    text = _dec(units, dp)
    return text.rstrip("0").rstrip(".") if "." in text else text


def _aggregate(parts: Iterable[Minute | None]) -> Minute | None:
    """Consecutive minutes (or bars) as one bar."""
    got = [p for p in parts if p is not None]
    if not got:
        return None
    return (
        got[0][0],
        max(p[1] for p in got),
        min(p[2] for p in got),
        got[-1][3],
        sum(p[4] for p in got),
        sum(p[5] for p in got),
    )


def _size(c: _Code, units: int) -> str:
    """A size or volume of ``c`` in integer size units, as the service writes it."""
    return _trimmed(units, c.size_dp) if c.trimmed else _dec(units, c.size_dp)


def _turnover(c: _Code, units: int) -> str:
    """A turnover in price units times size units, as the service writes it."""
    dp = c.price_dp + c.size_dp
    if c.trimmed:
        return _dec(units * 10 ** (_TURNOVER_DP - dp), _TURNOVER_DP)
    return _dec(units, dp)


class _Past:
    """The deterministic past of every code: made on demand from the seed, the code and
    the day, so any range is the same whenever it is asked for, and the live market starts
    where it ends (see the module's docstring)."""

    def __init__(
        self,
        seed: int,
        trading: Callable[[str, int], bool],
        trades_on: Callable[[str, int], bool],
    ) -> None:
        self.seed = seed
        self.trading = trading
        self.trades_on = trades_on

    def join(self, c: _Code) -> None:
        """Start the live day and the live bars where the past left them."""
        day = c.started // _DAY
        today = list(self._day_minutes(c, day).values())
        c.day, c.open, c.high, c.low = day, c.price, c.price, c.price
        if today:
            c.open = c.prev_close = today[0][0]
            c.high = max(c.price, *(m[1] for m in today))
            c.low = min(c.price, *(m[2] for m in today))
            c.volume = sum(m[4] for m in today)
            c.turnover = sum(m[5] for m in today)
        for kt in KLINE_TYPES:
            opened = bar_open(c.started, kt)
            past = self.synthetic_bar(c, kt, opened)
            if past is not None:
                c.bars.setdefault(kt, {})[opened] = _Bar.of(past)

    def _day_minutes(self, c: _Code, day: int) -> dict[int, Minute]:
        """The minutes of ``day`` before the live market began (empty after that)."""
        first_day = c.started // _DAY
        if day > first_day:
            return {}
        cached = c.minutes.get(day)
        if cached is not None:
            c.minutes.move_to_end(day)
            return cached
        minutes = self._first_day(c) if day == first_day else self._bridge(c, day)
        c.minutes[day] = minutes
        while len(c.minutes) > _KEEP_DAYS:
            c.minutes.popitem(last=False)
        return minutes

    def _first_day(self, c: _Code) -> dict[int, Minute]:
        """The minutes of the first day before the start: a walk backwards from the start."""
        day = c.started // _DAY
        rng = random.Random(f"{self.seed}/{c.code}/{day}")
        close, out = c.start_price, {}
        for opened in range(c.started - 60, day * _DAY - 1, -60):
            if not self.trading(c.code, opened):
                continue  # no minute while the market was closed
            o = max(1, close + rng.choice((-2, -1, 0, 0, 1, 2)))
            h = max(o, close) + rng.randrange(0, 3)
            lo = max(1, min(o, close) - rng.randrange(0, 3))
            v = rng.choice(c.sizes) * rng.randrange(1, 20)
            out[opened] = (o, h, lo, close, v, v * close)
            close = o
        return dict(sorted(out.items()))

    def _day_bar(self, c: _Code, day: int) -> Minute | None:
        """A whole day of the past, made at the day's level (cheap: no minutes): each day
        closes where the next one opened."""
        first_day = c.started // _DAY
        if day >= first_day:
            return _aggregate(self._day_minutes(c, day).values()) if day == first_day else None
        if day in c.day_bar:
            return c.day_bar[day]
        d = day + 1
        while d < first_day and d not in c.day_bar:
            d += 1
        # the computed days form one run up to the first day: the walk backwards starts
        # at the open of the first of them with a bar (a closed day has none)
        after = d
        while after < first_day and c.day_bar[after] is None:
            after += 1
        if after < first_day:
            bar = c.day_bar[after]
            assert bar is not None
            close = bar[0]
        else:
            today = self._day_minutes(c, first_day)
            close = next(iter(today.values()))[0] if today else c.start_price
        for past in range(d - 1, day - 1, -1):  # backwards to the day asked for
            if not self.trades_on(c.code, past):
                c.day_bar[past] = None  # a day its market was closed throughout
                continue
            rng = random.Random(f"{self.seed}/{c.code}/{past}")
            o = max(1, close + rng.randint(-40, 40))
            h = max(o, close) + rng.randrange(1, 30)
            lo = max(1, min(o, close) - rng.randrange(1, 30))
            v = sum(c.sizes) * rng.randrange(200, 800)
            c.day_bar[past] = (o, h, lo, close, v, v * (o + close) // 2)
            close = o
        return c.day_bar[day]

    def _bridge(self, c: _Code, day: int) -> dict[int, Minute]:
        """The minutes of a whole past day: a walk from its open to its close that stays
        inside its high and low, touches both, and splits its volume exactly."""
        bar = self._day_bar(c, day)
        if bar is None:  # its market was closed all day
            return {}
        o, h, lo, cl, v, _ = bar
        rng = random.Random(f"{self.seed}/{c.code}/{day}/minutes")
        # the day's volume is split over the minutes its market was open only
        times = [t for t in range(day * _DAY, (day + 1) * _DAY, 60) if self.trading(c.code, t)]
        n = len(times)
        if n == 0:
            return {}
        walk = [0]
        for _ in range(n):
            walk.append(walk[-1] + rng.choice((-2, -1, 0, 0, 1, 2)))
        drift = walk[-1] - (cl - o)
        closes = [min(h, max(lo, o + walk[i] - drift * i // n)) for i in range(n + 1)]
        closes[-1] = cl
        weights = [rng.random() + 0.1 for _ in range(n)]
        total = sum(weights)
        volumes = [int(v * w / total) for w in weights]
        for i in range(v - sum(volumes)):
            volumes[i % n] += 1
        top, bottom = rng.randrange(n), rng.randrange(n)
        out: dict[int, Minute] = {}
        for i in range(n):
            first, last = closes[i], closes[i + 1]
            high = h if i == top else max(first, last)
            low = lo if i == bottom else min(first, last)
            out[times[i]] = (first, high, low, last, volumes[i], volumes[i] * last)
        return out

    def synthetic_bar(self, c: _Code, kt: int, opened: int) -> Minute | None:
        """The part of a bar before the live market began, or None if there is none."""
        end = min(bar_end(opened, kt), c.started)
        if opened >= end:
            return None
        if kt < 1000:
            minutes = self._day_minutes(c, opened // _DAY)
            return _aggregate(m for t, m in minutes.items() if opened <= t < end)
        days = range(opened // _DAY, (end - 1) // _DAY + 1)
        return _aggregate(self._day_bar(c, d) for d in days)


class Market:
    """Every simulated code's state; :meth:`step` advances them all by one tick."""

    def __init__(
        self,
        codes: tuple[str, ...] = DEFAULT_CODES,
        seed: int = 1,
        trades_per_second: float = 4.0,
        tick: float = 0.1,
        depth_levels: int = 5,
        clock: Callable[[], float] = time.time,
        market_hours: bool = True,
    ) -> None:
        self.clock = clock
        self.market_hours = market_hours
        self._open: dict[str, tuple[int, bool]] = {}  # market -> (second, open then)
        self.seed = seed
        self.trades_per_second = trades_per_second
        self.tick = tick
        self.depth_levels = depth_levels
        self.past = _Past(seed, self.trading, self._trades_on)
        self.codes = {c: self._new_code(c) for c in split_codes(list(codes))}

    def ensure(self, code: str) -> None:
        """Serve ``code`` from now on (any well-formed code of a known market is served)."""
        if code not in self.codes:
            self.codes[code] = self._new_code(code)

    def _new_code(self, code: str) -> _Code:
        # one generator per code, seeded by the seed and the code: a code's market is the
        # same whichever codes were asked for before it
        rng = random.Random(f"{self.seed}/{code}")
        price_dp, size_dp, price, sizes = _MARKET_SHAPE.get(market_of(code), _DEFAULT_SHAPE)
        price += rng.randrange(0, price // 10 + 1)
        now = int(self.clock())
        trimmed = market_of(code) in _TRIMMED
        c = _Code(code, price_dp, size_dp, price, sizes, rng, trimmed, prev_close=price)
        c.started, c.start_price = now - now % 60, price
        self.past.join(c)
        return c

    def step(self, now: float) -> list[dict[str, Any]]:
        """Advance the market one tick at wall time ``now``; the push frames it produced."""
        ts = int(now)
        frames: list[dict[str, Any]] = []
        rate = self.trades_per_second * self.tick
        for c in self.codes.values():
            if c.day != ts // 86400:
                self._new_day(c, ts)
            if not self.trading(c.code, ts):
                continue  # a closed market pushes nothing
            traded: list[tuple[int, int]] = []
            for _ in range(int(rate + c.rng.random())):
                frames.append(self._trade(c, ts))
                assert c.last_trade is not None
                traded.append(c.last_trade[:2])
            if traded or c.rng.random() < self.tick:
                frames.append(self.snapshot(c.code, ts))
                frames.append(self.depth(c.code, ts))
            if traded:
                frames.extend(self._bars(c, ts, traded))
        return frames

    def trading(self, code: str, ts: int) -> bool:
        """Whether ``code``'s market is open at ``ts`` (unix s); always without hours."""
        if not self.market_hours:
            return True
        market = market_of(code)
        at, open_ = self._open.get(market, (-1, False))
        if at != ts:
            open_ = is_open(market, ts * NS) is not False
            self._open[market] = (ts, open_)
        return open_

    def _trades_on(self, code: str, day: int) -> bool:
        """Whether ``code``'s market is open at some time of the UTC ``day``."""
        if not self.market_hours:
            return True
        return _trades_on(market_of(code), day)

    def _new_day(self, c: _Code, ts: int) -> None:
        if c.day >= 0:
            c.prev_close = c.price
        c.day, c.open, c.high, c.low = ts // 86400, c.price, c.price, c.price
        c.volume = c.turnover = 0

    def _trade(self, c: _Code, ts: int) -> dict[str, Any]:
        rng = c.rng
        if c.last_trade is not None and rng.random() < 0.3:
            price, size, side = c.last_trade  # an identical trade in the same second
        else:
            if rng.random() < 0.3:
                c.price = max(1, c.price + rng.choice((-2, -1, 1, 2)))
            price, size, side = c.price, rng.choice(c.sizes), rng.choice((1, 2, 1, 2, 0))
        c.last_trade = (price, size, side)
        if c.volume == 0:  # the day's first trade opens it, as its day bar does
            c.open = c.high = c.low = price
        c.high, c.low = max(c.high, price), min(c.low, price)
        c.volume += size
        c.turnover += price * size
        frame = {
            Wire.TP: Stream.TRADES.tp,
            Wire.CODE: c.code,
            Wire.PRICE: _dec(price, c.price_dp),
            Wire.SIZE: _size(c, size),
            Wire.TS: ts,
            Wire.SIDE: side,
        }
        c.trades.append(frame)
        return frame

    def snapshot(self, code: str, ts: int) -> dict[str, Any]:
        """The snapshot push of ``code`` at ``ts`` (unix s)."""
        c = self.codes[code]
        p = c.price_dp
        frame: dict[str, Any] = {
            Wire.TP: Stream.SNAPSHOTS.tp,
            Wire.CODE: c.code,
            Wire.LAST: _dec(c.price, p),
            Wire.PREV_CLOSE: _dec(c.prev_close, p),
            Wire.OPEN: _dec(c.open, p),
            Wire.HIGH: _dec(c.high, p),
            Wire.LOW: _dec(c.low, p),
            Wire.TS: ts,
            Wire.VOLUME: _size(c, c.volume),
            Wire.TURNOVER: _turnover(c, c.turnover),
            Wire.SUSPENDED: 0,
        }
        if market_of(c.code) == "US":
            frame[Wire.SESSION] = us_session(ts) if self.market_hours else 3
            frame["pq"] = {
                Wire.LAST: _dec(c.open, p),
                Wire.PREV_CLOSE: _dec(c.prev_close, p),
                Wire.HIGH: _dec(c.open, p),
                Wire.LOW: _dec(c.open, p),
                Wire.TS: ts - ts % 86400,
                Wire.VOLUME: _size(c, 0),
                Wire.TURNOVER: _turnover(c, 0),
            }
        return frame

    def depth(self, code: str, ts: int) -> dict[str, Any]:
        """A depth push of ``code`` at ``ts``: levels bracketing the last price."""
        c = self.codes[code]
        levels, p = self.depth_levels, c.price_dp
        sizes = [c.rng.choice(c.sizes) * (i + 1) for i in range(2 * levels)]
        return {
            Wire.TP: Stream.DEPTH.tp,
            Wire.CODE: c.code,
            Wire.BIDS: [
                {Wire.PRICE: _dec(c.price - i, p), Wire.SIZE: _size(c, sizes[i])}
                for i in range(levels)
            ],
            Wire.ASKS: [
                {Wire.PRICE: _dec(c.price + 1 + i, p), Wire.SIZE: _size(c, sizes[levels + i])}
                for i in range(levels)
            ],
            Wire.TS: ts,
        }

    def _bars(self, c: _Code, ts: int, traded: list[tuple[int, int]]) -> list[dict[str, Any]]:
        frames = []
        for kt in sorted(KLINE_TYPES):
            opened = bar_open(ts, kt)
            bars = c.bars.setdefault(kt, {})
            bar = bars.get(opened)
            for price, size in traded:
                if bar is None:
                    bar = bars[opened] = _Bar(price, price, price, price, 0)
                bar.high, bar.low = max(bar.high, price), min(bar.low, price)
                bar.close = price
                bar.volume += size
            if bar is not None:
                frames.append(self._bar_frame(c, kt, opened, bar))
        return frames

    def _bar_frame(self, c: _Code, kt: int, opened: int, bar: _Bar) -> dict[str, Any]:
        p = c.price_dp
        return {
            Wire.TP: Stream.KLINES.tp,
            Wire.CODE: c.code,
            Wire.OPEN: _dec(bar.open, p),
            Wire.CLOSE: _dec(bar.close, p),
            Wire.HIGH: _dec(bar.high, p),
            Wire.LOW: _dec(bar.low, p),
            Wire.VOLUME: _size(c, bar.volume),
            Wire.TS: opened,
            Wire.KT: kt,
        }

    def recent_trades(self, code: str, count: int) -> list[dict[str, Any]]:
        """The latest ``count`` trade pushes of ``code``, oldest first."""
        if not 1 <= count <= MAX_TRADE_COUNT:
            raise ValueError(f"count must be 1 to {MAX_TRADE_COUNT}")
        return list(self.codes[code].trades)[-count:]

    def bars(self, code: str, kt: int, count: int, end: int | None) -> list[dict[str, Any]]:
        """The latest ``count`` bar pushes of ``code`` opened at or before ``end`` (now when
        None): live bars since the market began, the deterministic past before."""
        c = self.codes[code]
        now = int(self.clock())
        live = c.bars.get(kt, {})
        found: list[dict[str, Any]] = []
        opened = bar_open(now if end is None else min(end, now), kt)
        while len(found) < count and opened > c.started - _EARLIEST:
            bar = live.get(opened)
            if bar is None:
                past = self.past.synthetic_bar(c, kt, opened)
                if past is not None:
                    bar = _Bar.of(past)
            if bar is not None:
                found.append(self._bar_frame(c, kt, opened, bar))
            opened = bar_open(opened - 1, kt)
        return found[::-1]

    def info(self, code: str) -> dict[str, Any]:
        """``/instrument-info`` of one code, with the reference's types: ``ls``, ``ts`` and
        ``os`` integers, ``ep``, ``na``, ``dy`` decimal strings; crypto only ``c, e, tc``."""
        market, _, symbol = code.partition(":")
        exchange, currency, lot = _INSTRUMENT.get(market, ("OTC", "USD", 1))
        info: dict[str, Any] = {Wire.CODE: code, Wire.EXCHANGE: exchange, Wire.CURRENCY: currency}
        if market == "CF":
            return info
        rng = random.Random(f"{self.seed}/{code}/info")  # the same answer every time
        shares = rng.randrange(100, 20000) * 1_000_000
        info.update(
            {
                Wire.NAME_CN: f"{symbol}股份",
                Wire.NAME_EN: f"{symbol} Holdings",
                Wire.LOT_SIZE: lot,
                Wire.TOTAL_SHARES: shares,
                Wire.OUTSTANDING_SHARES: shares - rng.randrange(0, shares // 10),
                Wire.EPS: _dec(rng.randrange(-200, 2000), 2),
                Wire.NET_ASSETS: _dec(rng.randrange(100, 20000), 2),
                Wire.DIVIDEND_YIELD: _dec(rng.randrange(0, 600), 4),
            }
        )
        return info

    @staticmethod
    def calendar() -> list[str]:
        """``/market-calendar`` days around today: weekdays, full days."""
        today = dt.datetime.now(dt.UTC).date()
        days = (today + dt.timedelta(days=i) for i in range(-45, 46))
        return [f"{d:%Y%m%d},F" for d in days if d.weekday() < 5]
