"""Trading days from ``/market-calendar``: a good answer is taken, any other shape is
refused whole (it would otherwise turn silence detection off for a market)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.markets import Calendar, parse_calendar

BAD: list[Any] = [
    [],
    None,
    5,
    "20250606,F",
    {"US": None},
    {"US": [1]},
    {"US": "2025..."},
    {"US": "20250606,F"},
    {"US": []},
    {"US": ["2025060"]},
    {"US": ["20251301,F"]},
    {"US": ["20250606,F", None]},
    {"US": [["20250606", "F"]]},
]


def test_a_calendar_answer_is_taken() -> None:
    calendar = Calendar()
    assert calendar.load({"HK": ["20261124,F", "20261126,H"], "US": ["20261125"]}) == ["HK", "US"]
    assert calendar.known("HK") and calendar.known("US")
    assert calendar.trading_day("HK", dt.date(2026, 11, 24))
    assert not calendar.trading_day("HK", dt.date(2026, 11, 25))  # a Wednesday, not listed
    assert calendar.trading_day("US", dt.date(2026, 11, 25))


@pytest.mark.parametrize("data", BAD, ids=repr)
def test_any_other_shape_is_refused_whole_and_changes_nothing(data: Any) -> None:
    calendar = Calendar()
    calendar.load({"US": ["20261125,F", "20261127,H"]})
    with pytest.raises(ValueError, match="data"):
        calendar.load(data)
    assert calendar.trading_day("US", dt.date(2026, 11, 25))
    assert not calendar.trading_day("US", dt.date(2026, 11, 26))  # still the old calendar
    assert not calendar.known("HK")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(JSON)
def test_every_answer_is_either_days_or_a_value_error(data: Any) -> None:
    try:
        days = parse_calendar(data)
    except ValueError:
        return
    for market, listed in days.items():
        assert isinstance(market, str) and listed
        for day in listed:
            dt.datetime.strptime(day, "%Y%m%d")
