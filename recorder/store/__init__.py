"""The read side of every store: one :class:`Reader` per source, chosen here only.

A source is a SQLite file, a QuestDB HTTP address (``http://host:9000``), or a Parquet
archive (a folder, or an fsspec URL such as ``s3://bucket/ticks``). :func:`open_source`
picks the reader for a source given on the command line, :func:`reader_for` the one a
config's sink writes to.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigError
from .base import BATCH_ROWS, Reader, code_order, time_order

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["BATCH_ROWS", "Reader", "code_order", "open_source", "reader_for", "time_order"]


def open_source(source: str | Path, storage_options: dict[str, Any] | None = None) -> Reader:
    """The reader of ``source``; one line saying why when it is none."""
    text = str(source)
    if text.startswith(("http://", "https://")):
        from .questdb import QuestDBHttp, QuestDBReader

        return QuestDBReader(QuestDBHttp(text))
    if "://" in text:
        from .archive import ArchiveReader

        return ArchiveReader(text, storage_options)
    path = Path(text)
    if path.is_dir():
        from .archive import ArchiveReader

        return ArchiveReader(str(path.resolve()), storage_options)
    if path.is_file():
        from .sqlite import SQLiteReader

        return SQLiteReader(path)
    raise ConfigError(
        f"{text}: no such file or folder (a source is a SQLite file, a QuestDB address such "
        "as http://localhost:9000, or an archive folder or URL)"
    )


def reader_for(config: Config) -> Reader:
    """The reader of the store the config's sink writes to."""
    kind = config.sink.kind
    if kind == "sqlite":
        path = config.resolve(config.sink.sqlite_path)
        if not path.exists():
            raise ConfigError(f"{config.path}: sink.sqlite_path: {path}: no such database yet")
        from .sqlite import SQLiteReader

        return SQLiteReader(path)
    if kind == "questdb":
        from .questdb import QuestDBHttp, QuestDBReader, default_http, parse_conf

        schema, params = parse_conf(config.sink.questdb)
        base = config.sink.questdb_http or default_http(schema, params)
        return QuestDBReader(QuestDBHttp(base, params, schema))
    raise ConfigError(f"{config.path}: sink.kind: the {kind} sink stores nothing to read")
