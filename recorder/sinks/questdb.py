"""The QuestDB sink, through the official ``questdb`` client only.

The conf string picks the transport, and the meaning of an acknowledgement follows it:

- ``http``/``https`` (default): ``flush()`` returns when the server accepted the rows and
  raises otherwise; a failed batch is spooled and re-sent.
- ``tcp``/``tcps``: the protocol has no acknowledgement; a flush succeeds once the bytes
  are written to the socket. The recorder warns about it at start-up.
- ``ws``/``wss`` (QWP, newer servers): without ``sf_dir`` the sink waits for the server's
  ACK of the flushed frame; with ``sf_dir`` the client keeps unacknowledged frames on disk
  itself, so a flush is durable at once and the recorder does not spool them again.

At start-up, over HTTP ``/exec``: the server's version is read and one below the minimum
the tables need stops the recorder (:func:`recorder.schema.questdb_minimum`); missing
tables are created with explicit DDL (designated timestamp, day partitions, WAL, dedup
keys) before the first row could auto-create them without dedup keys; tables an earlier
version made gain the columns and keys added since (read from ``table_columns()``). A
statement QuestDB refuses there is final: :class:`SinkIncompatible`, quoting QuestDB's own
``error`` and ``position``, never an endless retry.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

import structlog
from questdb import Sender, TimestampNanos

from ..batching import Batch
from ..exceptions import ConfigError, SinkError, SinkIncompatible, SinkRejected
from ..identity import Identity
from ..schema import BY_NAME, GAPS, MARKET_TABLES, TABLES, Row, Table, questdb_minimum
from ..store.questdb import QueryRefused, QuestDBHttp, default_http, parse_conf
from ..store.quote import At, Name, bind

__all__ = ["QuestDBSink", "parse_conf"]

log = structlog.get_logger()

ACK_TIMEOUT_MS = 30_000
WAL_CHECK_EVERY = 5.0  # seconds between two readings of wal_tables() after writes


def server_version(build: str) -> tuple[int, int, int] | None:
    """``(9, 3, 4)`` from ``build()``'s "Build Information: QuestDB 9.3.4, JDK ...";
    None when it does not say (a build that names no version)."""
    found = re.search(r"QuestDB (\d+)\.(\d+)\.(\d+)", build)
    if found is None:
        return None
    major, minor, patch = (int(g) for g in found.groups())
    return major, minor, patch


class QuestDBSink:
    name = "questdb"

    def __init__(self, conf: str, http: str | None = None, timeout: float = 10.0) -> None:
        self.conf = conf
        self.schema, self.params = parse_conf(conf)
        if "auto_flush" in self.params:
            raise ConfigError("sink.questdb: leave auto_flush out; the recorder flushes by itself")
        if "addr" not in self.params:
            raise ConfigError("sink.questdb: the conf string needs addr=host:port")
        self.store_and_forward = self.schema in ("ws", "wss") and "sf_dir" in self.params
        self.http = QuestDBHttp(
            http or default_http(self.schema, self.params), self.params, self.schema, timeout
        )
        self.exec_url = self.http.base + "/exec"
        self.timeout = timeout
        self._sender: Any = None
        self._ready = False
        self.version: tuple[int, int, int] | None = None
        #: the recorder's tables whose WAL QuestDB suspended: table -> its errorTag and
        #: errorMessage. Rows sent to them are acknowledged but not applied until an
        #: operator resumes the WAL, so the status reports them while it lasts.
        self.suspended: dict[str, str] = {}
        self._wal_checked = 0.0
        self._plan = {t.name: self._columns(t.name) for t in TABLES}

    @staticmethod
    def _columns(table: str) -> tuple[list[tuple[int, str]], list[tuple[int, str, bool]]]:
        symbols, columns = [], []
        for i, (name, kind) in enumerate(BY_NAME[table].columns):
            if kind == "sym":
                symbols.append((i, name))
            elif kind != "ts":
                columns.append((i, name, kind == "time"))
        return symbols, columns

    @property
    def no_ack(self) -> bool:
        """True for ILP over TCP, which never reports whether the server took the rows."""
        return self.schema in ("tcp", "tcps")

    def open(self) -> None:
        if not self._ready:
            self._check_version()
            for table in TABLES:
                self._ensure(table)
            self._ready = True
        if self._sender is None:
            try:
                sender = Sender.from_conf(self.conf, auto_flush=False)
                sender.establish()  # type: ignore[no-untyped-call]
            except Exception as exc:  # the client raises IngressError/QuestDBError subclasses
                raise SinkError(f"questdb: cannot connect: {exc}") from None
            self._sender = sender

    def _check_version(self) -> None:
        rows = self.execute("SELECT build()").get("dataset") or [[""]]
        self.version = server_version(str(rows[0][0]))
        need, feature = questdb_minimum()
        if self.version is not None and self.version < need:
            raise SinkIncompatible(
                f"questdb at {self.exec_url}: version {_dotted(self.version)} is below "
                f"{_dotted(need)}, the oldest the recorder supports ({feature} need it)"
            )

    def _ensure(self, table: Table) -> None:
        """Create the table, or bring one an earlier version made up to date."""
        try:
            self.execute(table.questdb_ddl())
            found = {
                name: (str(kind), bool(key))
                for name, kind, key in self.execute(
                    bind('SELECT "column", type, upsertKey FROM table_columns({})', table.name)
                ).get("dataset", [])
            }
            if not found:  # a server that does not list columns: nothing to compare
                return
            if mismatch := table.questdb_mismatch(found):
                raise SinkIncompatible(f"questdb at {self.exec_url}: {mismatch}")
            for statement in table.questdb_migrations(found):
                self.execute(statement)
        except QueryRefused as exc:  # the same statement would be refused again, for ever
            raise SinkIncompatible(f"questdb at {self.exec_url}: {exc}") from None

    def execute(self, sql: str) -> dict[str, Any]:
        """Run one statement over HTTP ``/exec``; SinkError when it fails."""
        return self.http.execute(sql)

    def write(self, batch: Batch) -> None:
        if self._sender is None or not self._ready:
            self.open()
        sender = self._sender
        try:
            for table, rows in batch:
                symbols_of, columns_of = self._plan[table]
                spec = BY_NAME[table]
                width = len(spec.columns)
                for row in rows:
                    if len(row) < width:  # made before columns were added: padded
                        row = spec.pad(row)
                    sender.row(
                        table,
                        symbols={name: row[i] for i, name in symbols_of},
                        columns={
                            name: (TimestampNanos(row[i]) if is_time else row[i])
                            for i, name, is_time in columns_of
                            if row[i] is not None
                        },
                        at=TimestampNanos(row[0]),
                    )
            if self.schema in ("ws", "wss") and not self.store_and_forward:
                fsn = sender.flush_and_get_fsn()
                if fsn is not None and not sender.await_acked_fsn(fsn, ACK_TIMEOUT_MS):
                    raise SinkError("questdb: no ACK for the flushed frame in time")
            else:
                sender.flush()
            self._check_wal()
        except SinkError:
            self._reset()
            raise
        except Exception as exc:  # IngressError, QuestDBError: the batch was not acknowledged
            self._reset()
            if _refused(exc):
                raise SinkRejected(f"questdb: batch refused: {_one_line(exc)}") from None
            raise SinkError(f"questdb: flush failed: {_one_line(exc)}") from None

    def _check_wal(self, force: bool = False) -> None:
        """Read ``wal_tables()`` (at most every :data:`WAL_CHECK_EVERY` seconds) for the
        recorder's tables QuestDB suspended; a change is logged once."""
        now = time.monotonic()
        if not force and now - self._wal_checked < WAL_CHECK_EVERY:
            return
        self._wal_checked = now
        try:
            rows = self.http.dataset(
                "SELECT name, suspended, errorTag, errorMessage FROM wal_tables()"
            )
        except SinkError as exc:  # the rows are acknowledged; the next check will tell
            log.warning("wal_tables_unread", error=str(exc))
            return
        names = {t.name for t in TABLES}
        found = {
            str(name): f"{tag}: {message}".strip(": ") or "suspended"
            for name, suspended, tag, message in rows
            if suspended and name in names
        }
        for table in found.keys() - self.suspended.keys():
            log.error(
                "questdb_wal_suspended",
                table=table,
                error=found[table],
                fix=f"ALTER TABLE {table} RESUME WAL once the cause is fixed",
            )
        for table in self.suspended.keys() - found.keys():
            log.info("questdb_wal_resumed", table=table)
        self.suspended = found

    def _reset(self) -> None:
        # A failed flush may leave rows in the client's buffer or a broken connection; start
        # over with a fresh sender so the spooled batch is the only copy that gets re-sent.
        sender, self._sender = self._sender, None
        if sender is not None:
            try:
                sender.close(flush=False)
            except Exception as exc:  # closing a broken sender: nothing left to save
                del exc

    def trade_counts(self, since_ns: int) -> Iterable[tuple[Identity, int]]:
        body = self.execute(
            bind(
                "SELECT code, cast(ts AS LONG) t, price, size, side, max(k) + 1 n FROM trades "
                "WHERE ts >= {}",
                At(since_ns),
            )
        )
        return [((c, t * 1000, p, s, d), n) for c, t, p, s, d, n in body.get("dataset", [])]

    def last_times(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for table in MARKET_TABLES:
            body = self.execute(bind("SELECT code, cast(max(ts) AS LONG) FROM {}", Name(table)))
            for code, micros in body.get("dataset", []):
                if micros is not None:
                    out[(code, table)] = int(micros) * 1000
        return out

    def open_gaps(self) -> list[Row]:
        cols = ", ".join(
            f"cast({name} AS LONG)" if kind in ("ts", "time") else name
            for name, kind in GAPS.columns
        )
        body = self.execute(f"SELECT {cols} FROM gaps WHERE status = 'open'")
        times = {i for i, (_, kind) in enumerate(GAPS.columns) if kind in ("ts", "time")}
        return [
            tuple(v * 1000 if i in times and v is not None else v for i, v in enumerate(row))
            for row in body.get("dataset", [])
        ]

    def volume_anchors(self, codes: Iterable[str]) -> dict[str, tuple[float, int, float]]:
        out: dict[str, tuple[float, int, float]] = {}
        for code in codes:
            snap = self.execute(anchor_sql(code)).get("dataset", [])
            if not snap:
                continue
            volume, micros, recv = snap[0]
            after = self.execute(after_sql(code, micros, recv)).get("dataset", [[None]])
            out[code] = (volume, micros * 1000, -(after[0][0] or 0.0))
        return out

    def expire(self, table: str, before_ns: int) -> int:
        # whole day partitions go at once; the next call finds nothing more to drop
        self.execute(drop_partitions_sql(table, before_ns))
        return 0

    def claim(self) -> None:
        """Nothing to hold: the server keeps its own consistency."""

    def close(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.close(flush=False)


def drop_partitions_sql(table: str, before_ns: int) -> str:
    """Retention: the day partitions of ``table`` wholly before ``before_ns``."""
    return bind("ALTER TABLE {} DROP PARTITION WHERE ts < {};", Name(table), At(before_ns))


def anchor_sql(code: str) -> str:
    """The newest snapshot of ``code``."""
    return bind(
        "SELECT volume, cast(ts AS LONG), recv_ts FROM snapshots "
        "WHERE code = {} ORDER BY ts DESC, recv_ts DESC LIMIT 1",
        code,
    )


def after_sql(code: str, micros: int, recv_ts: int) -> str:
    """The volume of the live trades of ``code`` stored after a snapshot."""
    at = At(int(micros) * 1000)
    return bind(
        "SELECT sum(size) FROM trades WHERE code = {} AND (ts > {} OR "
        "(ts = {} AND source = 'live' AND recv_ts > {}))",
        code,
        at,
        at,
        int(recv_ts),
    )


#: Client-side errors about the data itself: sending the batch again cannot help.
_DATA_ERRORS = frozenset(
    {"InvalidName", "InvalidTimestamp", "InvalidUtf8", "BadDataFrame", "ArrayError", "DecimalError"}
)


def _refused(exc: BaseException) -> bool:
    """Whether the server or the client refused the data itself (QuestDB answers bad rows
    with HTTP 400 and the error code ``invalid``), rather than being unreachable."""
    code = getattr(getattr(exc, "code", None), "name", "")
    if code in _DATA_ERRORS:
        return True
    # the client's summary (``[code: invalid]``) or, from a real server, its JSON body
    text = str(exc).replace(" ", "")
    return code == "ServerFlushError" and ("[code:invalid]" in text or '"code":"invalid"' in text)


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500]
