"""``qos-recorder export``: days of the recording into a Parquet archive that carries its
own ledger.

Layout under ``DEST`` (a folder or an fsspec URL such as ``s3://bucket/ticks``)::

    <table>/date=YYYY-MM-DD/part-<export id>.parquet    zstd, sorted by code then time
    _manifest/date=YYYY-MM-DD.json                      the day's manifest

pyarrow datasets, ``polars.scan_parquet``, DuckDB and Spark read the table folders as
they are (hive partitioning on ``date``). The manifest says what the day holds and what
it lacks: rows per table and code, the gaps that touch the day (status, lost volume),
whether it was exported while still being recorded (``partial``), and ``complete``: not
partial and every gap filled.

A re-export writes new files beside the old ones, then the manifest naming them (one
atomic write: a rename on a local disk, one PUT on an object store), then deletes the old
files: the archive reader (:mod:`recorder.store.archive`) sees the day whole before or
whole after. A tool globbing the folders can briefly see both during a re-export.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .exceptions import ConfigError, SinkError
from .gaps import GapStatus
from .protocol import NS
from .schema import BY_NAME, GAPS, TABLES
from .store import Reader, code_order, open_source
from .store.archive import (
    DAY,
    MANIFESTS,
    ArchiveReader,
    day_of,
    day_start,
    describe,
    filesystem,
    manifest_path,
    storage_errors,
)
from .store.arrow import pyarrow, schema

if TYPE_CHECKING:
    from .config import Config

#: rows per record batch read from the source and per Parquet row group
EXPORT_BATCH = 131_072
FORMAT = 1


@dataclass
class DayExport:
    """What one day's export wrote."""

    day: dt.date
    rows: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    partial: bool = False
    complete: bool = False


def days_in(start: int, end: int) -> list[dt.date]:
    """The UTC days that ``[start, end)`` touches."""
    first, last = day_of(start), day_of(end - 1)
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def export(
    source: str | Path | Reader,
    start: int,
    end: int,
    dest: str,
    partial: bool = False,
    storage_options: dict[str, Any] | None = None,
    clock: Callable[[], float] = time.time,
) -> list[DayExport]:
    """Export every UTC day ``[start, end)`` touches from ``source`` into the archive at
    ``dest``. A day that has not ended yet needs ``partial``."""
    if end <= start:
        raise ConfigError("--to must be after --from")
    reader = source if not isinstance(source, str | Path) else open_source(source)
    days = days_in(start, end)
    now = int(clock() * NS)
    unfinished = [d for d in days if day_start(d) + DAY > now]
    if unfinished and not partial:
        raise ConfigError(
            f"{unfinished[0]} is still being recorded (it ends at {unfinished[0]}T24:00Z); "
            "export it with --partial, and again once it is over"
        )
    fs, root = filesystem(dest, storage_options)
    try:
        if _local(fs):  # an object store has no folders (and s3fs would create a bucket)
            fs.makedirs(f"{root}/{MANIFESTS}", exist_ok=True)
        return [_export_day(reader, fs, root, dest, d, day_start(d) + DAY > now) for d in days]
    except storage_errors() as exc:
        raise SinkError(f"archive {dest}: {describe(exc)}") from None


def _export_day(
    reader: Reader, fs: Any, root: str, dest: str, day: dt.date, partial: bool
) -> DayExport:
    start, end = day_start(day), day_start(day) + DAY
    export_id = f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
    result = DayExport(day, partial=partial)
    tables: dict[str, Any] = {}
    written: list[str] = []
    try:
        for table in TABLES:
            entry = _write_table(reader, fs, root, table.name, day, start, end, export_id)
            if entry is None:
                continue
            tables[table.name] = entry
            written.append(f"{root}/{entry['files'][0]}")
            result.rows[table.name] = entry["rows"]
            result.bytes += entry["bytes"]
        gaps = reader.gaps(start, end, overlapping=True)
        manifest = _manifest(reader, day, partial, tables, gaps)
        result.complete = manifest["complete"]
        _put(fs, f"{root}/{manifest_path(day)}", json.dumps(manifest, indent=1).encode())
    except BaseException:
        for path in written:  # nothing names them: leave no stray files
            _remove(fs, path)
        raise
    _remove_old(fs, root, day, {f for entry in tables.values() for f in entry["files"]})
    return result


