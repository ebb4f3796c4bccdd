"""The shared command side of the QOS WebSocket: parsing, replies, codes, subscriptions."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.commands import (
    INVALID_REQUEST,
    Command,
    CommandRefused,
    Subscriptions,
    parse,
    request_codes,
)
from recorder.protocol import STREAMS, Stream

CODES = ["US:AAPL", "US:TSLA", "HK:700", "CF:BTCUSDT", "SH:600519"]


@pytest.mark.parametrize("text", ["", "not json", "[1,2]", '"H"', '{"codes":[]}', "{"])
def test_a_text_that_is_not_a_command_is_none(text: str) -> None:
    assert parse(text) is None
    assert INVALID_REQUEST == {"type": "", "msg": "invalid request"}


def test_the_reply_echoes_type_and_reqid_and_carries_data_only_when_given() -> None:
    command = parse('{"type":"T","codes":["US:AAPL"],"reqid":7}')
    assert command == Command("T", {"type": "T", "codes": ["US:AAPL"], "reqid": 7})
    assert command.subscription == (Stream.TRADES, True)
    reply = command.reply()
    assert set(reply) == {"type", "msg", "time", "reqid"}
    assert (reply["type"], reply["msg"], reply["reqid"]) == ("T", "OK", 7)
    assert command.reply("refused", data=[1])["data"] == [1]
    heartbeat = parse('{"type":"H"}')
    assert heartbeat is not None and heartbeat.subscription is None
    assert "reqid" not in heartbeat.reply()


def test_codes_are_split_and_a_bad_entry_is_refused_by_name_or_explained() -> None:
    assert request_codes({"codes": ["US:AAPL,TSLA", "HK:700"]}) == ["US:AAPL", "US:TSLA", "HK:700"]
    for bad in ({}, {"codes": "US:AAPL"}, {"codes": [1]}):
        with pytest.raises(CommandRefused, match=r"^codes must be a list of strings$"):
            request_codes(bad)
    with pytest.raises(CommandRefused, match=r"^invalid code: XX:NOPE$"):
        request_codes({"codes": ["US:AAPL", "XX:NOPE"]})
    with pytest.raises(CommandRefused, match=r"^invalid code: 'XX:NOPE': unknown market 'XX'"):
        request_codes({"codes": ["XX:NOPE"]}, explain=True)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(STREAMS)),
            st.booleans(),
            st.lists(st.sampled_from(CODES), max_size=3),
            st.sampled_from([1, 5, 1001]),
        ),
        max_size=20,
    )
)
def test_subscriptions_follow_the_last_command_for_each_code(
    commands: list[tuple[Stream, bool, list[str], int]],
) -> None:
    subs = Subscriptions()
    model: dict[tuple[str, str, int | None], bool] = {}
    for stream, adding, codes, kt in commands:
        subs.change(stream, adding, codes, kt)
        for code in codes:
            model[(stream.tp, code, kt if stream is Stream.KLINES else None)] = adding
    for stream in STREAMS:
        for code in CODES:
            for kt in (1, 5, 1001):
                key = (stream.tp, code, kt if stream is Stream.KLINES else None)
                assert subs.wants(stream.tp, code, kt) == model.get(key, False)
    assert subs.products() == {code for (_, code, _), on in model.items() if on}


def test_a_frame_of_another_kline_type_is_not_wanted() -> None:
    subs = Subscriptions()
    subs.change(Stream.KLINES, True, ["US:AAPL"], 1)
    frame = orjson.loads(b'{"tp":"K","c":"US:AAPL","kt":5}')
    assert not subs.wants(frame["tp"], frame["c"], frame["kt"])
    assert subs.wants("K", "US:AAPL", 1)
    assert not subs.wants("T", "US:AAPL")
