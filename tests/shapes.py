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

_levels = st.lists(st.fixed_dictionaries({"p": api_decimals, "v": api_decimals}), max_size=4)
_quote = st.fixed_dictionaries({k: api_decimals for k in protocol.QUOTE_FIELDS}).map(
    lambda q: {**q, "ts": 1_700_000_000}
)

#: push frames of every stream without code and time, every number an API decimal string
pushes = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"tp": st.just("T"), "p": api_decimals, "v": api_decimals, "d": st.integers(0, 2)}
        ),
        st.fixed_dictionaries({"tp": st.just("D"), "b": _levels, "a": _levels}),
        st.fixed_dictionaries(
            {"tp": st.just("S"), **{k: api_decimals for k in protocol.SNAPSHOT_FIELDS}},
            optional={"pq": _quote, "nq": _quote},
        ).map(lambda s: {**s, "s": 0}),
        st.fixed_dictionaries(
            {"tp": st.just("K"), **{k: api_decimals for k in protocol.KLINE_FIELDS}}
        ).map(lambda k: {**k, "kt": 1}),
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