def _write_table(
    reader: Reader,
    fs: Any,
    root: str,
    table: str,
    day: dt.date,
    start: int,
    end: int,
    export_id: str,
) -> dict[str, Any] | None:
    """One table's rows of the day into one Parquet file; its manifest entry, or None when
    the day has no row of it."""
    pa = pyarrow()
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    batches = (
        _gaps(reader, start, end)
        if table == GAPS.name
        else reader.batches(table, start, end, (), EXPORT_BATCH)
    )
    first = next(batches, None)
    if first is None:
        return None
    name = f"{table}/date={day.isoformat()}/part-{export_id}.parquet"
    target = f"{root}/{name}"
    staging = f"{root}/{table}/date={day.isoformat()}/.part-{export_id}.tmp"
    local = _local(fs)
    codes: dict[str, int] = {}
    rows = 0
    try:
        if local:
            fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(staging if local else target, "wb") as out:
            writer = pq.ParquetWriter(
                out,
                schema(table),
                compression="zstd",
                sorting_columns=[
                    pq.SortingColumn(BY_NAME[table].names.index(c)) for c in code_order(table)
                ],
            )
            for batch in _chain(first, batches):
                batch = _cast(batch, table, pa)
                writer.write_batch(batch, row_group_size=EXPORT_BATCH)
                rows += batch.num_rows
                counted = pc.value_counts(batch.column("code").cast(pa.string()))
                for item in counted.to_pylist():
                    codes[item["values"]] = codes.get(item["values"], 0) + item["counts"]
            writer.close()
        if local:
            fs.mv(staging, target)
        size = int(fs.size(target))
    except storage_errors() as exc:
        _remove(fs, staging)
        raise SinkError(f"archive: writing {name}: {describe(exc)}") from None
    return {"files": [name], "rows": rows, "bytes": size, "codes": dict(sorted(codes.items()))}


def _gaps(reader: Reader, start: int, end: int) -> Iterator[Any]:
    """A day's gaps file holds every gap that touches the day (one that began before and
    lasts into it too), so the archive of a day carries its whole ledger."""
    from .store.arrow import sort, to_batch

    rows = reader.gaps(start, end, overlapping=True)
    if rows:
        pa = pyarrow()
        yield from sort(
            pa.Table.from_batches([to_batch(GAPS.name, rows)]), code_order(GAPS.name)
        ).to_batches()


def _local(fs: Any) -> bool:
    return type(fs).__name__ == "LocalFileSystem"


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _cast(batch: Any, table: str, pa: Any) -> Any:
    want = schema(table)
    if batch.schema == want:
        return batch
    return pa.RecordBatch.from_arrays(
        [batch.column(f.name).cast(f.type) for f in want], schema=want
    )


