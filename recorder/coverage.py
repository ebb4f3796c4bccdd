"""``qos-recorder coverage``: a stretch of the record as a picture.

Per code and stream, a time line in minutes (a UTC day, zoomed to the recorded span when
the day is mostly empty, or any ``--from``/``--to`` window), coloured by what the store
and the gap ledger say: recorded, a gap filled by backfill, partial, unrecoverable, still
open (up to now, never past it), the market closed, or nothing at all. Codes no longer in
the config (removed by a reload) are drawn while they have rows in the window. With the
totals (rows per table, gaps by status, estimated lost volume). The output is one
self-contained HTML file (inline SVG and CSS, no script, nothing fetched).
"""

from __future__ import annotations

import datetime as dt
import html
import time
from dataclasses import dataclass, field, replace

from .config import Config
from .feed import Feed
from .gaps import GapStatus
from .markets import Calendar, is_open
from .protocol import NS, Stream, market_of
from .schema import GAPS
from .store import Reader, reader_for

MINUTES = 1440
_MIN = 60 * NS
#: a day whose recorded span is shorter than this fraction of it is drawn zoomed to the span
ZOOM_BELOW = 0.5
CLOSED, RECORDED = "closed", "recorded"
#: what a minute shows, drawn in this order (later ones on top), and its colour: the two
#: kinds of this picture, then a gap's status
KINDS: dict[str, tuple[str, str]] = {
    CLOSED: ("market closed", "#c9ced6"),
    RECORDED: ("recorded", "#2e9e5b"),
    GapStatus.FILLED: ("gap filled by backfill", "#3b7dd8"),
    GapStatus.PARTIAL: ("gap, partly recovered", "#f0a020"),
    GapStatus.UNRECOVERABLE: ("gap, not recoverable", "#d64545"),
    GapStatus.OPEN: ("gap still open", "#8e44ad"),
}
EMPTY = "#eef0f3"


@dataclass
class Line:
    """One code and feed over the day: the kind of each minute (None: nothing)."""

    code: str
    feed: Feed
    minutes: list[str | None] = field(default_factory=lambda: [None] * MINUTES)

    def paint(self, kind: str, first: int, last: int) -> None:
        for m in range(max(first, 0), min(last, len(self.minutes) - 1) + 1):
            self.minutes[m] = kind

    def runs(self) -> list[tuple[int, int, str | None]]:
        """(first minute, length, kind) of each run of equal minutes."""
        out: list[tuple[int, int, str | None]] = []
        for m, kind in enumerate(self.minutes):
            if out and out[-1][2] == kind:
                first, length, _ = out[-1]
                out[-1] = (first, length + 1, kind)
            else:
                out.append((m, 1, kind))
        return out


