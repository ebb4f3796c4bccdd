"""The decoder against every example frame of the reference, and hypothesis round trips."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from shapes import api_decimals, push_frames

from recorder import protocol
from recorder.exceptions import DecodeError
from recorder.protocol import NS, TS_MAX, TS_MIN, Depth, Kline, Reply, Snapshot, Stream, Trade
from recorder.sim.market import Market

RECV = 1_700_000_000_123_456_789

# The example frames of qos-protocol.md, verbatim.
SNAPSHOT = (
    b'{"tp":"S","c":"SH:600938","lp":"25.92","yp":"26.15","o":"26.19","h":"26.19",'
    b'"l":"25.62","ts":1731650869,"v":"694420","t":"1793887058","s":0}'
)
TRADE = b'{"tp":"T","c":"US:TSLA","p":"246.39","v":"100","ts":1741960243,"d":1}'
DEPTH = (
    b'{"tp":"D","c":"US:AAPL","b":[{"p":"212.62","v":"110"}],"a":[{"p":"212.66","v":"338"}],'
    b'"ts":1741960347}'
)
KLINE = (
    b'{"tp":"K","c":"CF:BTCUSDT","o":"81085.50","cl":"83504.10","h":"83856.00","l":"80772.00",'
    b'"v":"103162.630","ts":1741910400,"kt":1001}'
)
HEARTBEAT_REPLY = b'{"type":"H","msg":"OK","time":1742046368}'
RT_REPLY = b'{"type":"RT","msg":"OK","reqid":1,"data":[]}'


def test_reference_snapshot() -> None:
    s = protocol.decode(SNAPSHOT, RECV)
    assert s == Snapshot(
        "SH:600938",
        1731650869 * NS,
        25.92,
        26.15,
        26.19,
        26.19,
        25.62,
        694420.0,
        1793887058.0,
        0,
        None,
        RECV,
        text=("25.92", "26.15", "26.19", "26.19", "25.62", "694420", "1793887058"),
    )


def test_reference_trade() -> None:
    assert protocol.decode(TRADE, RECV) == Trade(
        "US:TSLA", 1741960243 * NS, 246.39, 100.0, 1, RECV, text=("246.39", "100")
    )


def test_reference_depth() -> None:
    assert protocol.decode(DEPTH, RECV) == Depth(
        "US:AAPL",
        1741960347 * NS,
        ((212.62, 110.0),),
        ((212.66, 338.0),),
        RECV,
        bid_text=(("212.62", "110"),),
        ask_text=(("212.66", "338"),),
    )


def test_reference_kline() -> None:
    assert protocol.decode(KLINE, RECV) == Kline(
        "CF:BTCUSDT",
        1001,
        1741910400 * NS,
        81085.5,
        83504.1,
        83856.0,
        80772.0,
        103162.63,
        RECV,
        text=("81085.50", "83504.10", "83856.00", "80772.00", "103162.630"),
    )


def test_reference_replies() -> None:
    assert protocol.decode(HEARTBEAT_REPLY, RECV) == Reply("H", "OK", 1742046368, None, None)
    reply = protocol.decode(RT_REPLY, RECV)
    assert isinstance(reply, Reply) and reply.ok and reply.reqid == 1 and reply.data == []
    refused = protocol.decode(b'{"type":"T","msg":"product limit exceeded"}', RECV)
    assert isinstance(refused, Reply) and not refused.ok


def test_us_snapshot_with_extended_sessions_and_unknown_fields() -> None:
    frame = orjson.loads(SNAPSHOT)
    frame.update(
        c="US:AAPL",
        tt=2,
        future_field={"x": 1},
        pq={
            "lp": "1.5",
            "yp": "1.4",
            "h": "1.6",
            "l": "1.3",
            "ts": 1731650000,
            "v": "10",
            "t": "15.0",
        },
    )
    s = protocol.decode(orjson.dumps(frame), RECV)
    assert isinstance(s, Snapshot) and s.session == 2
    assert s.extended["pq"] == protocol.SessionQuote(
        1.5, 1.4, 1.6, 1.3, 1731650000 * NS, 10.0, 15.0, ("1.5", "1.4", "1.6", "1.3", "10", "15.0")
    )


def test_unknown_tp_is_not_an_error() -> None:
    assert protocol.decode(b'{"tp":"Z","c":"US:AAPL"}', RECV) is None


@pytest.mark.parametrize(
    "frame",
    [
        b"not json",
        b"[1,2]",
        b'{"c":"US:AAPL"}',
        b'{"tp":"T","c":"US:TSLA","p":"abc","v":"1","ts":1,"d":1}',
        b'{"tp":"T","c":"US:TSLA","p":"1","v":"1","ts":"1","d":1}',
        b'{"tp":"T","c":"US:TSLA","p":"1","v":"1","ts":1,"d":7}',
        b'{"tp":"T","c":"US:TSLA","p":"nan","v":"1","ts":1,"d":1}',
        b'{"tp":"T","c":42,"p":"1","v":"1","ts":1,"d":1}',
        b'{"tp":"D","c":"US:AAPL","b":[{"p":"1"}],"a":[],"ts":1}',
        b'{"tp":"K","c":"US:AAPL","o":"1","cl":"1","h":"1","l":"1","v":"1","ts":1,"kt":2}',
        b'{"type":"H"}',
        TRADE[:-5],
    ],
)
def test_malformed_frames_raise_decode_error_with_the_frame(frame: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        protocol.decode(frame, RECV)
    assert info.value.frame == frame


def test_commands_encode_every_type() -> None:
    assert orjson.loads(protocol.heartbeat()) == {"type": "H"}
    assert orjson.loads(protocol.subscribe(Stream.TRADES, ["US:AAPL"], reqid=3)) == {
        "type": "T",
        "codes": ["US:AAPL"],
        "reqid": 3,
    }
    assert orjson.loads(protocol.subscribe(Stream.KLINES, ["CF:BTCUSDT"], kt=1)) == {
        "type": "K",
        "codes": ["CF:BTCUSDT"],
        "kt": 1,
    }
    for kind in protocol.COMMAND_TYPES:
        assert orjson.loads(protocol.command(kind))["type"] == kind
    with pytest.raises(ValueError):
        protocol.command("X")
    with pytest.raises(ValueError):
        protocol.subscribe(Stream.KLINES, ["CF:BTCUSDT"])


def test_http_records_decode_like_pushes() -> None:
    data = [orjson.loads(TRADE)]
    del data[0]["tp"]
    assert protocol.records_from("T", data, RECV) == [protocol.decode(TRADE, RECV)]
    bars = [
        {
            "c": "US:AAPL",
            "k": [
                {
                    "c": "US:AAPL",
                    "o": "1",
                    "cl": "2",
                    "h": "3",
                    "l": "0.5",
                    "v": "10",
                    "ts": 60,
                    "kt": 1,
                }
            ],
        }
    ]
    (bar,) = protocol.records_from("K", bars, RECV)
    assert isinstance(bar, Kline) and bar.close == 2.0 and bar.ts == 60 * NS


# --- hypothesis: valid frames round-trip, invalid ones raise the one exception -------------

decimals = api_decimals
codes = st.builds(
    lambda m, s: f"{m}:{s}",
    st.sampled_from(sorted(protocol.MARKETS)),
    st.from_regex(r"[A-Z0-9]{1,8}", fullmatch=True),
)
seconds = st.integers(min_value=0, max_value=4_000_000_000)
trade_frames, depth_frames, snapshot_frames, kline_frames = push_frames(
    codes,
    decimals,
    decimals,
    seconds,
    max_levels=10,
    snapshot_optional={"tt": st.integers(0, 4), "extra": st.text(max_size=5)},
)
frames = st.one_of(trade_frames, depth_frames, snapshot_frames, kline_frames)


def _same_number(a: object, b: object) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-12)  # type: ignore[arg-type]


@given(frames)
def test_valid_frames_round_trip(frame: dict[str, object]) -> None:
    record = protocol.decode(orjson.dumps(frame), RECV)
    assert record is not None and not isinstance(record, Reply)
    assert record.recv_ts == RECV
    back = protocol.push_frame(record)
    assert back["tp"] == frame["tp"] and back["c"] == frame["c"] and back["ts"] == frame["ts"]
    # every decimal string comes back exactly as it was sent: same digits, trailing zeros
    assert back == {k: v for k, v in frame.items() if k != "extra"}
    assert protocol.decode(orjson.dumps(back), RECV) == record


@given(
    frames,
    st.sampled_from(["p", "v", "lp", "ts", "c", "kt", "d", "b"]),
    st.one_of(st.none(), st.just("x1"), st.just([1]), st.just({"a": 1}), st.just(True)),
)
def test_corrupted_fields_raise_decode_error(
    frame: dict[str, object], key: str, bad: object
) -> None:
    assume(key in frame)
    frame = {**frame, key: bad}
    with pytest.raises(DecodeError):
        protocol.decode(orjson.dumps(frame), RECV)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    try:
        protocol.decode(data, RECV)
    except DecodeError as exc:
        assert exc.frame == data


# --- hostile values (#21): refused at decode, never a traceback or a poisoned batch --------

GOOD_TRADE = {"tp": "T", "c": "US:AAPL", "p": "1", "v": "1", "ts": 1741960243, "d": 1}


@pytest.mark.parametrize("ts", [10_000_000_000, 1741960243000, TS_MAX, -1])
def test_a_ts_outside_the_window_is_a_decode_error_in_every_stream(ts: int) -> None:
    pq = {"lp": "1", "yp": "1", "h": "1", "l": "1", "ts": ts, "v": "1", "t": "1"}
    snapshot = {**orjson.loads(SNAPSHOT), "c": "US:AAPL", "pq": pq}
    bad = [
        {**GOOD_TRADE, "ts": ts},
        {**orjson.loads(DEPTH), "ts": ts},
        {**orjson.loads(SNAPSHOT), "ts": ts},
        snapshot,  # only the pre-market quote's ts is wrong
        {**orjson.loads(KLINE), "ts": ts},
    ]
    for frame in bad:
        with pytest.raises(DecodeError, match="'ts'"):
            protocol.decode(orjson.dumps(frame), RECV)
    with pytest.raises(DecodeError, match="'ts'"):
        protocol.records_from("T", [{**GOOD_TRADE, "ts": ts}], RECV)


def test_the_last_second_of_the_window_decodes() -> None:
    trade = protocol.decode(orjson.dumps({**GOOD_TRADE, "ts": TS_MAX - 1}), RECV)
    assert isinstance(trade, Trade) and trade.ts == (TS_MAX - 1) * NS < 2**63


@pytest.mark.parametrize(
    "tp", [[1], {}, {"a": 1}, 1, 1.5, True, ["T"]], ids=lambda tp: orjson.dumps(tp).decode()
)
def test_a_tp_that_is_not_a_string_is_a_decode_error(tp: object) -> None:
    frame = orjson.dumps({**GOOD_TRADE, "tp": tp})
    with pytest.raises(DecodeError, match="'tp' is not a string") as info:
        protocol.decode(frame, RECV)
    assert info.value.frame == frame


@pytest.mark.parametrize(
    "text",
    [
        "1_000",
        "١٢٣",
        "\uff11\uff12",
        "²",
        "nan",
        "inf",
        "-inf",
        "Infinity",
        " 1",
        "1 ",
        "\t1",
        "1e3",
        "+1",
        "0x10",
        "1.2.3",
        "",
        ".",
        "-",
        "--1",
        "1,5",
    ],
)
def test_a_decimal_that_is_not_plain_is_a_decode_error(text: str) -> None:
    for key in ("p", "v"):
        frame = orjson.dumps({**GOOD_TRADE, key: text})
        with pytest.raises(DecodeError, match=f"'{key}'"):
            protocol.decode(frame, RECV)
    level = {**orjson.loads(DEPTH), "b": [{"p": "1", "v": text}]}
    with pytest.raises(DecodeError):
        protocol.decode(orjson.dumps(level), RECV)


def test_a_negative_price_decodes_and_a_negative_size_or_volume_does_not() -> None:
    trade = protocol.decode(orjson.dumps({**GOOD_TRADE, "p": "-37.63"}), RECV)
    assert isinstance(trade, Trade) and trade.price == -37.63
    bad = [
        {**GOOD_TRADE, "v": "-1"},
        {**GOOD_TRADE, "v": -1},
        {**orjson.loads(DEPTH), "a": [{"p": "1", "v": "-5"}]},
        {**orjson.loads(SNAPSHOT), "v": "-694420"},
        {**orjson.loads(KLINE), "v": "-1"},
    ]
    for frame in bad:
        with pytest.raises(DecodeError, match="'v'"):
            protocol.decode(orjson.dumps(frame), RECV)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    frames,
    st.sampled_from(["tp", "c", "p", "v", "ts", "d", "b", "a", "kt", "tt", "s", "lp", "pq", "k"]),
    json_values,
)
def test_any_json_in_any_field_decodes_or_is_a_decode_error(
    frame: dict[str, object], key: str, value: object
) -> None:
    data = orjson.dumps({**frame, key: value})
    try:
        record = protocol.decode(data, RECV)
    except DecodeError as exc:
        assert exc.frame == data
        return
    if record is not None and not isinstance(record, Reply):
        assert TS_MIN * NS <= record.ts < TS_MAX * NS
        assert math.isfinite(getattr(record, "size", 0.0))


@pytest.mark.parametrize("frame", [SNAPSHOT, TRADE, DEPTH, KLINE])
def test_the_reference_frames_come_back_byte_for_byte(frame: bytes) -> None:
    record = protocol.decode(frame, RECV)
    assert record is not None and not isinstance(record, Reply)
    assert orjson.dumps(protocol.push_frame(record)) == frame  # same keys, same order


def test_the_simulators_frames_come_back_byte_for_byte() -> None:
    now = 1_741_960_000.0
    market = Market(
        ("US:AAPL", "HK:700", "CF:BTCUSDT"), seed=3, clock=lambda: now, market_hours=False
    )
    pushed = [f for i in range(40) for f in market.step(now + i * 0.25)]
    pushed += [market.snapshot("US:AAPL", int(now)), market.depth("HK:700", int(now))]
    assert {f["tp"] for f in pushed} == {"T", "D", "S", "K"}
    assert any("pq" in f for f in pushed)
    for frame in pushed:
        record = protocol.decode(orjson.dumps(frame), RECV)
        assert record is not None and not isinstance(record, Reply)
        assert orjson.dumps(protocol.push_frame(record)) == orjson.dumps(frame)
