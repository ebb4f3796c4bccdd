"""A feed: one stream, and for K-lines one bar type. What a gap, a detector's "last time"
and a backfill round are keyed by.

Stored as its text (the ``gaps.stream`` column, logs, the coverage picture): ``trades``,
``depth``, ``snapshots`` or ``klines:<kt>``, and for rows the recorder lost itself also
``instruments`` and ``unknown`` (:class:`Other`). The text is made by :attr:`Feed.key` and
read back by :meth:`Feed.parse`, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Final, NamedTuple

from .protocol import Kline, Record, Stream


class Other(StrEnum):
    """What a ``dropped`` gap names when the rows lost were not of a push stream."""

    #: reference-data rows (the ``instruments`` table)
    INSTRUMENTS = "instruments"
    #: rows that could not be read, so neither their table nor their times are known
    UNKNOWN = "unknown"


class Feed(NamedTuple):
    """A stream and its K-line type (``kt``, only for K-lines). A tuple, so it hashes and
    compares as fast as the hot path needs; build it with :meth:`of`, :meth:`klines`,
    :meth:`of_record`, :meth:`of_row` or :meth:`parse`, which keep ``kt`` set exactly for
    K-lines."""

    stream: Stream | Other
    kt: int | None = None

    @property
    def key(self) -> str:
        """The stored text: ``trades`` or ``klines:1``."""
        return self.stream.value if self.kt is None else f"{self.stream.value}:{self.kt}"

    def __str__(self) -> str:
        return self.key

    def __repr__(self) -> str:
        return f"Feed({self.key})"

    @property
    def table(self) -> str:
        """The table the feed's rows go to (``unknown``: none known)."""
        return self.stream.value

    @classmethod
    def of(cls, stream: Stream | Other, kt: int | None = None) -> Feed:
        """The feed of a stream; K-lines need their bar type ``kt``, the others have none."""
        if stream is Stream.KLINES and kt is not None:
            return cls.klines(kt)
        feed = _PLAIN.get(stream)
        if feed is None or kt is not None:
            raise ValueError(f"{stream.value} with K-line type {kt} is not a feed")
        return feed

    @classmethod
    def klines(cls, kt: int) -> Feed:
        """The K-lines of one bar type."""
        feed = _KLINES.get(kt)
        if feed is None:
            feed = Feed(Stream.KLINES, kt)
            if len(_KLINES) < _KLINES_MAX:
                _KLINES[kt] = feed
        return feed

    @classmethod
    def of_record(cls, record: Record) -> Feed:
        """The feed a record came on."""
        if type(record) is Kline:
            return cls.klines(record.kt)
        return _PLAIN[record.stream]

    @classmethod
    def of_row(cls, table: str, row: Sequence[object]) -> Feed:
        """The feed of a row of ``table`` (a K-line row's ``kt`` is its 4th column); a row
        of no known feed is ``unknown``."""
        stream = _NAMED.get(table)
        if stream is Stream.KLINES:
            kt = row[3] if len(row) > 3 else None
            return cls.klines(kt) if type(kt) is int else _PLAIN[Other.UNKNOWN]
        return _PLAIN[stream or Other.UNKNOWN]

    @classmethod
    def parse(cls, text: str) -> Feed:
        """A feed from its stored text; ValueError naming the text when it is none."""
        name, colon, kt = text.partition(":")
        stream = _NAMED.get(name)
        if stream is None:
            raise ValueError(f"not a feed: {text!r}")
        if stream is Stream.KLINES:
            if not (colon and kt.isascii() and kt.isdigit()) or kt != str(int(kt)):
                raise ValueError(f"not a feed: {text!r} (K-lines are klines:<kt>)")
            return cls.klines(int(kt))
        if colon:
            raise ValueError(f"not a feed: {text!r} ({name} has no bar type)")
        return _PLAIN[stream]


_NAMED: Final[dict[str, Stream | Other]] = {s.value: s for s in (*Stream, *Other)}
_PLAIN: Final[dict[Stream | Other, Feed]] = {
    s: Feed(s) for s in _NAMED.values() if s is not Stream.KLINES
}
TRADES: Final = _PLAIN[Stream.TRADES]
DEPTH: Final = _PLAIN[Stream.DEPTH]
SNAPSHOTS: Final = _PLAIN[Stream.SNAPSHOTS]
#: K-line feeds made so far, per bar type: the same few, built once
_KLINES: dict[int, Feed] = {}
_KLINES_MAX: Final = 1024
