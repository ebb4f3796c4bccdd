"""Exceptions raised by qos-recorder.

Every error the recorder raises on purpose derives from :class:`RecorderError`, so the
command line can print one line for it instead of a traceback::

    RecorderError
    ├── ConfigError          the TOML file, a key, or the API key is wrong
    ├── UpstreamError        the QOS service misbehaved or refused us
    │   ├── DecodeError      one frame could not be decoded (the frame is kept)
    │   ├── ApiError         a command or HTTP request came back with msg != "OK"
    │   ├── TransportError   a REST request or its answer did not make it across
    │   ├── HttpStatusError  a REST answer's HTTP status was not 200
    │   └── AuthError        the service refused the API key
    ├── SinkError            the database did not acknowledge a batch (try again later)
    │   ├── SinkRejected     the database refused this batch for good (bad data or schema)
    │   ├── SinkReplaced     the SQLite file was deleted or replaced under the recorder
    │   └── WriterFailed     the writer thread kept crashing; the process must restart
    ├── SinkIncompatible     the database cannot hold our tables (too old, DDL refused): stop
    ├── SpoolError           the on-disk spool is full or unreadable
    └── InUseError           another recorder holds the spool directory or the database file
"""

from __future__ import annotations


class RecorderError(Exception):
    """Base class of every error the recorder raises on purpose."""


class ConfigError(RecorderError):
    """The configuration is invalid; the message names the file, the key and the reason."""


class UpstreamError(RecorderError):
    """The QOS service misbehaved or refused a request."""


class DecodeError(UpstreamError):
    """A frame could not be decoded; ``frame`` holds the raw bytes for the dead-letter file."""

    def __init__(self, reason: str, frame: bytes) -> None:
        super().__init__(reason)
        self.reason = reason
        self.frame = frame


class ApiError(UpstreamError):
    """A reply whose ``msg`` was not ``"OK"``."""

    def __init__(self, what: str, msg: str) -> None:
        super().__init__(f"{what}: {msg}")
        self.what = what
        self.msg = msg


class TransportError(UpstreamError):
    """A REST request or its answer did not make it across (refused, cut, timed out)."""


class HttpStatusError(UpstreamError):
    """A REST answer's HTTP status was not 200; a redirect is one (it is never followed)."""

    def __init__(self, what: str, status: int) -> None:
        redirect = 300 <= status < 400
        note = " (redirects are not followed: the key would go with them)" if redirect else ""
        super().__init__(f"{what}: HTTP {status}{note}")
        self.status = status


class AuthError(UpstreamError):
    """The service refused the API key."""


class SinkError(RecorderError):
    """The database did not acknowledge a batch; the batch must be kept (spooled)."""


class SinkRejected(SinkError):
    """The database refused a batch for good; retrying it cannot help, so it is set aside."""


class SinkReplaced(SinkError):
    """The file the sink writes is no longer the file at its path (deleted, renamed or
    replaced while recording): the batch is spooled and the next write opens the path anew."""


class WriterFailed(SinkError):
    """The writer thread crashed ``max_crashes`` times without a write in between; what it
    held was spooled, and the process exits non-zero so its supervisor restarts it."""


class SinkIncompatible(RecorderError):
    """The database cannot hold the recorder's tables: a version below the minimum, a DDL
    statement it refuses, a column of another type. Retrying cannot help, so the recorder
    stops with this one line (what it received so far stays in the spool)."""


class SpoolError(RecorderError):
    """The spool is full or one of its files cannot be read or written."""


class InUseError(RecorderError):
    """Another recorder process holds the spool directory or the SQLite file (its lock)."""
