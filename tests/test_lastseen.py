"""The last-seen state file: what a start while the database is down knows of the time away."""

from __future__ import annotations

from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st

from recorder.config import GapsConfig, SubscribeConfig
from recorder.gaps import CLOCK_SKEW, GapDetector
from recorder.lastseen import LAST_SEEN_MARGIN, LastSeen, believable, newest
from recorder.protocol import NS, Depth, Kline, Trade

NOW = 1_800_000_000 * NS


def test_a_clean_save_loads_as_saved_and_an_unclean_one_a_margin_earlier(tmp_path: Path) -> None:
    state = LastSeen(tmp_path / "last-seen.json", lambda: NOW)
    seen = {("US:AAPL", "trades"): NOW - 5 * NS, ("HK:700", "depth"): NOW - 9 * NS}
    state.save(seen, clean=True)
    on_disk = orjson.loads((tmp_path / "last-seen.json").read_bytes())
    assert on_disk == {
        "clean": True,
        "seen": {"US:AAPL|trades": NOW - 5 * NS, "HK:700|depth": NOW - 9 * NS},
    }
    assert state.load() == {("US:AAPL", "trades"): NOW - 5 * NS, ("HK:700", "depth"): NOW - 9 * NS}
    state.save(seen)  # a crash may have lost what the batcher and the queue held
    assert state.load() == {
        ("US:AAPL", "trades"): NOW - 5 * NS - LAST_SEEN_MARGIN,
        ("HK:700", "depth"): NOW - 9 * NS - LAST_SEEN_MARGIN,
    }


def test_times_the_clock_does_not_allow_and_unreadable_files_are_not_the_last(
    tmp_path: Path,
) -> None:
    path = tmp_path / "last-seen.json"
    state = LastSeen(path, lambda: NOW)
    far = NOW + CLOCK_SKEW + LAST_SEEN_MARGIN + NS
    path.write_bytes(orjson.dumps({"clean": False, "seen": {"A|trades": far, "B|trades": NOW}}))
    assert state.load() == {("B", "trades"): NOW - LAST_SEEN_MARGIN}
    path.write_bytes(orjson.dumps({"C|depth": NOW}))  # the first format: the times alone
    assert state.load() == {("C", "depth"): NOW - LAST_SEEN_MARGIN}
    for text in (b"", b"{not json", b"[1, 2]", b'{"seen": {"A|trades": "soon"}}'):
        path.write_bytes(text)
        assert state.load() == {}, text
    path.unlink()
    assert state.load() == {}


def test_seen_is_the_newest_exchange_time_per_code_and_table(tmp_path: Path) -> None:
    sub = SubscribeConfig(trades=("US:AAPL",), depth=("US:AAPL",), klines=("HK:700",))
    det = GapDetector(GapsConfig(), sub, lambda gap: None, clock=lambda: NOW)
    det.on_trade(Trade("US:AAPL", NOW - 3 * NS, 1.0, 1.0, 1, NOW))
    det.on_trade(Trade("US:AAPL", NOW + CLOCK_SKEW + NS, 1.0, 1.0, 1, NOW))  # beyond the clock
    det.on_record(Depth("US:AAPL", NOW - 2 * NS, (), (), NOW))
    det.on_record(Kline("HK:700", 1, NOW - 60 * NS, 1, 1, 1, 1, 1, NOW))
    det.on_record(Kline("HK:700", 5, NOW - 300 * NS, 1, 1, 1, 1, 1, NOW))
    seen = LastSeen(tmp_path / "last-seen.json", lambda: NOW).seen(det)
    assert seen[("US:AAPL", "trades")] == NOW - 3 * NS
    assert seen[("US:AAPL", "depth")] == NOW - 2 * NS
    assert seen[("HK:700", "klines")] == NOW - 60 * NS  # one table for every K-line type
    assert len(seen) == 3


times = st.dictionaries(
    st.tuples(st.sampled_from(("A", "B", "C")), st.sampled_from(("trades", "depth"))),
    st.integers(0, 2 * NOW),
    max_size=6,
)


@given(st.lists(times, max_size=4))
def test_newest_is_the_latest_time_any_source_knows(
    sources: list[dict[tuple[str, str], int]],
) -> None:
    merged = newest(*sources)
    assert merged.keys() == {k for source in sources for k in source}
    for key, ts in merged.items():
        assert ts == max(source[key] for source in sources if key in source)
    kept = believable(merged, NOW)
    assert all(ts <= NOW + CLOCK_SKEW for ts in kept.values())
    assert kept.keys() == {k for k, ts in merged.items() if ts <= NOW + CLOCK_SKEW}
