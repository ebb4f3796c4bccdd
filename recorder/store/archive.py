"""Reading the Parquet day archive that ``qos-recorder export`` writes.

Layout, under a local folder or any fsspec URL (``s3://bucket/prefix``)::

    <table>/date=YYYY-MM-DD/part-<export id>.parquet   zstd, sorted by code then time
    _manifest/date=YYYY-MM-DD.json                     the day's ledger (see archive.py)

The manifest is written last and names the files of its export, so this reader sees a
re-exported day either whole before or whole after (files not named by a manifest are
ignored: an export in progress, or an older one not yet deleted). A day without a
manifest is not in the archive.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import Any

from ..exceptions import ConfigError, SinkError
from ..protocol import NS
from ..schema import BY_NAME, GAPS, KLINES, Row
from .arrow import conform, pyarrow, sort, to_rows
from .base import BATCH_ROWS, CHUNK, overlaps, time_order

DAY = 86400 * NS
MANIFESTS = "_manifest"
#: bytes of a day's asked rows that replay may hold in Arrow to sort them at once
SORT_BUDGET = 512 << 20


def row_bytes(table: str) -> int:
    """A rough size of one row in Arrow memory: 8 bytes a number or time, 64 a text."""
    return sum(64 if kind == "text" else 8 for _, kind in BY_NAME[table].columns)


def day_of(ns: int) -> dt.date:
    return dt.datetime.fromtimestamp(ns // NS, dt.UTC).date()


def day_start(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * NS


def manifest_path(day: dt.date) -> str:
    return f"{MANIFESTS}/date={day.isoformat()}.json"


def storage_errors() -> tuple[type[BaseException], ...]:
    """What reading or writing the archive raises when the storage fails: OSError from
    fsspec, and an object store client's own errors (botocore's missing credentials or
    unreachable endpoint are not OSErrors), which become one line, not a traceback."""
    errors: tuple[type[BaseException], ...] = (OSError,)
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return errors
    return (*errors, BotoCoreError, ClientError)


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem and root path of an archive URL or folder."""
    try:
        import fsspec
    except ImportError:
        raise ConfigError(
            "fsspec is not installed: pip install 'qos-recorder[data]' for the archive"
        ) from None
    try:
        fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    except (ImportError, ValueError) as exc:  # an unknown protocol, s3fs missing for s3://
        raise ConfigError(f"{url}: {exc}") from None
    return fs, str(root).rstrip("/")


