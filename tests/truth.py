"""Compare what a sink stored with what the simulator pushed."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from recorder.protocol import NS

TradeKey = tuple[str, int, float, float, int]


def trade_key(frame: dict[str, Any]) -> TradeKey:
    return (frame["c"], frame["ts"] * NS, float(frame["p"]), float(frame["v"]), frame["d"])


def check_trades(stored: list[tuple[Any, ...]], frames: list[dict[str, Any]]) -> None:
    """``stored`` rows are (code, ts, price, size, side, k): the same multiset as the pushed
    frames, and each identity's ``k`` values are exactly 0..n-1."""
    got = Counter(tuple(r[:5]) for r in stored)
    want = Counter(trade_key(f) for f in frames)
    missing, extra = want - got, got - want
    assert not missing and not extra, (
        f"missing {list(missing.items())[:5]}, extra {list(extra.items())[:5]}"
    )
    ks: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for r in stored:
        ks[tuple(r[:5])].append(r[5])
    for key, values in ks.items():
        assert sorted(values) == list(range(len(values))), (key, values)


def depth_key(frame: dict[str, Any]) -> tuple[Any, ...]:
    # the stored book is JSON whose numbers are written with the digits received
    bids = "[" + ",".join(f"[{x['p']},{x['v']}]" for x in frame["b"]) + "]"
    asks = "[" + ",".join(f"[{x['p']},{x['v']}]" for x in frame["a"]) + "]"
    return (frame["c"], frame["ts"] * NS, bids, asks)


def snapshot_key(frame: dict[str, Any]) -> tuple[Any, ...]:
    return (frame["c"], frame["ts"] * NS, float(frame["v"]), float(frame["lp"]))


def last_bars(frames: list[dict[str, Any]]) -> dict[tuple[str, int, int], dict[str, Any]]:
    """The last pushed version of every K-line bar."""
    out: dict[tuple[str, int, int], dict[str, Any]] = {}
    for f in frames:
        out[(f["c"], f["kt"], f["ts"] * NS)] = f
    return out
