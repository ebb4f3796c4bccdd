"""Decimal strings of every shape the QOS API sends, for hypothesis.

Prices, sizes, volumes and turnovers come as plain decimal strings: ``"0"``, ``"100"``,
``"0.025"``, ``"212.30"`` (trailing zeros kept), ``"147479220.1710000038"`` (more digits
than a double holds), up to about 20 significant digits.
"""

from __future__ import annotations

from hypothesis import strategies as st

EXAMPLES = ("0.025", "212.30", "147479220.1710000038", "0", "100", "1.25", "6.000", "0.00000100")

_whole = st.one_of(st.just("0"), st.from_regex(r"[1-9][0-9]{0,11}", fullmatch=True))
_fraction = st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,10}", fullmatch=True))

#: any API decimal string: a whole part without leading zeros, an optional fraction
api_decimals = st.one_of(
    st.sampled_from(EXAMPLES),
    st.builds(lambda whole, fraction: whole + fraction, _whole, _fraction),
)
