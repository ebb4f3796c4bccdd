"""Batches and the batcher: cuts by rows and by age, K-line coalescing, numbering, and the
spool's byte form of a batch round-tripping every record a frame can carry."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from recorder.batching import Batch, Batcher
from recorder.protocol import Depth, Kline, Snapshot, Trade, decode
from recorder.schema import record_of

NS = 1_000_000_000
TABLE_OF = {Trade: "trades", Depth: "depth", Snapshot: "snapshots", Kline: "klines"}

# -- wire frames of every record type, with decimal strings of the shapes the API uses --

decimals = st.one_of(
    st.integers(0, 10**9).map(str),
    st.decimals(min_value=0, max_value=10**7, places=3, allow_nan=False).map(str),
    st.sampled_from(["0.025", "212.30", "147479220.1710000038", "0", "100", "1.25"]),
)
codes = st.sampled_from(["US:AAPL", "HK:700", "SH:600519", "CF:BTCUSDT"])
seconds = st.integers(1_700_000_000, 1_800_000_000)


def _frame(tp: str, **fields: Any) -> bytes:
    return orjson.dumps({"tp": tp, **fields})


trade_frames = st.builds(
    lambda c, p, v, ts, d: _frame("T", c=c, p=p, v=v, ts=ts, d=d),
    codes,
    decimals,
    decimals,
    seconds,
    st.integers(0, 2),
)
levels = st.lists(st.fixed_dictionaries({"p": decimals, "v": decimals}), max_size=5)
depth_frames = st.builds(
    lambda c, b, a, ts: _frame("D", c=c, b=b, a=a, ts=ts), codes, levels, levels, seconds
)
snapshot_frames = st.builds(
    lambda c, lp, v, t, ts, s: _frame(
        "S", c=c, lp=lp, yp=lp, o=lp, h=lp, l=lp, v=v, t=t, ts=ts, s=s
    ),
    codes,
    decimals,
    decimals,
    decimals,
    seconds,
    st.integers(0, 1),
)
kline_frames = st.builds(
    lambda c, o, v, ts, kt: _frame("K", c=c, o=o, cl=o, h=o, l=o, v=v, ts=ts, kt=kt),
    codes,
    decimals,
    decimals,
    seconds,
    st.sampled_from([1, 5, 60, 1001]),
)
frames = st.lists(st.one_of(trade_frames, depth_frames, snapshot_frames, kline_frames), max_size=30)


def _records(raw: list[bytes]) -> list[Any]:
    recv = itertools.count(1_800_000_000 * NS)
    return [decode(frame, next(recv)) for frame in raw]


@given(frames)
def test_every_stored_row_turns_back_into_its_record(raw: list[bytes]) -> None:
    for record in _records(raw):
        batch = Batch.of([record], seq=1)
        [(table, [row])] = list(batch)
        assert table == TABLE_OF[type(record)]
        assert record_of(table, row) == record


@given(frames, st.integers(1, 2**62))
def test_a_batch_survives_its_spool_bytes(raw: list[bytes], seq: int) -> None:
    records = _records(raw)
    batch = Batch.of(records, seq=seq)
    again = Batch.from_bytes(batch.to_bytes())
    assert again.seq == seq
    assert dict(again) == dict(batch)
    assert len(again) == len(records)
    back = [record_of(table, row) for table, rows in again for row in rows]
    assert sorted(map(repr, back)) == sorted(map(repr, records))


def test_from_bytes_refuses_what_is_not_a_batch() -> None:
    for data in (b"[]", b'{"seq": 1}', b'{"seq": 1, "tables": []}'):
        try:
            Batch.from_bytes(data)
        except ValueError:
            continue
        raise AssertionError(f"{data!r} was taken for a batch")


# -- the batcher --


def _trade(i: int, code: str = "US:AAPL") -> Trade:
    return Trade(code, 1_750_000_000 + i, 1.0 + i, 100.0, 1, i)


def test_the_batcher_cuts_every_max_rows_rows_in_arrival_order() -> None:
    cut: list[Batch] = []
    batcher = Batcher(cut.append, max_rows=3, max_age=3600)
    for i in range(7):
        batcher.add_trade(_trade(i))
    assert [len(b) for b in cut] == [3, 3]
    assert len(batcher) == 1
    batcher.cut()
    assert [len(b) for b in cut] == [3, 3, 1]
    prices = [row[3] for b in cut for _, rows in b for row in rows]
    assert prices == [1.0 + i for i in range(7)]
    batcher.cut()  # nothing collected: nothing handed over
    assert len(cut) == 3


def test_k_line_pushes_of_one_bar_coalesce_to_the_latest() -> None:
    cut: list[Batch] = []
    batcher = Batcher(cut.append, max_rows=100, max_age=3600)
    for close in (1.0, 2.0, 3.0):
        batcher.add(Kline("CF:BTCUSDT", 1, 60, 1.0, close, 3.0, 1.0, close, 7))
    batcher.add(Kline("CF:BTCUSDT", 1, 120, 1.0, 9.0, 9.0, 1.0, 1.0, 8))
    batcher.add(Kline("CF:BTCUSDT", 5, 60, 1.0, 5.0, 5.0, 1.0, 1.0, 9))
    batcher.cut()
    [batch] = cut
    bars = [record_of("klines", row) for row in batch.tables["klines"]]
    assert all(isinstance(bar, Kline) for bar in bars)
    assert [(b.kt, b.ts, b.close) for b in bars if isinstance(b, Kline)] == [
        (1, 60, 3.0),
        (1, 120, 9.0),
        (5, 60, 5.0),
    ]


def test_batch_numbers_strictly_increase_even_when_the_clock_steps_back() -> None:
    cut: list[Batch] = []
    clock = iter([100, 50, 50, 200, 10])
    batcher = Batcher(cut.append, max_rows=1, max_age=3600, clock=lambda: next(clock))
    for i in range(5):
        batcher.add_trade(_trade(i))
    assert [b.seq for b in cut] == [100, 101, 102, 200, 201]


def test_the_batcher_cuts_by_age_without_new_rows() -> None:
    async def run() -> list[Batch]:
        cut: list[Batch] = []
        handed = asyncio.Event()

        def submit(batch: Batch) -> None:
            cut.append(batch)
            handed.set()

        batcher = Batcher(submit, max_rows=1000, max_age=0.02)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(batcher.run())
            for rows in ([_trade(0), _trade(1)], [_trade(2)]):
                handed.clear()
                for trade in rows:
                    batcher.add_trade(trade)
                async with asyncio.timeout(5):
                    await handed.wait()
                assert len(batcher) == 0
            task.cancel()
        return cut

    cut = asyncio.run(run())
    assert [len(b) for b in cut] == [2, 1]
