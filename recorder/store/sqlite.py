"""Reading a SQLite file the recorder writes: read-only, bound parameters for every value.

Table and column names in the statements come from :mod:`recorder.schema` only. The
unique index of every market table starts ``(code, ts)``, so one code's range is an index
range; several codes are merged in Python rather than sorted by the database.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError, SinkError
from ..protocol import NS
from ..schema import BY_NAME, GAPS, KLINES, Row
from .base import BATCH_ROWS, CHUNK, code_order, padded, time_order


class SQLiteReader:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.source = str(self.path)
        if not self.path.is_file():
            raise ConfigError(f"{self.path}: no such SQLite file")
        try:
            self.db = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, check_same_thread=False
            )
            self._have = {
                name: {c for (_, c, *_) in self.db.execute(f"PRAGMA table_info({name})")}
                for name in BY_NAME
            }
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                f"{self.path}: not a SQLite database the recorder wrote: {exc}"
            ) from None

    def _query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise SinkError(f"sqlite {self.path}: {exc}") from None

    def _columns(self, table: str) -> str:
        # columns an older file lacks are read as NULL, then padded with their defaults
        have = self._have[table]
        return ", ".join(n if n in have else "NULL" for n in BY_NAME[table].names)

    def _exists(self, table: str) -> bool:
        # only names of the schema reach a statement
        if table not in BY_NAME:
            raise ConfigError(f"{table!r} is not a table: one of {', '.join(BY_NAME)}")
        return bool(self._have[table])

    def codes(self, table: str) -> list[str]:
        if not self._exists(table):
            return []
        return [c for (c,) in self._query(f"SELECT DISTINCT code FROM {table} ORDER BY code")]

    def kline_types(self, code: str) -> list[int]:
        if not self._exists(KLINES.name):
            return []
        sql = "SELECT DISTINCT kt FROM klines WHERE code = ? ORDER BY kt"
        return [int(kt) for (kt,) in self._query(sql, code)]

    def rows(
        self, table: str, start: int, end: int, codes: Sequence[str] = (), kt: int | None = None
    ) -> Iterator[Row]:
        if not self._exists(table):
            return iter(())
        order = time_order(table)
        key = itemgetter(*(BY_NAME[table].names.index(c) for c in order))
        cursors = [self._code_rows(table, c, start, end, kt) for c in codes or self.codes(table)]
        return cursors[0] if len(cursors) == 1 else heapq.merge(*cursors, key=key)

    def _code_rows(
        self, table: str, code: str, start: int, end: int, kt: int | None
    ) -> Iterator[Row]:
        order = ", ".join(c for c in time_order(table) if c != "code" and c in self._have[table])
        where = "code = ? AND ts >= ? AND ts < ?" + ("" if kt is None else " AND kt = ?")
        args: tuple[Any, ...] = (code, start, end) if kt is None else (code, start, end, kt)
        sql = f"SELECT {self._columns(table)} FROM {table} WHERE {where} ORDER BY {order}"
        try:
            cur = self.db.execute(sql, args)
            while chunk := cur.fetchmany(CHUNK):
                yield from chunk
        except sqlite3.Error as exc:
            raise SinkError(f"sqlite {self.path}: {exc}") from None

    def count(self, table: str, code: str, start: int, end: int) -> int:
        if not self._exists(table):
            return 0
        sql = f"SELECT count(*) FROM {table} WHERE code = ? AND ts >= ? AND ts < ?"
        return int(self._query(sql, code, start, end)[0][0])

    def minutes(self, table: str, code: str, start: int, end: int) -> list[int]:
        if not self._exists(table):
            return []
        sql = f"SELECT DISTINCT (ts - ?) / ? FROM {table} WHERE code = ? AND ts >= ? AND ts < ?"
        return [int(m) for (m,) in self._query(sql, start, 60 * NS, code, start, end)]

    def gaps(self, start: int, end: int, overlapping: bool = False) -> list[Row]:
        if not self._exists(GAPS.name):
            return []
        where = (
            "ts < ? AND (end_ts IS NULL OR end_ts >= ?)" if overlapping else "ts < ? AND ts >= ?"
        )
        sql = f"SELECT {self._columns('gaps')} FROM gaps WHERE {where} ORDER BY ts, code"
        return padded(GAPS.name, self._query(sql, end, start))

    def batches(
        self, table: str, start: int, end: int, codes: Sequence[str] = (), size: int = BATCH_ROWS
    ) -> Iterator[Any]:
        from .arrow import to_batch

        if not self._exists(table):
            return
        order = ", ".join(c for c in code_order(table) if c in self._have[table])
        where = "ts >= ? AND ts < ?"
        args: list[Any] = [start, end]
        if codes:
            where += f" AND code IN ({', '.join('?' * len(codes))})"
            args += list(codes)
        sql = f"SELECT {self._columns(table)} FROM {table} WHERE {where} ORDER BY {order}"
        try:
            cur = self.db.execute(sql, args)
            while chunk := cur.fetchmany(size):
                yield to_batch(table, chunk)
        except sqlite3.Error as exc:
            raise SinkError(f"sqlite {self.path}: {exc}") from None

    def close(self) -> None:
        self.db.close()
