"""Feeds: their text round-trips, and it is the text the gaps table always held."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.feed import DEPTH, SNAPSHOTS, TRADES, Feed, Other
from recorder.protocol import KLINE_TYPES, Depth, Kline, Record, Snapshot, Stream, Trade
from recorder.schema import KLINES, MARKET_TABLES, kline_row

feeds = st.one_of(
    st.sampled_from([TRADES, DEPTH, SNAPSHOTS, Feed.of(Other.INSTRUMENTS), Feed.of(Other.UNKNOWN)]),
    st.builds(Feed.klines, st.integers(min_value=0, max_value=10**12)),
)


@given(feeds)
def test_a_feed_parses_back_from_its_text(feed: Feed) -> None:
    assert Feed.parse(str(feed)) == feed
    assert str(feed) == feed.key
    assert hash(Feed.parse(feed.key)) == hash(feed)  # a dict key either way


@given(st.text(max_size=20))
def test_any_text_is_a_feed_whose_text_it_is_or_a_value_error_naming_it(text: str) -> None:
    try:
        feed = Feed.parse(text)
    except ValueError as exc:
        assert repr(text) in str(exc)
    else:
        assert feed.key == text


@pytest.mark.parametrize(
    "text",
    ["klines", "klines:", "klines:01", "klines:-1", "klines:²", "trades:1", "gaps", "Trades", ""],
)
def test_texts_that_are_no_feed_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a feed"):
        Feed.parse(text)


@given(st.sampled_from(sorted(KLINE_TYPES)), st.integers(min_value=0, max_value=2**62))
def test_a_records_feed_has_the_text_the_gaps_table_always_held(kt: int, ts: int) -> None:
    # the text the detector built before there was a Feed: f"klines:{kt}" and stream.value
    bar = Kline("US:AAPL", kt, ts, 1.0, 1.0, 1.0, 1.0, 1.0, ts)
    assert Feed.of_record(bar).key == f"klines:{kt}" == Feed.of(Stream.KLINES, kt).key
    assert Feed.of_row(KLINES.name, kline_row(bar)) == Feed.of_record(bar)
    others: list[Record] = [
        Trade("US:AAPL", ts, 1.0, 1.0, 1, ts),
        Depth("US:AAPL", ts, (), (), ts),
        Snapshot("US:AAPL", ts, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0, 0, ts),
    ]
    for record in others:
        assert Feed.of_record(record).key == record.stream.value == Feed.of_record(record).table


def test_every_market_table_is_a_feeds_table_and_rows_of_no_feed_are_unknown() -> None:
    assert {Feed.of(s, 1 if s is Stream.KLINES else None).table for s in Stream} == set(
        MARKET_TABLES
    )
    assert Feed.of_row("instruments", ("ts", "HK:700")) == Feed.of(Other.INSTRUMENTS)
    assert Feed.of_row("nonsense", ()).key == Feed.of_row("klines", (1, "x", "y")).key == "unknown"


def test_klines_need_a_type_and_the_others_have_none() -> None:
    with pytest.raises(ValueError, match="klines with K-line type None"):
        Feed.of(Stream.KLINES)
    with pytest.raises(ValueError, match="trades with K-line type 5"):
        Feed.of(Stream.TRADES, 5)
    assert Feed.klines(5) is Feed.klines(5)  # built once per bar type
