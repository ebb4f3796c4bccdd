"""Where batches go: the :class:`Sink` protocol and its implementations.

Every method is blocking and is called from the writer thread only, never from the event
loop. ``write`` returns only when the database acknowledged the batch and raises
:class:`~recorder.exceptions.SinkError` otherwise, so the caller can spool the batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import EXPIRE_ROWS, Sink

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["EXPIRE_ROWS", "Sink", "make_sink"]


def make_sink(config: Config) -> Sink:
    """The sink the config names."""
    kind = config.sink.kind
    if kind == "sqlite":
        from .sqlite import SQLiteSink

        return SQLiteSink(config.resolve(config.sink.sqlite_path))
    if kind == "questdb":
        from .questdb import QuestDBSink

        return QuestDBSink(config.sink.questdb, http=config.sink.questdb_http)
    from .null import NullSink

    return NullSink()
