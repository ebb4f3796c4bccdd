"""Reference data, polled over REST for the codes subscribed now.

- trading days per market from ``/market-calendar`` (silence in a closed market is not a
  gap), refreshed daily;
- an ``instruments`` row per code a day from ``/instrument-info``.

The codes come from the live subscription target, read at every pass: a code a reload
added gets its calendar and its instruments row within a pass, in one request with every
other code that needs the same endpoint. Every request is reference data to the REST
scheduler: it goes only with budget to spare and never ahead of a pending backfill. An
answer of the wrong shape is a logged upstream error; the poller tries again later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from .exceptions import DecodeError, RecorderError, UpstreamError
from .markets import Calendar
from .protocol import NS, instrument_from, market_of
from .rest import Purpose, RestClient
from .schema import INSTRUMENTS, Row, instrument_row

log = structlog.get_logger("recorder.reference")
#: markets without a calendar (crypto trades around the clock)
NO_CALENDAR = frozenset({"CF"})


@dataclass(frozen=True, slots=True)
class ReferenceSnapshot:
    """The poller's figures (names as in :class:`~recorder.status.Status`)."""

    #: fetches of the calendar or the instruments that failed (tried again later)
    reference_failures: int


class ReferencePoller:
    """Keeps the calendar and the ``instruments`` rows of the live codes current."""

    def __init__(
        self,
        rest: RestClient,
        codes: Callable[[], list[str]],
        calendar: Calendar,
        add_row: Callable[[str, Row], None],
        refresh: float = 86400.0,
        retry: float = 300.0,
    ) -> None:
        """``codes()``: the codes subscribed now (the live target); ``add_row(table, row)``
        writes a row; ``refresh``: seconds between two fetches of the same thing;
        ``retry``: seconds before a failed fetch is tried again."""
        self.rest = rest
        self.codes = codes
        self.calendar = calendar
        self.add_row = add_row
        self.refresh = refresh
        self.retry = retry
        #: monotonic time each market's calendar and each code's row is next due
        self._market_due: dict[str, float] = {}
        self._code_due: dict[str, float] = {}
        self._changed = asyncio.Event()
        self.failures = 0
        self._uncovered_said: set[str] = set()

    def snapshot(self) -> ReferenceSnapshot:
        return ReferenceSnapshot(reference_failures=self.failures)

    def say_uncovered(self) -> None:
        """Once per market: its calendar does not reach today, so its hours are the
        reference table's, Monday to Friday (silence detection stays on)."""
        new = self.calendar.uncovered - self._uncovered_said
        if new:
            self._uncovered_said |= new
            log.warning(
                "calendar_does_not_cover_today",
                markets=sorted(new),
                using="the reference hours, Monday to Friday",
            )

    def retarget(self) -> None:
        """The subscription target changed (a reload): look at the codes again now."""
        self._changed.set()

    async def run(self) -> None:
        while True:
            self._changed.clear()
            codes = self.codes()
            now = time.monotonic()
            markets = sorted({market_of(c) for c in codes} - NO_CALENDAR)
            due = [m for m in markets if self._market_due.get(m, 0.0) <= now]
            if due:
                ok = await self._fetch_calendar(due)
                for market in due:
                    self._market_due[market] = time.monotonic() + (
                        self.refresh if ok else self.retry
                    )
            now = time.monotonic()
            stale = [c for c in codes if self._code_due.get(c, 0.0) <= now]
            if stale:
                ok = await self._fetch_instruments(stale)
                for code in stale:
                    self._code_due[code] = time.monotonic() + (self.refresh if ok else self.retry)
            wanted = set(codes) | {market_of(c) for c in codes}
            nxt = min(
                [t for k, t in (*self._market_due.items(), *self._code_due.items()) if k in wanted],
                default=time.monotonic() + self.refresh,
            )
            try:
                async with asyncio.timeout(max(0.0, nxt - time.monotonic())):
                    await self._changed.wait()
            except TimeoutError:
                pass

    async def _fetch_calendar(self, markets: list[str]) -> bool:
        """Trading days of ``markets`` (a failure keeps what was known, or Mon-Fri)."""
        try:
            data = await self.rest.post("/market-calendar", {"market": markets}, Purpose.CALENDAR)
            try:
                loaded = self.calendar.load(data)
            except ValueError as exc:
                raise UpstreamError(f"/market-calendar: {exc}") from None
        except RecorderError as exc:
            self.failures += 1
            log.warning("calendar_unavailable", error=str(exc), markets=markets)
            return False
        log.info("calendar_refreshed", markets=loaded)
        return True

    async def _fetch_instruments(self, codes: list[str]) -> bool:
        """``instruments`` rows of ``codes`` from ``/instrument-info``."""
        try:
            infos = await self.rest.post("/instrument-info", {"codes": codes}, Purpose.INSTRUMENTS)
            rows = instrument_rows(infos, set(codes), time.time_ns())
        except RecorderError as exc:
            self.failures += 1
            log.warning("instruments_unavailable", error=str(exc), codes=codes)
            return False
        for row in rows:
            self.add_row(INSTRUMENTS.name, row)
        log.info("instruments_refreshed", codes=len(rows))
        return True


def instrument_rows(infos: Any, asked: set[str], now: int) -> list[Row]:
    """The ``instruments`` rows of an ``/instrument-info`` answer, for the codes asked for;
    UpstreamError when the answer is not a list. A bad entry is skipped with a warning.
    (The per-code decimals once fetched from ``/snapshot`` are gone: every row keeps the
    decimals of its own strings, #19.)"""
    if not isinstance(infos, list):
        raise UpstreamError(f"/instrument-info: data is {_kind(infos)}, not a list")
    day = now - now % (86400 * NS)
    rows = []
    for info in infos:
        try:
            instrument = instrument_from(info)
        except DecodeError as exc:
            log.warning("instrument_unreadable", reason=exc.reason)
            continue
        if instrument.code not in asked:
            log.warning("instrument_unasked", code=instrument.code)
            continue
        rows.append(instrument_row(instrument, day, now))
    return rows


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