@dataclass
class Day:
    """Everything the picture shows; minute 0 of every line is ``start`` (ns, UTC)."""

    day: dt.date
    lines: list[Line]
    rows: dict[str, int]
    gaps: dict[str, int]
    lost_volume: dict[str, float]
    start: int = 0
    whole_day: bool = True

    @property
    def minutes(self) -> int:
        return len(self.lines[0].minutes) if self.lines else MINUTES

    def zoomed(self) -> Day:
        """The span with anything recorded or missing in it, padded, when that is under
        ``ZOOM_BELOW`` of the window: 10 minutes of data are not a hairline."""
        marked = [
            m
            for line in self.lines
            for m, kind in enumerate(line.minutes)
            if kind not in (None, CLOSED)
        ]
        if not marked or max(marked) - min(marked) + 1 >= ZOOM_BELOW * self.minutes:
            return self
        pad = max(5, (max(marked) - min(marked)) // 10)
        lo = max(0, (min(marked) - pad) // 5 * 5)
        hi = min(self.minutes, -(-(max(marked) + 1 + pad) // 5) * 5)
        lines = [replace(line, minutes=line.minutes[lo:hi]) for line in self.lines]
        return replace(self, lines=lines, start=self.start + lo * _MIN, whole_day=False)


_GAP_FIELDS = [
    GAPS.names.index(n) for n in ("ts", "end_ts", "code", "stream", "status", "lost_volume")
]


def feeds_of(config: Config) -> list[tuple[Feed, list[str]]]:
    """(feed, codes) for each recorded feed; K-lines as their 1-minute bars."""
    sub = config.subscribe
    out = [(Feed.of(s), sub.codes(s)) for s in (Stream.TRADES, Stream.DEPTH, Stream.SNAPSHOTS)]
    if 1 in sub.kline_types:
        out.append((Feed.klines(1), sub.codes(Stream.KLINES)))
    return [(feed, codes) for feed, codes in out if codes]


def build(
    config: Config,
    day: dt.date,
    calendar: Calendar | None = None,
    reader: Reader | None = None,
    *,
    window: tuple[int, int] | None = None,
    now: int | None = None,
) -> Day:
    """Read the store (the config's, or ``reader``: an archive, say) and the ledger for
    ``day`` (UTC), or for ``window`` (ns, whole minutes) when given, and lay out the
    picture. A gap still open is drawn up to ``now``, never past it."""
    start = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * NS
    end = start + 86400 * NS
    if window is not None:
        start, end = window[0] // _MIN * _MIN, -(-window[1] // _MIN) * _MIN
    span = (end - start) // _MIN
    now = time.time_ns() if now is None else now
    store = reader or reader_for(config)
    lines: list[Line] = []
    rows: dict[str, int] = {}
    for feed, configured in feeds_of(config):
        table = feed.table
        # a code a reload removed still has its rows in the window: it is drawn too
        removed = [c for c in store.codes(table) if c not in configured]
        for code in [*configured, *removed]:
            count = store.count(table, code, start, end)
            if code in removed and not count:
                continue
            line = Line(code, feed, [None] * span)
            for m in range(span):
                if is_open(market_of(code), start + m * _MIN, calendar) is False:
                    line.minutes[m] = CLOSED
            for m in store.minutes(table, code, start, end):
                line.minutes[m] = RECORDED
            rows[table] = rows.get(table, 0) + count
            lines.append(line)
    gaps: dict[str, int] = {}
    lost: dict[str, float] = {}
    # keyed by the feed's stored text: a ledger row of no feed drawn here matches nothing
    by_key = {(line.code, line.feed.key): line for line in lines}
    for row in store.gaps(start, end, overlapping=True):
        first, last_ts, code, stream, status, lost_volume = (row[i] for i in _GAP_FIELDS)
        gaps[status] = gaps.get(status, 0) + 1
        if lost_volume:
            lost[code] = lost.get(code, 0.0) + lost_volume
        hit = by_key.get((code, stream))
        if hit is not None and status in KINDS:
            # a hole still lasting ends now: what comes later has not happened yet
            last = (min(now, end - 1) if last_ts is None else last_ts) - start
            hit.paint(status, (first - start) // _MIN, last // _MIN)
    return Day(day, lines, rows, gaps, lost, start, window is None)


# --- drawing ------------------------------------------------------------------------------

_LABEL, _WIDTH, _ROW, _TOP = 210, 960, 20, 36


#: minutes between time marks: the smallest that leaves at most 24 marks
_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440)


def render(picture: Day) -> str:
    """The picture as a self-contained HTML page."""
    return _page(picture, "".join(_svg(picture)))


def _svg(picture: Day) -> list[str]:
    """The minute grid: time marks across, one row of coloured runs per code and feed."""
    height = _TOP + _ROW * len(picture.lines) + 10
    scale = _WIDTH / picture.minutes
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_LABEL + _WIDTH + 20}" '
        f'height="{height}" font-family="sans-serif" font-size="12">'
    ]
    svg += _time_marks(picture, scale, height)
    for i, line in enumerate(picture.lines):
        svg += _line_row(line, _TOP + i * _ROW, scale, picture.start // _MIN)
    svg.append("</svg>")
    return svg


def _time_marks(picture: Day, scale: float, height: int) -> list[str]:
    """A thin line every ``step`` minutes, labelled often enough to stay readable."""
    span, first_minute = picture.minutes, picture.start // _MIN
    step = next((s for s in _STEPS if span / s <= 24), 1440)
    marks = []
    for m in range(-first_minute % step, span + 1, step):
        x = _LABEL + m * scale
        marks.append(
            f'<line x1="{x:.1f}" y1="{_TOP - 6}" x2="{x:.1f}" y2="{height - 10}" '
            'stroke="#999" stroke-width="0.5"/>'
        )
        if (first_minute + m) % (step * (3 if span / step > 8 else 1)) == 0:
            marks.append(
                f'<text x="{x:.1f}" y="{_TOP - 12}" text-anchor="middle">'
                f"{_hhmm(first_minute + m)}</text>"
            )
    return marks


def _line_row(line: Line, y: int, scale: float, first_minute: int) -> list[str]:
    """One code and feed: its label, then a rectangle per run of minutes of one kind."""
    label = html.escape(f"{line.code}  {line.feed}")
    row = [f'<text x="{_LABEL - 8}" y="{y + 14}" text-anchor="end">{label}</text>']
    for first, length, kind in line.runs():
        colour = EMPTY if kind is None else KINDS[kind][1]
        title = "nothing" if kind is None else KINDS[kind][0]
        row.append(
            f'<rect x="{_LABEL + first * scale:.2f}" y="{y + 2}" width="{length * scale:.2f}" '
            f'height="{_ROW - 4}" fill="{colour}"><title>{_hhmm(first_minute + first)}-'
            f"{_hhmm(first_minute + first + length)} {title}</title></rect>"
        )
    return row


def _page(picture: Day, svg: str) -> str:
    """The HTML around the grid: the title, the legend and the day's totals."""
    legend = "".join(
        f'<span class="key"><i style="background:{colour}"></i>{html.escape(name)}</span>'
        for name, colour in [*KINDS.values(), ("nothing recorded", EMPTY)]
    )
    rows = ", ".join(f"{table} {n:,}" for table, n in picture.rows.items()) or "none"
    gaps = ", ".join(f"{status} {n}" for status, n in sorted(picture.gaps.items())) or "none"
    lost = ", ".join(f"{code} {v:,.6g}" for code, v in sorted(picture.lost_volume.items()))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>qos-recorder coverage {html.escape(window_text(picture))}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }}
p {{ margin: 4px 0; }}
.key {{ margin-right: 16px; white-space: nowrap; }}
.key i {{ display: inline-block; width: 14px; height: 14px; margin-right: 5px;
  vertical-align: -2px; border: 1px solid #888; }}
</style></head>
<body>
<h1>Coverage of {html.escape(window_text(picture))}, minute by minute</h1>
<p>{legend}</p>
{svg}
<p><b>Rows:</b> {rows}</p>
<p><b>Gaps:</b> {gaps}</p>
<p><b>Estimated lost volume:</b> {lost or "none"}</p>
</body></html>
"""


def window_text(picture: Day) -> str:
    """``2026-11-26 (UTC)``, or the window shown: ``2026-11-26 23:05-23:25 UTC``."""
    if picture.whole_day and picture.minutes == MINUTES:
        return f"{picture.day} (UTC)"
    first = dt.datetime.fromtimestamp(picture.start / NS, dt.UTC)
    last = first + dt.timedelta(minutes=picture.minutes)
    to = f"{last:%H:%M}" if last.date() == first.date() else f"{last:%Y-%m-%d %H:%M}"
    return f"{first:%Y-%m-%d %H:%M}-{to} UTC"


def _hhmm(minute: int) -> str:
    """A minute since 1970 (or since midnight) as HH:MM of its UTC day."""
    minute %= MINUTES
    return f"{minute // 60:02d}:{minute % 60:02d}"
