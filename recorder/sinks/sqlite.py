"""The embedded default sink: one SQLite file in WAL mode.

Other processes can query while the recorder writes. Before and after every batch the sink
checks that the file it has open is still the one at its path (device and inode): a file
deleted, renamed or replaced while recording raises
:class:`~recorder.exceptions.SinkReplaced`, so the batch is spooled, never acknowledged
into an unlinked file, and the next write opens the path anew (a new file if there is
none). Unique indexes on each table's dedup
keys make a re-sent batch harmless: trades, depth and snapshots keep the first row of a
key (so a backfill never relabels a live row), K-lines keep the newest version of a bar,
gaps their latest state.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from ..batching import Batch
from ..exceptions import InUseError, SinkError, SinkIncompatible, SinkRejected, SinkReplaced
from ..identity import Identity
from ..lockfile import LockFile
from ..schema import BY_NAME, GAPS, KLINES, MARKET_TABLES, TABLES, Row, Table
from .base import EXPIRE_ROWS

#: Rows per INSERT statement. Python's sqlite3 releases the GIL around every step, and
#: while the event loop thread is busy each re-acquire can wait a whole switch interval
#: (5 ms): executemany (one step per row) then crawls. Multi-row VALUES makes it one step
#: per statement.
ROWS_PER_STATEMENT = 500


def _insert(table: Table, rows: int) -> str:
    cols = ", ".join(table.names)
    one = "(" + ", ".join("?" * len(table.names)) + ")"
    values = ", ".join([one] * rows)
    if table.name == KLINES.name:
        keys = ("code", "ts", "kt")
        updates = ", ".join(f"{c} = excluded.{c}" for c in table.names if c not in keys)
        return (
            f"INSERT INTO klines ({cols}) VALUES {values} ON CONFLICT (code, ts, kt) "
            f"DO UPDATE SET {updates} WHERE excluded.recv_ts >= klines.recv_ts"
        )
    verb = "INSERT OR REPLACE" if table.upsert else "INSERT OR IGNORE"
    return f"{verb} INTO {table.name} ({cols}) VALUES {values}"


_INSERT = {t.name: _insert(t, ROWS_PER_STATEMENT) for t in TABLES}
_LAST = {t: f"SELECT code, max(ts) FROM {t} GROUP BY code" for t in MARKET_TABLES}
_OPEN_GAPS = f"SELECT {', '.join(GAPS.names)} FROM gaps WHERE status = 'open'"


def _migrate(db: sqlite3.Connection, table: Table, create_index: str) -> None:
    """Bring a table an earlier version made up to date: add the columns added since, and
    rebuild the unique index when its keys changed."""
    have = {row[1] for row in db.execute(f"PRAGMA table_info({table.name})")}
    for name in table.added:
        if name not in have:
            db.execute(table.sqlite_column(name))
    keyed = tuple(row[2] for row in db.execute(f"PRAGMA index_info({table.name}_key)"))
    if keyed and keyed != table.sqlite_key():
        db.execute(f"DROP INDEX {table.name}_key")
    db.execute(create_index)


class SQLiteSink:
    name = "sqlite"

    def __init__(self, path: str | Path, busy_timeout: float = 1.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._db: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None  # (device, inode) of the file opened
        # one recorder per file: a sidecar, since SQLite's own locks are per transaction
        self._held = LockFile(self.path.with_name(self.path.name + ".lock"), f"SQLite file {path}")
        self._claimed = False  # claim() was called: open() takes the lock if claim could not

    def claim(self) -> None:
        """Hold the file for this recorder (``<file>.lock``, released by :meth:`close` or
        the process's end); InUseError naming the other recorder's pid. The archive job's
        retention opens the same file without claiming it. A directory that cannot be made
        yet is the database being down: :meth:`open` claims it once it can."""
        self._claimed = True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._held.acquire()
        except OSError:
            pass  # open() raises SinkError for it, and the recorder spools meanwhile

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._claimed:
                self._held.acquire()  # a no-op when claim() took it
            db = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            # a new file returns the space retention frees (older files reuse it instead)
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            for table in TABLES:
                create_table, create_index = table.sqlite_ddl()
                db.execute(create_table)
                _migrate(db, table, create_index)
            file = self._identity()
        except (sqlite3.Error, OSError) as exc:
            raise SinkError(f"sqlite {self.path}: cannot open: {exc}") from None
        except InUseError as exc:  # taken while the directory was unusable: waiting cannot help
            raise SinkIncompatible(str(exc)) from None
        self._db, self._file = db, file

    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _check_file(self) -> None:
        """SinkReplaced (the connection closed) when the file at the path is not ours."""
        now = self._identity()
        if now == self._file:
            return
        what = "deleted" if now is None else "replaced"
        if self._db is not None:
            self._db.close()  # checkpoints into the old file and removes its -wal
            self._db = None
        raise SinkReplaced(
            f"sqlite {self.path}: the file was {what} while recording; "
            f"what was written into it before is not in the file at that path; "
            f"writing on into a new file there"
        )

    def write(self, batch: Batch) -> None:
        if self._db is None:
            self.open()
        self._check_file()
        db = self._db
        assert db is not None
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for table, rows in batch:
                    for i in range(0, len(rows), ROWS_PER_STATEMENT):
                        chunk = rows[i : i + ROWS_PER_STATEMENT]
                        sql = (
                            _INSERT[table]
                            if len(chunk) == ROWS_PER_STATEMENT
                            else _insert(BY_NAME[table], len(chunk))
                        )
                        values = [value for row in chunk for value in row]
                        if len(values) != len(chunk) * len(BY_NAME[table].columns):
                            # rows made before columns were added: padded, as the spool does
                            pad = BY_NAME[table].pad
                            values = [value for row in chunk for value in pad(row)]
                        db.execute(sql, values)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except (
            sqlite3.IntegrityError,
            sqlite3.ProgrammingError,
            sqlite3.InterfaceError,
            sqlite3.DataError,
        ) as exc:
            raise SinkRejected(f"sqlite {self.path}: batch refused: {exc}") from None
        except (OverflowError, ValueError, TypeError) as exc:  # a value SQLite cannot bind
            raise SinkRejected(
                f"sqlite {self.path}: batch refused: {type(exc).__name__}: {exc}"
            ) from None
        except sqlite3.Error as exc:
            raise SinkError(f"sqlite {self.path}: write failed: {exc}") from None
        self._check_file()  # gone while writing: not acknowledged, it goes to the new file

    def trade_counts(self, since_ns: int) -> Iterable[tuple[Identity, int]]:
        if self._db is None:
            self.open()
        assert self._db is not None
        try:
            rows = self._db.execute(
                "SELECT code, ts, price, size, side, max(k) + 1 FROM trades WHERE ts >= ? "
                "GROUP BY code, ts, price, size, side",
                (since_ns,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise SinkError(f"sqlite {self.path}: query failed: {exc}") from None
        return [((c, ts, p, s, d), n) for c, ts, p, s, d, n in rows]

    def last_times(self) -> dict[tuple[str, str], int]:
        if self._db is None:
            self.open()
        assert self._db is not None
        out: dict[tuple[str, str], int] = {}
        try:
            for table in MARKET_TABLES:
                for code, ts in self._db.execute(_LAST[table]):
                    out[(code, table)] = ts
        except sqlite3.Error as exc:
            raise SinkError(f"sqlite {self.path}: query failed: {exc}") from None
        return out

    def open_gaps(self) -> list[Row]:
        if self._db is None:
            self.open()
        assert self._db is not None
        try:
            return self._db.execute(_OPEN_GAPS).fetchall()
        except sqlite3.Error as exc:
            raise SinkError(f"sqlite {self.path}: query failed: {exc}") from None

    def volume_anchors(self, codes: Iterable[str]) -> dict[str, tuple[float, int, float]]:
        if self._db is None:
            self.open()
        assert self._db is not None
        out: dict[str, tuple[float, int, float]] = {}
        try:
            for code in codes:
                snap = self._db.execute(
                    "SELECT volume, ts, recv_ts FROM snapshots WHERE code = ? "
                    "ORDER BY ts DESC, recv_ts DESC LIMIT 1",
                    (code,),
                ).fetchone()
                if snap is None:
                    continue
                volume, ts, recv = snap
                (after,) = self._db.execute(
                    "SELECT coalesce(sum(size), 0) FROM trades WHERE code = ? AND "
                    "(ts > ? OR (ts = ? AND source = 'live' AND recv_ts > ?))",
                    (code, ts, ts, recv),
                ).fetchone()
                out[code] = (volume, ts, -after)
        except sqlite3.Error as exc:
            raise SinkError(f"sqlite {self.path}: query failed: {exc}") from None
        return out

    def expire(self, table: str, before_ns: int) -> int:
        if self._db is None:
            self.open()
        db = self._db
        assert db is not None and table in BY_NAME
        try:
            # rowid order is arrival order, so the oldest rows come first and the scan
            # stops after a slice
            deleted = db.execute(
                f"DELETE FROM {table} WHERE rowid IN "
                f"(SELECT rowid FROM {table} WHERE ts < ? LIMIT {EXPIRE_ROWS})",
                (before_ns,),
            ).rowcount
            if deleted:
                db.execute("PRAGMA incremental_vacuum(2000)")
        except sqlite3.Error as exc:
            raise SinkError(f"sqlite {self.path}: retention of {table}: {exc}") from None
        return max(deleted, 0)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._held.release()
