"""Market hours from the protocol reference, and trading days from ``/market-calendar``.

Also where K-line bars begin and end (UTC calendar days, weeks from Monday, months, years).

Used to tell silence from a closed market: a code that does not trade while its market is
closed is not a gap. Markets whose hours the reference does not pin down (IX, SI follow
their listing exchange) answer ``None``: unknown, so no silence gap is ever claimed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from zoneinfo import ZoneInfo

from .protocol import NS

_NY = ZoneInfo("America/New_York")
_HK = ZoneInfo("Asia/Hong_Kong")
_SH = ZoneInfo("Asia/Shanghai")

Session = tuple[dt.time, dt.time]
_T = dt.time
#: Sessions in local time per market, and the time zone they are in.
HOURS: Mapping[str, tuple[ZoneInfo, tuple[Session, ...]]] = {
    # pre-market 04:00, regular 09:30-16:00, after-hours to 20:00, night 20:00-03:50 next day
    "US": (_NY, ((_T(0, 0), _T(3, 50)), (_T(4, 0), _T(23, 59, 59, 999999)))),
    "HK": (_HK, ((_T(9, 30), _T(12, 0)), (_T(13, 0), _T(16, 0)))),
    "SH": (_SH, ((_T(9, 30), _T(11, 30)), (_T(13, 0), _T(15, 0)))),
    "SZ": (_SH, ((_T(9, 30), _T(11, 30)), (_T(13, 0), _T(15, 0)))),
}
_FX_LIKE = frozenset({"FX", "CM"})


_DAY = re.compile(r"(\d{8})(?:,[A-Za-z])?")


def parse_calendar(data: object) -> dict[str, set[str]]:
    """The trading days per market of a ``/market-calendar`` answer's ``data``
    (``{"HK": ["20250606,F", ...]}``); ValueError naming what is wrong when it is not one.

    Every market must list its days as ``YYYYMMDD`` with an optional ``,F``/``,H``: a list
    of anything else (``null``, ``[1]``, a string) would silently turn silence detection off
    for the market, so the whole answer is refused instead."""
    if not isinstance(data, dict):
        raise ValueError(f"data is {_kind(data)}, not an object of markets")
    out: dict[str, set[str]] = {}
    for market, days in data.items():
        if not isinstance(days, list):
            raise ValueError(f"data[{market!r}] is {_kind(days)}, not a list of days")
        if not days:
            raise ValueError(f"data[{market!r}] lists no trading day")
        parsed = set()
        for day in days:
            match = _DAY.fullmatch(day) if isinstance(day, str) else None
            if match is None:
                raise ValueError(f"data[{market!r}] holds {day!r}, not a YYYYMMDD day")
            try:
                dt.datetime.strptime(match[1], "%Y%m%d")
            except ValueError:
                raise ValueError(f"data[{market!r}] holds {day!r}, not a date") from None
            parsed.add(match[1])
        out[market] = parsed
    return out


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


class Calendar:
    """Trading days per market (``YYYYMMDD``); without a calendar, Monday to Friday."""

    def __init__(self) -> None:
        self._days: dict[str, set[str]] = {}
        self._span: dict[str, tuple[str, str]] = {}  # first and last day listed
        #: markets asked about a day their calendar does not reach (then Monday to Friday)
        self.uncovered: set[str] = set()

    def load(self, data: object) -> list[str]:
        """Take a ``/market-calendar`` answer's ``data`` (see :func:`parse_calendar`);
        returns the markets it held. A bad answer (ValueError) changes nothing."""
        days = parse_calendar(data)
        self._days.update(days)
        self._span.update({market: (min(d), max(d)) for market, d in days.items()})
        return sorted(days)

    def known(self, market: str) -> bool:
        return market in self._days

    def trading_day(self, market: str, day: dt.date) -> bool:
        days = self._days.get(market)
        key = f"{day:%Y%m%d}"
        if days is None:
            return day.weekday() < 5
        first, last = self._span[market]
        if not first <= key <= last:
            # a calendar of another year says nothing of this day: were it read as "not a
            # trading day", silence detection would be off without a word
            self.uncovered.add(market)
            return day.weekday() < 5
        return key in days


def is_open(market: str, when_ns: int, calendar: Calendar | None = None) -> bool | None:
    """Whether ``market`` trades at ``when_ns`` (UTC); ``None`` when the hours are unknown."""
    if market == "CF":
        return True
    calendar = calendar or Calendar()
    utc = dt.datetime.fromtimestamp(when_ns / NS, dt.UTC)
    if market in _FX_LIKE:
        # Monday 05:00 to Saturday 05:00 UTC+8 in US summer time, 06:00 in winter
        ny = utc.astimezone(_NY)
        hour = 5 if ny.dst() else 6
        local = utc.astimezone(_HK)
        week_minute = local.weekday() * 1440 + local.hour * 60 + local.minute
        return hour * 60 <= week_minute < 5 * 1440 + hour * 60
    spec = HOURS.get(market)
    if spec is None:
        return None
    zone, sessions = spec
    local = utc.astimezone(zone)
    if market == "US" and local.time() < _T(4, 0):
        # the night session belongs to the previous trading day
        day = local.date() - dt.timedelta(days=1)
    else:
        day = local.date()
    if not calendar.trading_day(market, day):
        return False
    now = local.time()
    return any(start <= now <= end for start, end in sessions)


# --- K-line bars ---------------------------------------------------------------------------


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


def bar_end(opened: int, kt: int) -> int:
    """The open time of the bar after the ``kt`` bar opened at ``opened``."""
    if kt < 1000:
        return opened + kt * 60
    day = dt.datetime.fromtimestamp(opened, dt.UTC)
    if kt == 1001:
        return opened + 86400
    if kt == 1007:
        return opened + 7 * 86400
    if kt == 1030:
        nxt = day.replace(year=day.year + day.month // 12, month=day.month % 12 + 1)
        return int(nxt.timestamp())
    return int(day.replace(year=day.year + 1).timestamp())
