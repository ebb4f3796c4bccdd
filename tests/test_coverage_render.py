"""The coverage page's grid, for any painting of its lines: one labelled row per code and
feed, one rectangle per run of minutes, the runs of a row filling its width exactly, and
every title naming its run's minutes and kind."""

from __future__ import annotations

import datetime as dt
import re

from hypothesis import given
from hypothesis import strategies as st

from recorder.coverage import _WIDTH, EMPTY, KINDS, Day, Line, render
from recorder.feed import Feed
from recorder.protocol import NS, Stream


def _hhmm(minute: int) -> str:
    return f"{minute // 60 % 24:02d}:{minute % 60:02d}"


RECT = re.compile(
    r'<rect x="([\d.]+)" y="(\d+)" width="([\d.]+)" height="\d+" fill="([^"]+)">'
    r"<title>(\d\d:\d\d)-(\d\d:\d\d) ([^<]+)</title></rect>"
)
paints = st.lists(
    st.tuples(st.sampled_from(sorted(KINDS)), st.integers(0, 200), st.integers(0, 60)),
    max_size=8,
)


@given(st.integers(5, 200), st.lists(paints, min_size=1, max_size=4), st.integers(0, 1439))
def test_every_run_is_one_rectangle_and_a_row_fills_the_width(
    span: int, painted: list[list[tuple[str, int, int]]], offset: int
) -> None:
    lines = []
    for i, strokes in enumerate(painted):
        line = Line(f"US:C{i}", Feed(Stream.TRADES), [None] * span)
        for kind, first, length in strokes:
            line.paint(kind, first, first + length)
        lines.append(line)
    start = 1_795_564_800 * NS + offset * 60 * NS
    page = render(Day(dt.date(2026, 11, 26), lines, {"trades": 1}, {}, {}, start, False))
    rects = RECT.findall(page)
    assert len(rects) == sum(len(line.runs()) for line in lines)
    by_row: dict[str, list[tuple[str, ...]]] = {}
    for rect in rects:
        by_row.setdefault(rect[1], []).append(rect)
    assert len(by_row) == len(lines)
    titles = {name for name, _ in KINDS.values()} | {"nothing"}
    for line, row in zip(lines, by_row.values(), strict=True):
        assert abs(sum(float(r[2]) for r in row) - _WIDTH) < 0.01 * len(row)
        for (first, length, what), rect in zip(line.runs(), row, strict=True):
            assert rect[3] == (EMPTY if what is None else KINDS[what][1])
            assert rect[6] in titles
            assert rect[4:6] == (_hhmm(offset + first), _hhmm(offset + first + length))
        assert f">{line.code}  {line.feed}</text>" in page
