"""The simulated market: deterministic per seed, consistent across every stream.

Each tick draws trades per code from one ``random.Random(seed)``; snapshots carry the day's
cumulative volume and turnover of exactly those trades (kept as integers, so they add up),
K-lines aggregate them, depth brackets the last price, and the recent trades and bars are
kept for ``/trade`` and ``/history``. Several trades of one code share a second, identical
ones included. No I/O: the server pushes what :meth:`Market.step` returns.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from ..protocol import KLINE_TYPES, MAX_TRADE_COUNT, market_of, split_codes

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


@dataclass
class _Code:
    code: str
    price_dp: int
    size_dp: int
    price: int
    sizes: tuple[int, ...]
    day: int = -1
    open: int = 0
    high: int = 0
    low: int = 0
    prev_close: int = 0
    volume: int = 0
    turnover: int = 0
    last_trade: tuple[int, int, int] | None = None
    trades: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=1000))
    bars: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)


def _dec(units: int, dp: int) -> str:
    """Integer units with ``dp`` implied decimals as a decimal string."""
    if dp == 0:
        return str(units)
    sign = "-" if units < 0 else ""
    digits = str(abs(units)).rjust(dp + 1, "0")
    return f"{sign}{digits[:-dp]}.{digits[-dp:]}"


def bar_open(ts: int, kt: int) -> int:
    """The open time (unix s) of the ``kt`` bar holding ``ts``."""
    if kt < 1000:
        return ts - ts % (kt * 60)
    day = dt.datetime.fromtimestamp(ts, dt.UTC).replace(hour=0, minute=0, second=0)
    if kt == 1007:
        day -= dt.timedelta(days=day.weekday())
    elif kt == 1030:
        day = day.replace(day=1)
    elif kt == 2001:
        day = day.replace(month=1, day=1)
    return int(day.timestamp())


class Market:
    """Every simulated code's state; :meth:`step` advances them all by one tick."""

    def __init__(
        self,
        codes: tuple[str, ...] = DEFAULT_CODES,
        seed: int = 1,
        trades_per_second: float = 4.0,
        tick: float = 0.1,
        depth_levels: int = 5,
    ) -> None:
        self.rng = random.Random(seed)
        self.trades_per_second = trades_per_second
        self.tick = tick
        self.depth_levels = depth_levels
        self.codes = {c: self._new_code(c) for c in split_codes(list(codes))}

    def _new_code(self, code: str) -> _Code:
        price_dp, size_dp, price, sizes = _MARKET_SHAPE.get(market_of(code), _DEFAULT_SHAPE)
        price += self.rng.randrange(0, price // 10 + 1)
        return _Code(code, price_dp, size_dp, price, sizes, prev_close=price)

    def step(self, now: float) -> list[dict[str, Any]]:
        """Advance the market one tick at wall time ``now``; the push frames it produced."""
        ts = int(now)
        frames: list[dict[str, Any]] = []
        rate = self.trades_per_second * self.tick
        for c in self.codes.values():
            if c.day != ts // 86400:
                self._new_day(c, ts)
            traded: list[tuple[int, int]] = []
            for _ in range(int(rate + self.rng.random())):
                frames.append(self._trade(c, ts))
                assert c.last_trade is not None
                traded.append(c.last_trade[:2])
            if traded or self.rng.random() < self.tick:
                frames.append(self.snapshot(c.code, ts))
                frames.append(self.depth(c.code, ts))
            if traded:
                frames.extend(self._bars(c, ts, traded))
        return frames

    def _new_day(self, c: _Code, ts: int) -> None:
        if c.day >= 0:
            c.prev_close = c.price
        c.day, c.open, c.high, c.low = ts // 86400, c.price, c.price, c.price
        c.volume = c.turnover = 0

    def _trade(self, c: _Code, ts: int) -> dict[str, Any]:
        rng = self.rng
        if c.last_trade is not None and rng.random() < 0.3:
            price, size, side = c.last_trade  # an identical trade in the same second
        else:
            if rng.random() < 0.3:
                c.price = max(1, c.price + rng.choice((-2, -1, 1, 2)))
            price, size, side = c.price, rng.choice(c.sizes), rng.choice((1, 2, 1, 2, 0))
        c.last_trade = (price, size, side)
        c.high, c.low = max(c.high, price), min(c.low, price)
        c.volume += size
        c.turnover += price * size
        frame = {
            "tp": "T",
            "c": c.code,
            "p": _dec(price, c.price_dp),
            "v": _dec(size, c.size_dp),
            "ts": ts,
            "d": side,
        }
        c.trades.append(frame)
        return frame

    def snapshot(self, code: str, ts: int) -> dict[str, Any]:
        """The snapshot push of ``code`` at ``ts`` (unix s)."""
        c = self.codes[code]
        p = c.price_dp
        frame: dict[str, Any] = {
            "tp": "S",
            "c": c.code,
            "lp": _dec(c.price, p),
            "yp": _dec(c.prev_close, p),
            "o": _dec(c.open, p),
            "h": _dec(c.high, p),
            "l": _dec(c.low, p),
            "ts": ts,
            "v": _dec(c.volume, c.size_dp),
            "t": _dec(c.turnover, p + c.size_dp),
            "s": 0,
        }
        if market_of(c.code) == "US":
            frame["tt"] = 3
            frame["pq"] = {
                "lp": _dec(c.open, p),
                "yp": _dec(c.prev_close, p),
                "h": _dec(c.open, p),
                "l": _dec(c.open, p),
                "ts": ts - ts % 86400,
                "v": "0",
                "t": "0",
            }
        return frame

    def depth(self, code: str, ts: int) -> dict[str, Any]:
        """A depth push of ``code`` at ``ts``: levels bracketing the last price."""
        c = self.codes[code]
        levels, p = self.depth_levels, c.price_dp
        sizes = [self.rng.choice(c.sizes) * (i + 1) for i in range(2 * levels)]
        return {
            "tp": "D",
            "c": c.code,
            "b": [
                {"p": _dec(c.price - i, p), "v": _dec(sizes[i], c.size_dp)} for i in range(levels)
            ],
            "a": [
                {"p": _dec(c.price + 1 + i, p), "v": _dec(sizes[levels + i], c.size_dp)}
                for i in range(levels)
            ],
            "ts": ts,
        }

    def _bars(self, c: _Code, ts: int, traded: list[tuple[int, int]]) -> list[dict[str, Any]]:
        frames = []
        for kt in sorted(KLINE_TYPES):
            opened = bar_open(ts, kt)
            bars = c.bars.setdefault(kt, {})
            bar = bars.get(opened)
            for price, size in traded:
                if bar is None:
                    bar = bars[opened] = {"o": price, "h": price, "l": price, "cl": price, "v": 0}
                bar["h"], bar["l"] = max(bar["h"], price), min(bar["l"], price)
                bar["cl"] = price
                bar["v"] += size
            if bar is not None:
                frames.append(self._bar_frame(c, kt, opened, bar))
        return frames

    def _bar_frame(self, c: _Code, kt: int, opened: int, bar: dict[str, Any]) -> dict[str, Any]:
        p = c.price_dp
        return {
            "tp": "K",
            "c": c.code,
            "o": _dec(bar["o"], p),
            "cl": _dec(bar["cl"], p),
            "h": _dec(bar["h"], p),
            "l": _dec(bar["l"], p),
            "v": _dec(bar["v"], c.size_dp),
            "ts": opened,
            "kt": kt,
        }

    def recent_trades(self, code: str, count: int) -> list[dict[str, Any]]:
        """The latest ``count`` trade pushes of ``code``, oldest first."""
        if not 1 <= count <= MAX_TRADE_COUNT:
            raise ValueError(f"count must be 1 to {MAX_TRADE_COUNT}")
        return list(self.codes[code].trades)[-count:]

    def bars(self, code: str, kt: int, count: int, end: int | None) -> list[dict[str, Any]]:
        """The latest ``count`` bar pushes of ``code`` opened at or before ``end``."""
        c = self.codes[code]
        bars = sorted(c.bars.get(kt, {}).items())
        if end is not None:
            bars = [(o, b) for o, b in bars if o <= end]
        return [self._bar_frame(c, kt, o, b) for o, b in bars[-count:]]

    def info(self, code: str) -> dict[str, Any]:
        """``/instrument-info`` of one code."""
        market = market_of(code)
        info: dict[str, Any] = {"c": code, "e": market, "tc": "USDT" if market == "CF" else "USD"}
        if market != "CF":
            info.update(
                nc=code,
                ne=code,
                ls=100,
                ts="1000000000",
                os="1000000000",
                ep="1.5",
                na="10.2",
                dy="0.01",
            )
        return info

    @staticmethod
    def calendar() -> list[str]:
        """``/market-calendar`` days around today: weekdays, full days."""
        today = dt.datetime.now(dt.UTC).date()
        days = (today + dt.timedelta(days=i) for i in range(-45, 46))
        return [f"{d:%Y%m%d},F" for d in days if d.weekday() < 5]