def _manifest(
    reader: Reader, day: dt.date, partial: bool, tables: dict[str, Any], gaps: list[Any]
) -> dict[str, Any]:
    names = GAPS.names
    ledger = []
    for row in gaps:
        gap = dict(zip(names, row, strict=True))
        ledger.append(
            {
                "start": _iso(gap["ts"]),
                "end": None if gap["end_ts"] is None else _iso(gap["end_ts"]),
                **{
                    k: gap[k]
                    for k in ("code", "stream", "cause", "status", "lost_volume", "lost_trades")
                },
                "missing": gap["missing"],
                "missing_unit": gap["missing_unit"],
                "backfilled": gap["backfilled"],
            }
        )
    why = []
    if partial:
        why.append("exported while the day was still being recorded")
    unfilled = [g for g in ledger if g["status"] != GapStatus.FILLED]
    if unfilled:
        states: dict[str, int] = {}
        for g in unfilled:
            states[g["status"]] = states.get(g["status"], 0) + 1
        why.append("gaps not filled: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
    lost: dict[str, float] = {}
    for g in ledger:
        if g["lost_volume"]:
            lost[g["code"]] = lost.get(g["code"], 0.0) + g["lost_volume"]
    return {
        "format": FORMAT,
        "date": day.isoformat(),
        "from": f"{day.isoformat()}T00:00:00Z",
        "to": f"{(day + dt.timedelta(days=1)).isoformat()}T00:00:00Z",
        "partial": partial,
        "complete": not why,
        "incomplete_because": why,
        "source": reader.source,
        "recorder_version": __version__,
        "schema_version": _schema_version(),
        "exported_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tables": tables,
        "gaps": ledger,
        "lost_volume": lost,
        "columns": {t.name: [list(c) for c in t.columns] for t in TABLES},
    }


def _schema_version() -> int | str:
    from . import schema as schema_module

    version = getattr(schema_module, "SCHEMA_VERSION", None)
    if isinstance(version, int | str):
        return version
    # until the schema carries a number: a fingerprint of every table's columns
    import hashlib

    text = json.dumps([[t.name, list(t.columns)] for t in TABLES])
    return "sha1:" + hashlib.sha1(text.encode()).hexdigest()[:12]


def _put(fs: Any, path: str, data: bytes) -> None:
    """Write a small file whole: a rename on a local disk, one PUT on an object store."""
    try:
        if _local(fs):
            staging = path.rsplit("/", 1)[0] + "/." + path.rsplit("/", 1)[1] + ".tmp"
            with fs.open(staging, "wb") as out:
                out.write(data)
            fs.mv(staging, path)
        else:
            fs.pipe_file(path, data)
    except storage_errors() as exc:
        raise SinkError(f"archive: writing {path}: {describe(exc)}") from None


def _remove(fs: Any, path: str) -> None:
    try:
        if fs.exists(path):
            fs.rm(path)
    except storage_errors():
        pass  # a stray file no manifest names: readers of the archive ignore it


def _remove_old(fs: Any, root: str, day: dt.date, keep: set[str]) -> None:
    """The files of earlier exports of ``day``, now that the manifest names the new ones."""
    for table in TABLES:
        folder = f"{root}/{table.name}/date={day.isoformat()}"
        try:
            listed = fs.ls(folder, detail=False) if fs.exists(folder) else []
        except storage_errors():
            continue
        for path in listed:
            name = str(path)[len(root) + 1 :] if str(path).startswith(root) else str(path)
            if name.endswith(".parquet") and name not in keep:
                _remove(fs, str(path))


def _iso(ns: int) -> str:
    moment = dt.datetime.fromtimestamp(ns // NS, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{ns % NS:09d}Z" if ns % NS else "Z")


def held_until(
    archive: ArchiveReader,
    reader: Reader,
    table: str,
    before: int,
    repair: Callable[[dt.date], None] | None = None,
) -> int:
    """How far retention may expire ``table`` without losing what the archive does not
    hold: ``before``, or the start of the oldest day that has rows in the store and no
    non-partial export holding them row for row (every code's count in its manifest
    equals the store's now). ``repair(day)`` exports such a day first, if given."""
    oldest = next(iter(reader.rows(table, 0, before)), None)
    if oldest is None:
        return before
    day = day_of(oldest[0])
    while day_start(day) < before:
        if not _held(archive, reader, table, day):
            if repair is None:
                return day_start(day)
            repair(day)
            archive.refresh()
            if not _held(archive, reader, table, day):
                return day_start(day)
        day += dt.timedelta(days=1)
    return before


def _held(archive: ArchiveReader, reader: Reader, table: str, day: dt.date) -> bool:
    if day not in archive.days:
        return False
    manifest = archive.manifest(day)
    if manifest.get("partial"):
        return False
    entry = manifest["tables"].get(table) or {"codes": {}}
    start, end = day_start(day), day_start(day) + DAY
    stored = {c: reader.count(table, c, start, end) for c in reader.codes(table)}
    return bool({c: n for c, n in stored.items() if n} == entry["codes"])


def report_line(day: DayExport) -> str:
    """One line per exported day, as ``export`` prints it."""
    rows = ", ".join(f"{t} {n:,}" for t, n in day.rows.items()) or "no rows"
    state = "complete" if day.complete else "INCOMPLETE (see its manifest)"
    partial = ", partial" if day.partial else ""
    return f"{day.day}: {rows}; {day.bytes:,} bytes{partial}; {state}"


def expire_held(config: Config, dest: str) -> dict[str, str]:
    """Retention after an export: each table with ``[retention]`` days loses the whole
    days older than that, and only days the archive at ``dest`` holds row for row (every
    code's count in its manifest equals the store's now): a day it lacks, or that changed
    since its export (a late backfill), is exported again first. What went, per table:
    the time before which rows were deleted."""
    from .sinks import make_sink
    from .sinks.base import EXPIRE_ROWS
    from .store import reader_for

    archive = ArchiveReader(dest)
    reader = reader_for(config)
    sink = make_sink(config)
    today = int(time.time()) // 86400 * 86400
    out: dict[str, str] = {}

    def repair(day: dt.date) -> None:
        for again in export(reader, day_start(day), day_start(day) + DAY, dest):
            print(f"exported again: {report_line(again)}", flush=True)

    try:
        sink.open()
        for table, days in config.retention.days().items():
            cutoff = (today - int(days) * 86400) * NS
            before = held_until(archive, reader, table, cutoff, repair)
            while sink.expire(table, before) >= EXPIRE_ROWS:
                pass
            out[table] = _iso(before)
    finally:
        sink.close()
        reader.close()
    return out
