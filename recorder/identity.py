"""Trade identity: ``(code, ts, price, size, side, k)``.

QOS trades have no id and one-second timestamps. ``k`` counts the earlier *identical*
trades (same code, ts, price, size and side) seen in that second. Used as dedup keys, this
makes every store the union of what its sources saw at the highest multiplicity: a live
stream that missed a trade, a backfill, a re-sent spool segment and a second recorder all
merge without duplicates, and a missing trade never shifts the identity of the others (as
an ordinal over all trades of the second would).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from .protocol import NS, Trade

Identity = tuple[str, int, float, float, int]


class TradeCounter:
    """How many trades of each identity were stored; assigns ``k`` and merges backfills.

    Counts live per code and second, and seconds more than ``window_s`` of exchange time
    behind the newest trade of their code are dropped, so memory stays bounded however long
    the recorder runs; :meth:`hold` keeps the seconds a pending backfill will merge into.
    "Newest" is bounded by each trade's receive time: one trade stamped far in the future
    must neither drop the current second's counts (its identical trades would then get the
    same ``k`` again, and one be lost to the dedup keys) nor stop the pruning for good.
    A backfill of seconds that left the window without a hold would be merged against zero
    counts, and the sink's dedup keys then drop the trades it already has.
    """

    def __init__(self, window_s: float = 900.0) -> None:
        # code -> second (ns) -> (price, size, side) -> count; seconds in arrival order
        self._codes: dict[str, dict[int, dict[tuple[float, float, int], int]]] = {}
        self._window = int(window_s * NS)
        self._newest: dict[str, int] = {}
        self._held: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return sum(len(c) for seconds in self._codes.values() for c in seconds.values())

    def _second(self, code: str, ts: int, seen: int) -> dict[tuple[float, float, int], int]:
        """The counts of one second; ``seen`` (at most ``ts``: bounded by the clock) may
        move the code's newest time on and prune."""
        seconds = self._codes.get(code)
        if seconds is None:
            seconds = self._codes[code] = {}
        counts = seconds.get(ts)
        if counts is None:
            counts = seconds[ts] = {}
        if seen > self._newest.get(code, 0):
            self._newest[code] = seen
            held = self._held.get(code)
            horizon = seen - self._window
            _prune(seconds, min(horizon, *held) if held else horizon, seen)
            counts = seconds.setdefault(ts, counts)  # a late second stays till the next
        return counts

    def hold(self, code: str, ts: int) -> None:
        """Keep counts from ``ts`` on for ``code`` until :meth:`release` (a gap needs them)."""
        self._held.setdefault(code, []).append(ts)

    def release(self, code: str, ts: int) -> None:
        held = self._held.get(code)
        if held and ts in held:
            held.remove(ts)

    def assign(self, trade: Trade) -> None:
        """Give a live trade its ``k``: the number of identical trades stored before it."""
        ts = trade.ts
        seconds = self._codes.get(trade.code)
        counts = None if seconds is None else seconds.get(ts)
        if counts is None:  # a new second: the clock-bound newest time may move on
            recv = trade.recv_ts
            counts = self._second(trade.code, ts, ts if ts < recv else recv)
        key = (trade.price, trade.size, trade.side)
        k = counts.get(key, 0)
        trade.k = k
        counts[key] = k + 1

    def merge(self, trades: Iterable[Trade]) -> list[Trade]:
        """Of a batch from another source (a backfill), the trades not stored yet.

        Within the batch, identical trades get ``k`` 0, 1, 2...; those with ``k`` below the
        stored count of their identity are already stored. The rest are returned, and the
        counts rise to the higher multiplicity.
        """
        seen: dict[Identity, int] = {}
        new: list[Trade] = []
        for trade in trades:
            key = (trade.code, trade.ts, trade.price, trade.size, trade.side)
            k = seen.get(key, 0)
            seen[key] = k + 1
            trade.k = k
            if k >= self.count(key):
                new.append(trade)
        self._load(seen.items())
        return new

    def seed(self, counts: Iterable[tuple[Identity, int]]) -> None:
        """Load stored counts (from the sink at start-up)."""
        self._load(counts)

    def _load(self, counts: Iterable[tuple[Identity, int]]) -> None:
        # Counts of other sources never move the newest time: a stored or backfilled trade
        # stamped in 2100 must not prune the live seconds (live trades move it, clock-bound).
        for (code, ts, price, size, side), n in counts:
            second = self._second(code, ts, 0)
            if n > second.get((price, size, side), 0):
                second[(price, size, side)] = n

    def count(self, key: Identity) -> int:
        """How many trades of this identity are stored (as far as the window knows)."""
        code, ts, price, size, side = key
        second = self._codes.get(code, {}).get(ts)
        return 0 if second is None else second.get((price, size, side), 0)


class Ordinals:
    """``n`` for depth and snapshot rows: how many identical rows of the same code came
    earlier in the same second, so a book that goes A, B, A within a second keeps all
    three updates under the dedup keys, and a re-sent batch or a second recorder still
    merges (the same stream gives the same ``n``). Only the last ``window_s`` seconds of
    exchange time per code are kept."""

    def __init__(self, window_s: float = 10.0) -> None:
        self._codes: dict[str, dict[int, dict[Hashable, int]]] = {}
        self._window = int(window_s * NS)

    def assign(self, code: str, ts: int, key: Hashable) -> int:
        seconds = self._codes.get(code)
        if seconds is None:
            seconds = self._codes[code] = {}
        counts = seconds.get(ts)
        if counts is None:
            counts = seconds[ts] = {}
            _prune(seconds, ts - self._window, ts)
        n = counts.get(key, 0)
        counts[key] = n + 1
        return n


def _prune(seconds: dict[int, Any], horizon: int, newest: int) -> None:
    """Drop the seconds before ``horizon``. They arrive nearly in order, so the stale ones
    are at the front: the scan stops at the first second between ``horizon`` and
    ``newest``, stepping over seconds beyond ``newest`` (a trade stamped in the future)."""
    stale = []
    for second in seconds:
        if second < horizon:
            stale.append(second)
        elif second <= newest:
            break
    for second in stale:
        del seconds[second]
