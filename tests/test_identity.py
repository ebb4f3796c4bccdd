"""Trade identity: sources merge to the union at the highest multiplicity, no duplicates."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from recorder.identity import TradeCounter
from recorder.protocol import NS, Trade

# few distinct values, so identical trades in one second are common
trades = st.lists(
    st.tuples(
        st.sampled_from(["US:AAPL", "HK:700"]),
        st.integers(0, 2),
        st.sampled_from([10.0, 10.01]),
        st.sampled_from([100.0, 200.0]),
        st.sampled_from([1, 2]),
    ),
    max_size=40,
)


def _trade(t: tuple[str, int, float, float, int]) -> Trade:
    code, second, price, size, side = t
    return Trade(code, second * NS, price, size, side, second * NS)  # received on time


def _key(t: Trade) -> tuple[object, ...]:
    return (t.code, t.ts, t.price, t.size, t.side, t.k)


def _seen_by(truth: list[tuple[str, int, float, float, int]], mask: list[bool]) -> list[Trade]:
    return [_trade(t) for t, keep in zip(truth, mask, strict=False) if keep]


@given(
    trades,
    st.lists(st.booleans(), min_size=40, max_size=40),
    st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_live_plus_backfill_is_the_union_at_the_highest_multiplicity(
    truth: list[tuple[str, int, float, float, int]],
    live_mask: list[bool],
    backfill_mask: list[bool],
) -> None:
    counter = TradeCounter()
    stored: list[Trade] = []
    for trade in _seen_by(truth, live_mask):  # what the live stream delivered
        counter.assign(trade)
        stored.append(trade)
    backfill = _seen_by(truth, backfill_mask)
    stored += counter.merge(backfill)
    keys = [_key(t) for t in stored]
    assert len(keys) == len(set(keys))  # the dedup keys never collide: nothing duplicated
    plain = Counter(k[:5] for k in keys)
    live = Counter(_key(t)[:5] for t in _seen_by(truth, live_mask))
    back = Counter(_key(t)[:5] for t in backfill)
    assert plain == live | back  # Counter | is the maximum of the multiplicities
    # merging the same backfill again, or a second recorder's identical view, adds nothing
    assert counter.merge(_seen_by(truth, backfill_mask)) == []


@given(trades, st.integers(0, 39))
def test_a_missing_trade_never_shifts_the_identity_of_the_others(
    truth: list[tuple[str, int, float, float, int]], dropped: int
) -> None:
    full, partial = TradeCounter(), TradeCounter()
    everything = [_trade(t) for t in truth]
    for t in everything:
        full.assign(t)
    missing = [_trade(t) for i, t in enumerate(truth) if i != dropped]
    for t in missing:
        partial.assign(t)
    all_keys = Counter(_key(t) for t in everything)
    # every identity the partial stream gave is one the full stream gave too
    assert not Counter(_key(t) for t in missing) - all_keys


def test_identical_trades_in_one_second_are_all_kept() -> None:
    counter = TradeCounter()
    same = [Trade("US:AAPL", NS, 1.0, 100.0, 1, 0) for _ in range(3)]
    for t in same:
        counter.assign(t)
    assert [t.k for t in same] == [0, 1, 2]


def test_old_seconds_are_forgotten_unless_held() -> None:
    counter = TradeCounter(window_s=10)
    counter.assign(Trade("US:AAPL", 0, 1.0, 1.0, 1, 0))
    counter.assign(Trade("HK:700", 0, 1.0, 1.0, 1, 0))
    counter.hold("HK:700", 0)
    counter.assign(Trade("US:AAPL", 60 * NS, 1.0, 1.0, 1, 60 * NS))
    counter.assign(Trade("HK:700", 60 * NS, 1.0, 1.0, 1, 60 * NS))
    assert counter.count(("US:AAPL", 0, 1.0, 1.0, 1)) == 0  # pruned
    assert counter.count(("HK:700", 0, 1.0, 1.0, 1)) == 1  # a pending gap still needs it
    counter.release("HK:700", 0)
    counter.assign(Trade("HK:700", 61 * NS, 1.0, 1.0, 1, 61 * NS))
    assert counter.count(("HK:700", 0, 1.0, 1.0, 1)) == 0
    assert len(counter) == 3


def test_a_far_future_trade_neither_splits_k_nor_stops_the_pruning() -> None:
    """#21 item 16: a trade stamped 2099 between identical trades of this second."""
    counter = TradeCounter(window_s=10)
    now = 1_741_960_243 * NS
    same = [Trade("US:AAPL", now, 1.0, 100.0, 1, now + i) for i in range(3)]
    counter.assign(same[0])
    counter.assign(Trade("US:AAPL", 4_070_908_800 * NS, 1.0, 1.0, 1, now + 1))  # 2099
    counter.assign(same[1])
    counter.assign(same[2])
    assert [t.k for t in same] == [0, 1, 2]
    # an hour of one trade a second later, the counts still stay within the window
    for second in range(1, 3600):
        ts = now + second * NS
        counter.assign(Trade("US:AAPL", ts, 1.0, 100.0, 1, ts + NS // 10))
    assert len(counter) <= 12  # ~10 s of seconds, plus the 2099 one until it is passed


def test_a_far_future_stored_or_backfilled_trade_does_not_prune_live_counts() -> None:
    counter = TradeCounter(window_s=10)
    now = 1_741_960_243 * NS
    counter.assign(Trade("US:AAPL", now, 1.0, 100.0, 1, now))
    counter.seed([(("US:AAPL", 4_070_908_800 * NS, 1.0, 1.0, 1), 1)])
    counter.merge([Trade("US:AAPL", 4_070_908_801 * NS, 1.0, 1.0, 1, now)])
    again = Trade("US:AAPL", now, 1.0, 100.0, 1, now + 1)
    counter.assign(again)
    assert again.k == 1
