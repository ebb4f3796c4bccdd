"""The whole path after decode, for hypothesis: frames (valid, hostile, mutated) through
decode, trade identity and ordinals, rows, the spool's encoding, and both sinks (a real
SQLite file, and the official QuestDB client's buffer flushed to the ILP receiver of
``recorder.sim.ilp`` through one :class:`QuestDBSink`, as the recorder keeps one). Used
briefly by ``tests/test_fuzz.py`` and for minutes by ``scripts/fuzz``.

What must hold for any input: decode returns a record, a reply or None, or raises
DecodeError, nothing else; every record is sane (ts in the window, finite numbers, sizes
not negative); its batch survives the spool's encoding; both sinks take the batch without
an error and store each row once (trades keep every identical trade by ``k``).
"""

from __future__ import annotations

import math
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import strategies as st
from shapes import push_frames, quotes

from recorder import protocol
from recorder.batching import Batch
from recorder.exceptions import DecodeError
from recorder.identity import Ordinals, TradeCounter
from recorder.protocol import NS, TS_MAX, TS_MIN, Depth, Kline, Reply, Snapshot, Trade
from recorder.schema import BY_NAME
from recorder.sim.ilp import IlpServer
from recorder.sinks.questdb import QuestDBSink
from recorder.sinks.sqlite import SQLiteSink

RECV = 1_741_960_243 * NS

decimals = st.one_of(
    st.decimals(min_value=0, max_value=10**12, places=6, allow_nan=False).map(
        lambda d: format(d, "f")
    ),
    st.sampled_from(["0", "0.0", "1", "9" * 30, "0." + "0" * 20 + "1", ".5", "5."]),
)
prices = st.one_of(decimals, decimals.map(lambda d: "-" + d))
bad_decimals = st.sampled_from(
    ["1_000", "١٢٣", "nan", "inf", " 1", "1e3", "+1", "-1", "", ".", "1.2.3", "0x1", "9" * 400]
)
seconds = st.one_of(
    st.integers(min_value=TS_MIN, max_value=TS_MAX - 1),
    st.sampled_from([TS_MIN, TS_MAX - 1, TS_MAX, 10_000_000_000, 1_741_960_243_000, -1]),
)
codes = st.sampled_from(["US:AAPL", "HK:700", "CF:BTCUSDT", "X:Y", "US:A,B", 'US:"q"', "US:é"])
quote = quotes(prices, decimals)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | bad_decimals,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)

trade, depth, snapshot, kline = push_frames(
    codes,
    prices,
    decimals,
    seconds,
    snapshot_optional={"tt": st.integers(0, 4), "pq": quote, "aq": quote, "nq": quote},
)
valid = st.one_of(trade, depth, snapshot, kline)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A valid frame with one field replaced by any JSON value (or a hostile decimal)."""
    frame = dict(draw(valid))
    key = draw(st.sampled_from([*frame, "tp", "pq"]))
    frame[key] = draw(json_values)
    return frame


@st.composite
def streams(draw: st.DrawFn) -> list[bytes]:
    """Frames as they arrive: some repeated (identical trades and books in one second)."""
    frames = draw(st.lists(st.one_of(valid, valid, mutated()), max_size=25))
    out = []
    for frame in frames:
        raw = orjson.dumps(frame)
        out.extend([raw] * draw(st.integers(1, 3)))
    if draw(st.booleans()):
        out.append(draw(st.binary(max_size=40)))
    return out


Record = Trade | Depth | Snapshot | Kline


def decode_all(frames: list[bytes]) -> list[Record]:
    """The recorder's handler in small: decode, then ``k`` and ``n`` as the daemon gives."""
    counter, ordinals = TradeCounter(window_s=10), Ordinals(window_s=10)
    records: list[Record] = []
    for i, frame in enumerate(frames):
        try:
            record = protocol.decode(frame, RECV + i)
        except DecodeError as exc:
            assert exc.frame == frame
            continue
        if record is None or isinstance(record, Reply):
            continue
        _check(record)
        if isinstance(record, Trade):
            counter.assign(record)
        elif isinstance(record, Depth):
            record.n = ordinals.assign(record.code, record.ts, (record.bids, record.asks))
        elif isinstance(record, Snapshot):
            record.n = ordinals.assign(record.code, record.ts, (record.volume, record.last))
        records.append(record)
    return records


def _check(record: Record) -> None:
    assert TS_MIN * NS <= record.ts < TS_MAX * NS < 2**63
    numbers: list[float]
    if isinstance(record, Trade):
        numbers = [record.price, record.size]
        assert record.size >= 0
    elif isinstance(record, Depth):
        numbers = [x for level in record.bids + record.asks for x in level]
        assert all(size >= 0 for _, size in record.bids + record.asks)
    elif isinstance(record, Snapshot):
        numbers = [record.last, record.volume, record.turnover]
        assert record.volume >= 0
        for q in record.extended.values():
            assert TS_MIN * NS <= q.ts < TS_MAX * NS and q.volume >= 0
    else:
        numbers = [record.open, record.close, record.volume]
        assert record.volume >= 0
    assert all(math.isfinite(x) for x in numbers)


def expected_rows(batch: Batch) -> dict[str, int]:
    """Rows each table holds after the batch: one per distinct dedup key. Identical rows of
    one code and second get distinct ``k``/``n`` unless one arrives after the code's
    window (10 s of exchange time) has moved past its second (the documented limit): then
    the sink keeps the first and the dedup keys fold the late one into it."""
    out = {}
    for table, rows in batch:
        spec = BY_NAME[table]
        at = [spec.names.index(c) for c in spec.sqlite_key()]
        out[table] = len({tuple(row[i] for i in at) for row in rows})
    return out


def check_pipeline(frames: list[bytes], questdb: QuestDBSink, ilp: IlpServer) -> None:
    """Every invariant of the module docstring for one stream of frames."""
    records = decode_all(frames)
    batch = Batch.of(records, seq=1)
    again = Batch.from_bytes(batch.to_bytes())  # the spool's encoding
    assert {t: [tuple(r) for r in rows] for t, rows in again.tables.items()} == batch.tables
    want = expected_rows(batch)
    trades = [r for r in records if isinstance(r, Trade)]
    if trades and max(r.ts for r in trades) - min(r.ts for r in trades) < 10 * NS:
        assert want["trades"] == len(trades)  # within the window every trade keeps its k
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.sqlite"
        sink = SQLiteSink(path)
        sink.write(batch)
        sink.close()
        db = sqlite3.connect(path)
        try:
            for table, n in want.items():
                (stored,) = db.execute(f"SELECT count(*) FROM {table}").fetchone()
                assert stored == n, (table, stored, n)
        finally:
            db.close()
    before = len(ilp.state.table("trades"))
    questdb.write(batch)  # the official client's buffer, flushed to the ILP receiver
    assert len(ilp.state.table("trades")) - before == len(batch.tables.get("trades", []))