class ArchiveReader:
    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        sort_budget: int = SORT_BUDGET,
    ) -> None:
        self.source = url
        self.sort_budget = sort_budget
        self.fs, self.root = filesystem(url, storage_options)
        pa = pyarrow()
        self._pa = pa
        try:
            listed = self.fs.ls(f"{self.root}/{MANIFESTS}", detail=False)
        except FileNotFoundError:
            raise ConfigError(
                f"{url}: not an archive (no {MANIFESTS}/ folder; write one with qos-recorder "
                "export)"
            ) from None
        except storage_errors() as exc:
            raise SinkError(f"archive {url}: {describe(exc)}") from None
        self.days: dict[dt.date, str] = {}
        self._manifests: dict[dt.date, dict[str, Any]] = {}
        self._arrow_fs: Any = None
        self._list(listed)

    def _list(self, listed: list[Any]) -> None:
        self.days.clear()
        self._manifests.clear()
        for path in listed:
            name = str(path).rsplit("/", 1)[-1]
            if name.startswith("date=") and name.endswith(".json"):
                self.days[dt.date.fromisoformat(name[5:15])] = str(path)

    def refresh(self) -> None:
        """Read the list of days and their manifests again (after an export)."""
        try:
            self.fs.invalidate_cache()
            self._list(self.fs.ls(f"{self.root}/{MANIFESTS}", detail=False))
        except storage_errors() as exc:
            raise SinkError(f"archive {self.source}: {describe(exc)}") from None

    def manifest(self, day: dt.date) -> dict[str, Any]:
        """The manifest of ``day``; ConfigError when the archive does not hold that day."""
        if day not in self.days:
            raise ConfigError(f"{self.source}: {day} is not in the archive")
        if day not in self._manifests:
            failures: tuple[type[BaseException], ...] = (*storage_errors(), ValueError)
            try:
                with self.fs.open(self.days[day], "rb") as f:
                    self._manifests[day] = json.loads(f.read())
            except failures as exc:
                raise SinkError(
                    f"archive {self.source}: {self.days[day]}: {describe(exc)}"
                ) from None
        return self._manifests[day]

    def _in(self, start: int, end: int) -> list[dt.date]:
        first, last = day_of(start), day_of(end - 1)
        return sorted(d for d in self.days if first <= d <= last)

    def files(self, table: str, day: dt.date) -> list[str]:
        entry = self.manifest(day)["tables"].get(table)
        return [f"{self.root}/{name}" for name in entry["files"]] if entry else []

    def _dataset(self, paths: list[str]) -> Any:
        import pyarrow.dataset as ds

        if self._arrow_fs is None:
            if type(self.fs).__name__ == "LocalFileSystem":
                import pyarrow.fs as pafs

                self._arrow_fs = pafs.LocalFileSystem()
            else:
                import pyarrow.fs as pafs

                self._arrow_fs = pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))
        return ds.dataset(paths, format="parquet", filesystem=self._arrow_fs)

    def _filter(self, start: int, end: int, codes: Sequence[str], kt: int | None = None) -> Any:
        import pyarrow.compute as pc

        pa = self._pa
        ts = pa.timestamp("ns", tz="UTC")
        expr = (pc.field("ts") >= pa.scalar(start, ts)) & (pc.field("ts") < pa.scalar(end, ts))
        if codes:
            expr = expr & pc.field("code").isin(list(codes))
        if kt is not None:
            expr = expr & (pc.field("kt") == kt)
        return expr

    def _batches(
        self,
        table: str,
        start: int,
        end: int,
        codes: Sequence[str],
        size: int,
        kt: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> Iterator[tuple[dt.date, Any]]:
        for day in self._in(start, end):
            for batch in self._scan(table, day, start, end, codes, size, kt, columns):
                yield day, batch

    def _scan(
        self,
        table: str,
        day: dt.date,
        start: int,
        end: int,
        codes: Sequence[str],
        size: int,
        kt: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> Iterator[Any]:
        """One day's batches of the rows asked for, in the file's order (code, then time)."""
        paths = self.files(table, day)
        if not paths:
            return
        failures = (*storage_errors(), self._pa.ArrowException)
        try:
            scan = self._dataset(paths).to_batches(
                columns=list(columns) if columns else None,
                filter=self._filter(start, end, codes, kt),
                batch_size=size,
                use_threads=False,  # keeps the file's order
            )
            for batch in scan:
                if batch.num_rows:
                    yield batch
        except failures as exc:
            raise SinkError(f"archive {self.source}: {table} {day}: {describe(exc)}") from None

    def codes(self, table: str) -> list[str]:
        found: set[str] = set()
        for day in self.days:
            entry = self.manifest(day)["tables"].get(table)
            found.update(entry["codes"] if entry else ())
        return sorted(found)

    def kline_types(self, code: str) -> list[int]:
        found: set[int] = set()
        for day in self.days:
            entry = self.manifest(day)["tables"].get(KLINES.name)
            if not entry or code not in entry["codes"]:  # the manifest says: no bar here
                continue
            for path in self.files(KLINES.name, day):
                data = self._dataset([path]).to_table(
                    columns=["kt"], filter=self._pc_field("code").isin([code])
                )
                found.update(data.column("kt").to_pylist())
        return sorted(found)

    def _pc_field(self, name: str) -> Any:
        import pyarrow.compute as pc

        return pc.field(name)

    def rows(
        self, table: str, start: int, end: int, codes: Sequence[str] = (), kt: int | None = None
    ) -> Iterator[Row]:
        # A day's file is sorted by code, then time. A day whose asked rows fit the memory
        # budget is read whole and sorted in Arrow (fast); a bigger one is read as one
        # time-ordered run per code (row groups outside it skipped by their statistics),
        # merged across codes as the SQLite reader merges its cursors: a chunk per code in
        # memory, at about half the speed.
        names = BY_NAME[table].names
        key = itemgetter(*(names.index(c) for c in time_order(table)))
        for day in self._in(start, end):
            entry = self.manifest(day)["tables"].get(table)
            if not entry:
                continue
            held = entry["codes"]
            wanted = [c for c in codes if c in held] if codes else sorted(held)
            if sum(held[c] for c in wanted) * row_bytes(table) <= self.sort_budget:
                batches = list(self._scan(table, day, start, end, codes, BATCH_ROWS, kt))
                if batches:
                    data = conform(table, self._pa.Table.from_batches(batches))
                    for batch in sort(data, time_order(table)).to_batches(CHUNK * 8):
                        yield from to_rows(table, batch)
                continue
            cursors = [self._code_rows(table, day, c, start, end, kt) for c in wanted]
            yield from cursors[0] if len(cursors) == 1 else heapq.merge(*cursors, key=key)

    def _code_rows(
        self, table: str, day: dt.date, code: str, start: int, end: int, kt: int | None
    ) -> Iterator[Row]:
        for batch in self._scan(table, day, start, end, [code], CHUNK * 4, kt):
            yield from to_rows(table, batch)

    def count(self, table: str, code: str, start: int, end: int) -> int:
        if start == day_start(day_of(start)) and end - start == DAY and day_of(start) in self.days:
            entry = self.manifest(day_of(start))["tables"].get(table)
            return int(entry["codes"].get(code, 0)) if entry else 0
        return sum(
            b.num_rows
            for _, b in self._batches(table, start, end, [code], BATCH_ROWS, None, ["ts"])
        )

    def minutes(self, table: str, code: str, start: int, end: int) -> list[int]:
        import pyarrow.compute as pc

        found: set[int] = set()
        for _, batch in self._batches(table, start, end, [code], BATCH_ROWS, None, ["ts"]):
            ns = batch.column("ts").cast(self._pa.int64())
            minute = pc.divide(pc.subtract(ns, start), 60 * NS)
            found.update(pc.unique(minute).to_pylist())
        return sorted(found)

    def _all(self, table: str, up_to: int | None = None) -> list[Row]:
        rows: list[Row] = []
        for day in sorted(self.days):
            if up_to is not None and day_start(day) >= up_to:
                break
            paths = self.files(table, day)
            if paths:
                rows += to_rows(table, conform(table, self._dataset(paths).to_table()))
        return rows

    def gaps(self, start: int, end: int, overlapping: bool = False) -> list[Row]:
        # a gap that spans days is in the file of each day it touches: the latest day's
        # copy holds its latest state
        latest = {(r[0], r[2], r[4], r[5]): r for r in self._all(GAPS.name, up_to=end)}
        rows = list(latest.values())
        if overlapping:
            rows = [r for r in rows if overlaps(r, start, end)]
        else:
            rows = [r for r in rows if start <= r[0] < end]
        return sorted(rows, key=lambda r: (r[0], r[2]))

    def batches(
        self, table: str, start: int, end: int, codes: Sequence[str] = (), size: int = BATCH_ROWS
    ) -> Iterator[Any]:
        if table not in BY_NAME:
            raise ConfigError(f"{table!r} is not a table")
        for _, batch in self._batches(table, start, end, codes, size):
            yield batch

    def close(self) -> None:
        pass


def describe(exc: BaseException) -> str:
    """An error of the storage in one line, naming its kind when the text alone is vague."""
    text = " ".join(str(exc).split())[:300]
    return text if isinstance(exc, OSError) and text else f"{type(exc).__name__}: {text}"
