"""Decimal strings of every shape the QOS API sends, for hypothesis.

Prices, sizes, volumes and turnovers come as plain decimal strings: ``"0"``, ``"100"``,
``"0.025"``, ``"212.30"`` (trailing zeros kept), ``"147479220.1710000038"`` (more digits
than a double holds), up to about 20 significant digits.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import strategies as st

from recorder import protocol

EXAMPLES = ("0.025", "212.30", "147479220.1710000038", "0", "100", "1.25", "6.000", "0.00000100")

_whole = st.one_of(st.just("0"), st.from_regex(r"[1-9][0-9]{0,11}", fullmatch=True))
_fraction = st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,10}", fullmatch=True))

#: any API decimal string: a whole part without leading zeros, an optional fraction
api_decimals = st.one_of(
    st.sampled_from(EXAMPLES),
    st.builds(lambda whole, fraction: whole + fraction, _whole, _fraction),
)

Strategy = st.SearchStrategy[dict[str, Any]]


def push_frames(
    codes: st.SearchStrategy[str],
    prices: st.SearchStrategy[str],
    sizes: st.SearchStrategy[str],
    seconds: st.SearchStrategy[int],
    max_levels: int = 4,
    kline_types: list[int] | None = None,
    snapshot_optional: dict[str, st.SearchStrategy[Any]] | None = None,
) -> tuple[Strategy, Strategy, Strategy, Strategy]:
    """Trade, depth, snapshot and K-line push frames of the given parts (sizes are sizes,
    volumes and turnovers); a snapshot may also carry ``snapshot_optional``'s keys."""
    levels = st.lists(st.fixed_dictionaries({"p": prices, "v": sizes}), max_size=max_levels)
    trade = st.fixed_dictionaries(
        {"tp": st.just("T"), "c": codes, "p": prices, "v": sizes, "ts": seconds}
        | {"d": st.sampled_from([0, 1, 2])}
    )
    depth = st.fixed_dictionaries(
        {"tp": st.just("D"), "c": codes, "b": levels, "a": levels, "ts": seconds}
    )
    fields: dict[str, st.SearchStrategy[Any]] = {
        "tp": st.just("S"),
        "c": codes,
        "ts": seconds,
        "s": st.sampled_from([0, 1]),
    }
    fields |= {k: prices for k in ("lp", "yp", "o", "h", "l")} | {"v": sizes, "t": sizes}
    snapshot = st.fixed_dictionaries(fields, optional=snapshot_optional or {})
    kline = st.fixed_dictionaries(
        {"tp": st.just("K"), "c": codes, "v": sizes, "ts": seconds}
        | {k: prices for k in ("o", "cl", "h", "l")}
        | {"kt": st.sampled_from(kline_types or sorted(protocol.KLINE_TYPES))}
    )
    return trade, depth, snapshot, kline


def quotes(prices: st.SearchStrategy[str], sizes: st.SearchStrategy[str]) -> Strategy:
    """A US extended-session quote (``pq``, ``aq``, ``nq``)."""
    return st.fixed_dictionaries(
        {k: prices for k in ("lp", "yp", "h", "l")}
        | {"v": sizes, "t": sizes, "ts": st.just(1_700_000_000)}
    )


_quote = quotes(api_decimals, api_decimals)

#: push frames of every stream of one code, every number an API decimal string (code and
#: time are set by :func:`exact_frames`)
pushes = st.lists(
    st.one_of(
        *push_frames(
            st.just("CF:ETHUSDT"),
            api_decimals,
            api_decimals,
            st.just(0),
            kline_types=[1],
            snapshot_optional={"pq": _quote, "nq": _quote},
        )
    ),
    min_size=1,
    max_size=12,
)


def exact_frames(drawn: list[dict[str, Any]], code: str = "CF:ETHUSDT") -> list[dict[str, Any]]:
    """Push frames of one code, one a second (a minute for K-line bars, so each is final)."""
    base = 1_700_000_040
    return [
        {**push, "c": code, "ts": base + 60 * i if push["tp"] == "K" else base + i}
        for i, push in enumerate(drawn)
    ]


def canonical(frames: list[dict[str, Any]]) -> list[bytes]:
    """Frames in a comparable form, string for string, whatever their order."""
    return sorted(orjson.dumps(f, option=orjson.OPT_SORT_KEYS) for f in frames)
