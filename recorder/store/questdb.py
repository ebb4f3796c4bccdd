"""Reading QuestDB over HTTP: ``/exec`` (JSON) for small answers, ``/exp`` (CSV, streamed)
for ranges of rows, so a long range is never held whole.

Every value in a statement goes through :func:`recorder.store.quote.bind`. QuestDB's
``TIMESTAMP`` counts microseconds; the statements read times as ``cast(... AS LONG)`` and
this module turns them into nanoseconds, in one place (:data:`NS_PER_UNIT`).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from typing import IO, Any

from ..exceptions import ConfigError, SinkError
from ..protocol import NS
from ..schema import BY_NAME, GAPS, Row
from .base import BATCH_ROWS, code_order, overlaps, time_order
from .quote import At, Name, Value, bind

NS_PER_UNIT = 1000  # a QuestDB TIMESTAMP is in microseconds
#: rows a page of :meth:`QuestDBReader.rows` holds; its answer is read whole, so a reader
#: keeps no connection open between pages
PAGE_ROWS = 20_000


class QueryRefused(SinkError):
    """QuestDB answered a statement with an error of its own (a JSON body with ``error``
    and ``position``): the statement, not the connection, is at fault."""

    def __init__(self, query: str, error: str, position: object) -> None:
        head = " ".join(query.split())
        head = head if len(head) <= 80 else head[:77] + "..."
        super().__init__(f"QuestDB refused {head!r}: {error} (position {position})")
        self.error = error
        self.position = position


def parse_conf(conf: str) -> tuple[str, dict[str, str]]:
    """Split ``schema::key=value;...`` (``;;`` is a literal semicolon)."""
    schema, sep, rest = conf.partition("::")
    if not sep or not schema:
        raise ConfigError(f"sink.questdb: {conf.split(';')[0]!r} is not a client conf string")
    params: dict[str, str] = {}
    for part in rest.replace(";;", "\0").split(";"):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        if not eq:
            raise ConfigError(f"sink.questdb: {key.strip()!r} has no value")
        params[key.strip()] = value.replace("\0", ";")
    return schema, params


def default_http(schema: str, params: dict[str, str]) -> str:
    """The HTTP address of the server a conf string sends ILP to (ILP over TCP: port 9000)."""
    host, _, port = params["addr"].split(",")[0].rpartition(":")
    secure = schema in ("https", "wss", "tcps")
    if schema in ("tcp", "tcps"):
        port = "9000"
    return f"{'https' if secure else 'http'}://{host}:{port}"


class QuestDBHttp:
    """QuestDB's HTTP endpoints at ``base`` (``http://host:9000``), with the conf string's
    credentials and TLS choice."""

    def __init__(
        self,
        base: str,
        params: dict[str, str] | None = None,
        schema: str = "http",
        timeout: float = 30.0,
    ) -> None:
        self.base = base.rstrip("/")
        self.params = params or {}
        self.schema = schema
        self.timeout = timeout

    def _request(self, endpoint: str, sql: str) -> urllib.request.Request:
        request = urllib.request.Request(
            f"{self.base}/{endpoint}?{urllib.parse.urlencode({'query': sql})}"
        )
        user, password, token = (self.params.get(k) for k in ("username", "password", "token"))
        if user and password:
            basic = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {basic}")
        elif token and self.schema in ("http", "https", "ws", "wss"):
            request.add_header("Authorization", f"Bearer {token}")
        return request

    def _open(self, endpoint: str, sql: str, timeout: float | None = None) -> IO[bytes]:
        context = None
        if self.params.get("tls_verify") == "unsafe_off":
            context = ssl._create_unverified_context()
        try:
            resp: IO[bytes] = urllib.request.urlopen(
                self._request(endpoint, sql), timeout=timeout or self.timeout, context=context
            )
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if exc.code == 400 and isinstance(body, dict) and "error" in body:
                raise QueryRefused(sql, str(body["error"]), body.get("position")) from None
            detail = " ".join(raw[:300].decode(errors="replace").split())
            raise SinkError(f"questdb /{endpoint}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise SinkError(f"questdb /{endpoint} at {self.base}: {exc}") from None
        return resp

    def execute(self, sql: str) -> dict[str, Any]:
        """Run one statement over ``/exec``; :class:`QueryRefused` when QuestDB says the
        statement is wrong, SinkError when the server cannot be reached or fails."""
        try:
            with self._open("exec", sql) as resp:
                body: dict[str, Any] = json.loads(resp.read())
        except (OSError, ValueError) as exc:
            raise SinkError(f"questdb /exec at {self.base}: {exc}") from None
        if "error" in body:
            raise QueryRefused(sql, str(body["error"]), body.get("position"))
        return body

    def dataset(self, sql: str) -> list[list[Any]]:
        rows: list[list[Any]] = self.execute(sql).get("dataset", [])
        return rows

    def export(self, sql: str) -> IO[bytes]:
        """The CSV answer of ``/exp`` as a stream (header line first). A long range may
        take the server a while to start: the timeout is ten times that of ``/exec``."""
        return self._open("exp", sql, self.timeout * 10)


def select_list(table: str) -> str:
    """The columns of ``table``, times as integers (names from the schema only)."""
    return ", ".join(
        f"cast({n} AS LONG) {n}" if k in ("ts", "time") else n for n, k in BY_NAME[table].columns
    )


def _in(codes: Sequence[str]) -> str:
    return " AND code IN (" + ", ".join("{}" for _ in codes) + ")" if codes else ""


def _select(table: str, where: str, order: Sequence[str], *values: Value) -> str:
    template = f"SELECT {select_list(table)} FROM {{}} WHERE {where} ORDER BY {', '.join(order)}"
    return bind(template, Name(table), *values)


# The statements the reader sends, one function each (tests check them with QuestDB's
# grammar and the real server).


def codes_sql(table: str) -> str:
    return bind("SELECT DISTINCT code FROM {} ORDER BY code", Name(table))


def kline_types_sql(code: str) -> str:
    return bind("SELECT DISTINCT kt FROM klines WHERE code = {} ORDER BY kt", code)


def rows_sql(
    table: str,
    start: int,
    end: int,
    codes: Sequence[str] = (),
    kt: int | None = None,
    order: Sequence[str] | None = None,
    limit: int | None = None,
) -> str:
    """The rows of a range (of some codes, of one bar type), by default in time order;
    the first ``limit`` of them when given."""
    where = "ts >= {} AND ts < {}" + _in(codes) + ("" if kt is None else " AND kt = {}")
    extra: tuple[Value, ...] = () if kt is None else (kt,)
    sql = _select(table, where, order or time_order(table), At(start), At(end), *codes, *extra)
    return sql if limit is None else sql + bind(" LIMIT {}", limit)


def count_sql(table: str, code: str, start: int, end: int) -> str:
    return bind(
        "SELECT count() FROM {} WHERE code = {} AND ts >= {} AND ts < {}",
        Name(table),
        code,
        At(start),
        At(end),
    )


def minutes_sql(table: str, code: str, start: int, end: int) -> str:
    return bind(
        "SELECT DISTINCT (cast(ts AS LONG) - {}) / {} FROM {} "
        "WHERE code = {} AND ts >= {} AND ts < {}",
        start // NS_PER_UNIT,
        60 * NS // NS_PER_UNIT,
        Name(table),
        code,
        At(start),
        At(end),
    )


def gaps_sql(start: int, end: int, overlapping: bool) -> str:
    if overlapping:
        where = "ts < {} AND (end_ts IS NULL OR end_ts >= {})"
        return _select(GAPS.name, where, ("ts", "code"), At(end), At(start))
    return _select(GAPS.name, "ts >= {} AND ts < {}", ("ts", "code"), At(start), At(end))


def statements() -> list[str]:
    """One of each statement the reader sends, for checks of the SQL."""
    day = 1_795_618_800 * NS
    return [
        codes_sql("trades"),
        kline_types_sql("US:AAPL"),
        rows_sql("trades", day, day + 3600 * NS),
        rows_sql("depth", day, day + 3600 * NS, ["US:AAPL", "HK:700"]),
        rows_sql("klines", day, day + 3600 * NS, ["US:AAPL"], 1001),
        rows_sql("trades", day, day + 3600 * NS, ["US:AAPL"], limit=PAGE_ROWS),
        rows_sql("snapshots", day, day + 3600 * NS, order=code_order("snapshots")),
        count_sql("depth", "HK:700", day, day + 86400 * NS),
        minutes_sql("trades", "US:AAPL", day, day + 86400 * NS),
        gaps_sql(day, day + 86400 * NS, True),
        gaps_sql(day, day + 86400 * NS, False),
    ]


class QuestDBReader:
    def __init__(self, http: QuestDBHttp, page_rows: int = PAGE_ROWS) -> None:
        self.http = http
        self.page_rows = page_rows
        self.source = http.base
        self._times = {
            t: [i for i, (_, k) in enumerate(BY_NAME[t].columns) if k in ("ts", "time")]
            for t in BY_NAME
        }

    def _row(self, table: str, values: Sequence[Any]) -> Row:
        row = list(values)
        for i in self._times[table]:
            if row[i] is not None:
                row[i] = int(row[i]) * NS_PER_UNIT
        return tuple(row)

    def codes(self, table: str) -> list[str]:
        try:
            return [str(c) for (c,) in self.http.dataset(codes_sql(table))]
        except QueryRefused as exc:
            if _absent(exc):  # a server an earlier version wrote: no such rows
                return []
            raise

    def kline_types(self, code: str) -> list[int]:
        return [int(kt) for (kt,) in self.http.dataset(kline_types_sql(code))]

    def rows(
        self, table: str, start: int, end: int, codes: Sequence[str] = (), kt: int | None = None
    ) -> Iterator[Row]:
        """In pages read whole, each from the time the last one ended: a replay merges
        several tables at once, and QuestDB serves few ``/exp`` streams at a time (two on a
        two-core server: ``http.export.connection.limit``), so none is held open."""
        cursor = start
        while cursor < end:
            page = self._page(table, rows_sql(table, cursor, end, codes, kt, limit=self.page_rows))
            if len(page) < self.page_rows:
                yield from page
                return
            last = page[-1][0]
            if page[0][0] == last:  # one time fills the page: that time's rows whole
                cursor = last + NS_PER_UNIT
                yield from self._page(table, rows_sql(table, last, cursor, codes, kt))
            else:  # the last time's rows may go on past the page: read again from there
                yield from (row for row in page if row[0] != last)
                cursor = last

    def _page(self, table: str, sql: str) -> list[Row]:
        """The rows of ``sql``, read whole; none where the server has no such table."""
        try:
            return list(self._stream(table, sql))
        except QueryRefused as exc:
            if _absent(exc):
                return []
            raise

    def _stream(self, table: str, sql: str) -> Iterator[Row]:
        kinds = [k for _, k in BY_NAME[table].columns]
        with self.http.export(sql) as resp:
            # /exp escapes a backslash as two, and a quote by doubling it (9.x) or with a
            # backslash (8.x): both read right with both options
            text = io.TextIOWrapper(resp, encoding="utf-8")
            reader = csv.reader(text, escapechar="\\", doublequote=True)
            next(reader, None)  # header
            for fields in reader:
                yield self._row(table, [_value(v, k) for v, k in zip(fields, kinds, strict=True)])

    def count(self, table: str, code: str, start: int, end: int) -> int:
        rows = self.http.dataset(count_sql(table, code, start, end))
        return int(rows[0][0]) if rows else 0

    def minutes(self, table: str, code: str, start: int, end: int) -> list[int]:
        return [int(m) for (m,) in self.http.dataset(minutes_sql(table, code, start, end))]

    def gaps(self, start: int, end: int, overlapping: bool = False) -> list[Row]:
        found = self.http.dataset(gaps_sql(start, end, overlapping))
        rows = [self._row(GAPS.name, r) for r in found]
        # the database compares in microseconds; keep the nanosecond bounds exact
        if overlapping:
            return [r for r in rows if overlaps(r, start, end)]
        return [r for r in rows if start <= r[0] < end]

    def batches(
        self, table: str, start: int, end: int, codes: Sequence[str] = (), size: int = BATCH_ROWS
    ) -> Iterator[Any]:
        from .arrow import is_time, pyarrow, schema

        pa = pyarrow()
        import pyarrow.csv as pacsv

        spec = BY_NAME[table]
        want = schema(table)
        types = {
            n: pa.int64() if is_time(n, k) else _csv_type(want.field(n).type, pa)
            for n, k in spec.columns
        }
        options = pacsv.ConvertOptions(
            column_types=types, strings_can_be_null=True, null_values=[""]
        )
        read = pacsv.ReadOptions(block_size=1 << 22)
        # one query per code, in code order: each is a filtered scan of a table stored in
        # time order, where one ORDER BY code over millions of rows has the server sort them
        # all before it sends the first byte
        for code in sorted(codes) if codes else self.codes(table):
            sql = rows_sql(table, start, end, [code], order=code_order(table))
            yield from self._arrow(sql, table, want, types, options, read, size)

    def _arrow(
        self, sql: str, table: str, want: Any, types: Any, options: Any, read: Any, size: int
    ) -> Iterator[Any]:
        from .arrow import pyarrow

        pa = pyarrow()
        import pyarrow.compute as pc
        import pyarrow.csv as pacsv

        spec = BY_NAME[table]
        with self.http.export(sql) as resp:
            try:
                stream = pacsv.open_csv(
                    resp,
                    read_options=read,
                    parse_options=pacsv.ParseOptions(escape_char="\\", double_quote=True),
                    convert_options=options,
                )
            except pa.ArrowInvalid as exc:
                if "Empty CSV" in str(exc):
                    return
                raise SinkError(f"questdb /exp at {self.http.base}: {exc}") from None
            for batch in stream:
                arrays = []
                for field, (name, kind) in zip(want, spec.columns, strict=True):
                    column = batch.column(name)
                    if kind in ("ts", "time"):
                        column = pc.multiply(column, NS_PER_UNIT)
                    arrays.append(column.cast(field.type))
                whole = pa.RecordBatch.from_arrays(arrays, schema=want)
                for offset in range(0, whole.num_rows, size):
                    yield whole.slice(offset, size)

    def close(self) -> None:
        pass


def _absent(exc: QueryRefused) -> bool:
    """Whether QuestDB refused a statement for naming a table it does not have (8.x and
    9.x say so alike)."""
    return exc.error.startswith("table does not exist")


def _csv_type(arrow_type: Any, pa: Any) -> Any:
    return pa.string() if pa.types.is_dictionary(arrow_type) else arrow_type


def _value(text: str, kind: str) -> Any:
    if text == "":
        return None
    if kind in ("ts", "time", "int", "long"):
        return int(text)
    if kind == "f64":
        return float(text)
    return text
