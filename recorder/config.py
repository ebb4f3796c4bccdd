"""The recorder's TOML configuration, parsed once into frozen, typed objects.

Every problem is a :class:`~recorder.exceptions.ConfigError` whose one-line message names
the file, the key and the reason, with a close match for a misspelt key.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Final, Literal, Union, cast, get_args, get_origin, get_type_hints

from .exceptions import ConfigError
from .protocol import KLINE_TYPES, MARKETS, STREAMS, Stream, split_codes

_SYMBOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
FsyncPolicy = Literal["always", "interval", "never"]
LogLevel = Literal["debug", "info", "warning", "error"]


class Secret:
    """The API key. Its ``repr`` and ``str`` never show the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        """``text`` (an exception's, on its way to the log, the ledger or ``/healthz``) with
        the key, raw or escaped as ``repr`` shows it, replaced by ``***``."""
        value = self._value
        if not value:
            return text
        for form in (value, repr(value)[1:-1], value.encode("unicode_escape").decode()):
            text = text.replace(form, "***")
        return text

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Address:
    """A ``HOST:PORT`` to listen on, such as ``127.0.0.1:9464`` or ``[::1]:9464``."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        """ValueError when ``text`` is not HOST:PORT with a port from 0 to 65535."""
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"{text!r} is not HOST:PORT")
        return cls(host.strip("[]") or "127.0.0.1", int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    ws_url: str = "wss://api.qos.hk/ws"
    http_url: str = "https://api.qos.hk"
    key_env: str | None = "QOS_API_KEY"
    key_file: str | None = None
    max_products: int = 10
    heartbeat_interval: float = 20.0
    heartbeat_timeout: float = 10.0
    stale_after: float = 60.0
    request_interval: float = 1.05
    http_requests_per_minute: int = 10
    http_timeout: float = 10.0
    connect_timeout: float = 10.0
    backoff_initial: float = 1.0
    backoff_max: float = 5.0
    healthy_after: float = 30.0
    max_frame_bytes: int = 1 << 20
    max_http_bytes: int = 8 << 20


@dataclass(frozen=True, slots=True)
class SubscribeConfig:
    trades: tuple[str, ...] = ()
    depth: tuple[str, ...] = ()
    snapshots: tuple[str, ...] = ()
    klines: tuple[str, ...] = ()
    kline_types: tuple[int, ...] = (1,)

    def codes(self, stream: Stream) -> list[str]:
        """The single codes subscribed on one stream."""
        return split_codes(cast("tuple[str, ...]", getattr(self, stream)))

    def all_codes(self) -> list[str]:
        """Every distinct code, in the order first named."""
        return split_codes([c for s in STREAMS for c in self.codes(s)])


@dataclass(frozen=True, slots=True)
class SinkConfig:
    kind: Literal["sqlite", "questdb", "null"] = "sqlite"
    questdb: str = "http::addr=localhost:9000;"
    questdb_http: str | None = None
    sqlite_path: str = "ticks.sqlite"
    batch_rows: int = 2000
    batch_age: float = 0.05
    max_pending_batches: int = 64
    shutdown_timeout: float = 10.0
    retry_interval: float = 2.0
    #: seconds one database write may take before the watchdog reports it stuck
    write_stuck_after: float = 60.0


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    dir: str = "spool"
    max_bytes: int = 1 << 30
    segment_bytes: int = 16 << 20
    fsync: FsyncPolicy = "always"


@dataclass(frozen=True, slots=True)
class GapsConfig:
    silence_after: float = 120.0
    volume_tolerance: float = 0.0
    backfill: bool = True
    max_trade_backfill: int = 50


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: LogLevel = "info"
    dead_letter: str = "dead-letter.ndjson"
    progress_interval: float = 60.0


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: Address | None = None
    stale_after: float = 60.0
    spool_warn_fraction: float = 0.5


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """Days of data to keep per table (unset: forever). Whole UTC days are kept: with 0,
    everything before today goes."""

    trades: float | None = None
    depth: float | None = None
    snapshots: float | None = None
    klines: float | None = None
    kline_updates: float | None = None
    gaps: float | None = None
    instruments: float | None = None
    #: the Parquet archive (folder or URL) the daily export writes: when set, the recorder
    #: expires nothing itself; ``qos-recorder export --expire`` expires only what it holds
    archive: str | None = None

    def days(self) -> dict[str, float]:
        """The tables with a limit, and their days. The keys are the tables' names (config
        sits below the schema, so a test holds them to ``schema.TABLES``)."""
        return {
            f.name: days
            for f in fields(self)
            if f.name != "archive" and (days := getattr(self, f.name)) is not None
        }


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration; ``path`` is the file it came from."""

    path: str
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    subscribe: SubscribeConfig = field(default_factory=SubscribeConfig)
    sink: SinkConfig = field(default_factory=SinkConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    gaps: GapsConfig = field(default_factory=GapsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)

    def resolve(self, relative: str) -> Path:
        """A path from the config: relative ones are relative to ``$STATE_DIRECTORY`` under
        systemd (``StateDirectory=``), else to the config file's folder."""
        p = Path(relative).expanduser()
        if p.is_absolute():
            return p
        state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        return (Path(state) if state else Path(self.path).resolve().parent) / p


_SECTIONS: Final[dict[str, type]] = {
    "upstream": UpstreamConfig,
    "subscribe": SubscribeConfig,
    "sink": SinkConfig,
    "spool": SpoolConfig,
    "gaps": GapsConfig,
    "log": LogConfig,
    "metrics": MetricsConfig,
    "retention": RetentionConfig,
}


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file."""
    name = str(path)
    try:
        raw = Path(name).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from None
    return parse(doc, name)


def parse(doc: Mapping[str, Any], name: str = "<config>") -> Config:
    """Validate a parsed TOML document."""
    _unknown(name, "", doc, _SECTIONS)
    sections: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        table = doc.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{name}: [{section}]: must be a table")
        sections[section] = _section(name, section, cls, table)
    upstream = doc.get("upstream", {})
    if "key_file" in upstream and "key_env" not in upstream:
        # a key_file given alone wins over key_env's default
        sections["upstream"] = replace(sections["upstream"], key_env=None)
    config = Config(path=name, **sections)
    _check(config)
    return config


def _unknown(name: str, prefix: str, table: Mapping[str, Any], known: Mapping[str, Any]) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            shown = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else repr(key)
            raise ConfigError(f"{name}: {prefix}{shown}: unknown key{hint}")


def _section(name: str, section: str, cls: type, table: Mapping[str, Any]) -> Any:
    hints = get_type_hints(cls)
    _unknown(name, f"{section}.", table, hints)
    values = {
        key: _typed(f"{name}: {section}.{key}", value, hints[key]) for key, value in table.items()
    }
    return cls(**values)


def _typed(where: str, value: Any, annotation: Any) -> Any:
    """``value`` checked against (and converted to) the field's declared type."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {', '.join(args)}, not {value!r}")
        return value
    if origin is UnionType or origin is Union:
        # ``X | None``: TOML has no null, so an empty string stands for "not set"
        (inner,) = (a for a in args if a is not NoneType)
        return None if value == "" else _typed(where, value, inner)
    if origin is tuple:
        item = args[0]
        if not isinstance(value, list) or not all(_is_a(v, item) for v in value):
            raise ConfigError(f"{where}: must be a list of {_NAMES[item]}")
        return tuple(value)
    if annotation is Address:
        if not isinstance(value, str):
            raise ConfigError(f'{where}: must be a string such as "127.0.0.1:9464"')
        try:
            return Address.parse(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false")
        return value
    if annotation is int:
        if not _is_int(value) or value <= 0:
            raise ConfigError(f"{where}: must be a positive integer")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{where}: must be a non-negative number")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be a string")
        return value
    raise TypeError(f"{where}: no parser for fields of type {annotation!r}")


_NAMES: Final[dict[type, str]] = {str: "strings", int: "integers"}


def _is_a(value: Any, kind: type) -> bool:
    return _is_int(value) if kind is int else isinstance(value, kind)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: Symbol forms per market, after the reference's examples (HK:700, SH:600519,
#: SZ:000001, US:AAPL, CF:BTCUSDT); other markets take ``_SYMBOL``. A symbol in another
#: form (HK:0700.HK) would be subscribed as a different instrument, so it is refused.
_FORMS: Final[dict[str, tuple[re.Pattern[str], str]]] = {
    "HK": (re.compile(r"[1-9][0-9]{0,4}"), "digits without leading zeros, such as 700"),
    "SH": (re.compile(r"[0-9]{6}"), "six digits, such as 600519"),
    "SZ": (re.compile(r"[0-9]{6}"), "six digits, such as 000001"),
    "US": (
        re.compile(r"[A-Z]{1,8}(\.[A-Z]{1,4})?"),
        "capital letters, a dot before a class, such as AAPL or BRK.B",
    ),
    "CF": (re.compile(r"[0-9]*[A-Z][A-Z0-9]{0,31}"), "capital letters, such as BTCUSDT"),
}
_SUFFIX = re.compile(r"\.(HK|SH|SS|SZ|US)$")


def check_code_entry(entry: str) -> str | None:
    """Why a subscription entry such as ``"US:AAPL,TSLA"`` is malformed, or ``None``;
    where a close form is valid, the message suggests it."""
    market, colon, symbols = entry.partition(":")
    if not colon:
        return f"{entry!r} is not MARKET:SYMBOL"
    if market not in MARKETS:
        if market.strip().upper() in MARKETS:
            close = _close_entry(market.strip().upper(), symbols)
            hint = f" (did you mean {close!r}?)" if close else ""
            return f"{entry!r}: unknown market {market!r}: market names are capitals{hint}"
        return f"{entry!r}: unknown market {market!r} (known: {', '.join(sorted(MARKETS))})"
    for symbol in symbols.split(","):
        if _symbol_ok(market, symbol.strip()):
            continue
        form = _FORMS.get(market)
        why = f": {market} symbols are {form[1]}" if form else ""
        close = _close_entry(market, symbols)
        hint = f" (did you mean {close!r}?)" if close else ""
        return f"{entry!r}: malformed symbol {symbol!r}{why}{hint}"
    return None


def _symbol_ok(market: str, symbol: str) -> bool:
    form = _FORMS.get(market)
    return bool((form[0] if form else _SYMBOL).fullmatch(symbol))


def _close_entry(market: str, symbols: str) -> str | None:
    """``market:symbols`` with each symbol in its market's form, when that can be guessed."""
    out = []
    for symbol in symbols.split(","):
        s = _SUFFIX.sub("", symbol.strip().upper())
        if market in ("HK", "SH", "SZ") and s.isdigit():
            s = s.lstrip("0") if market == "HK" else s.zfill(6)
        elif market == "CF":
            s = re.sub(r"[-_/]", "", s)
        if not _symbol_ok(market, s):
            return None
        out.append(s)
    return f"{market}:{','.join(out)}"


def _check(config: Config) -> None:
    name, sub, up = config.path, config.subscribe, config.upstream
    for stream in STREAMS:
        for i, entry in enumerate(getattr(sub, stream)):
            problem = check_code_entry(entry)
            if problem:
                raise ConfigError(f"{name}: subscribe.{stream}[{i}]: {problem}")
    for kt in sub.kline_types:
        if kt not in KLINE_TYPES:
            allowed = ", ".join(str(k) for k in sorted(KLINE_TYPES))
            raise ConfigError(
                f"{name}: subscribe.kline_types: {kt} is not a K-line type ({allowed})"
            )
    if sub.klines and not sub.kline_types:
        raise ConfigError(
            f"{name}: subscribe.kline_types: K-lines are subscribed but no type is given"
        )
    codes = sub.all_codes()
    if not codes:
        raise ConfigError(f"{name}: subscribe: no codes to record")
    if len(codes) > up.max_products:
        raise ConfigError(
            f"{name}: subscribe: {len(codes)} distinct codes, the plan allows "
            f"{up.max_products} (upstream.max_products)"
        )
    if (up.key_env is None) == (up.key_file is None):
        raise ConfigError(f"{name}: upstream: set exactly one of key_env and key_file")
    for key in ("ws_url", "http_url"):
        url: str = getattr(up, key)
        scheme = ("ws://", "wss://") if key == "ws_url" else ("http://", "https://")
        if not url.startswith(scheme):
            raise ConfigError(f"{name}: upstream.{key}: must start with {' or '.join(scheme)}")
    if up.heartbeat_interval <= 0 or up.heartbeat_interval > 30:
        raise ConfigError(
            f"{name}: upstream.heartbeat_interval: the API wants 10-30 s, "
            f"not {up.heartbeat_interval}"
        )
    if up.request_interval < 1.0:
        raise ConfigError(f"{name}: upstream.request_interval: the API allows 1 request per second")
    if up.backoff_initial <= 0 or up.backoff_max < up.backoff_initial:
        raise ConfigError(f"{name}: upstream.backoff_max: must be at least backoff_initial (> 0)")
    if config.sink.kind == "questdb" and "::" not in config.sink.questdb:
        raise ConfigError(
            f"{name}: sink.questdb: not a client conf string such as 'http::addr=host:9000;'"
        )


def check_paths(config: Config) -> list[str]:
    """Every file and folder the recorder writes: each must exist with the right kind and be
    writable, or be makeable under a writable folder. Raises on the first that is not;
    returns a note per path whose missing folders ``run`` will create."""
    paths: list[tuple[str, str, bool]] = [
        ("spool.dir", config.spool.dir, True),
        ("log.dead_letter", config.log.dead_letter, False),
    ]
    if config.sink.kind == "sqlite":
        paths.insert(0, ("sink.sqlite_path", config.sink.sqlite_path, False))
    notes = []
    for key, value, is_dir in paths:
        path = config.resolve(value)
        problem, missing = _path_problem(path, is_dir)
        if problem:
            raise ConfigError(f"{config.path}: {key}: {path}: {problem}")
        if missing is not None and missing != path.parent:
            notes.append(f"{key}: {path} will be created (under {missing})")
    return notes


def _path_problem(path: Path, is_dir: bool) -> tuple[str | None, Path | None]:
    """(what is wrong with ``path``, the nearest existing folder when it must be made)."""
    kind = "folder" if is_dir else "file"
    if path.exists():
        if is_dir != path.is_dir():
            return f"is not a {kind}", None
        if not os.access(path, os.W_OK | (os.X_OK if is_dir else 0)):
            return f"the {kind} is not writable", None
        return None, None
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be made: {parent} is a file, not a folder", None
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be made: {parent} is not writable", None
    return None, parent


def read_key(config: Config, environ: Mapping[str, str] | None = None) -> Secret:
    """The API key from the variable or file the config names; never echoed in errors."""
    up, env = config.upstream, os.environ if environ is None else environ
    if up.key_env is not None:
        value = env.get(up.key_env, "").strip()
        if not value:
            raise ConfigError(
                f"{config.path}: upstream.key_env: environment variable {up.key_env} is not set"
            )
        _check_key(f"{config.path}: upstream.key_env: ${up.key_env}", value)
        return Secret(value)
    assert up.key_file is not None
    path = _key_path(up.key_file, env)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{config.path}: upstream.key_file: cannot read {path}: {exc.strerror}"
        ) from None
    where = f"{config.path}: upstream.key_file: {path}"
    try:
        # an editor's byte-order mark and the final newline are not part of the key
        value = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: the key is not UTF-8 text") from None
    if not value:
        raise ConfigError(f"{where} is empty")
    _check_key(where, value)
    return Secret(value)


def _check_key(where: str, value: str) -> None:
    """Refuse a key an HTTP header cannot carry, naming the character's position only: the
    WebSocket client would otherwise raise with the whole key in its message."""
    for i, char in enumerate(value):
        if not " " < char < "\x7f":
            kind = "a control character" if char.isascii() else "not ASCII"
            raise ConfigError(
                f"{where}: character {i + 1} of the key is {kind}; "
                "an API key is printable ASCII without spaces"
            )


def key_file_warning(config: Config, environ: Mapping[str, str] | None = None) -> str | None:
    """A warning when the key file is readable by group or others."""
    if config.upstream.key_file is None:
        return None
    path = _key_path(config.upstream.key_file, os.environ if environ is None else environ)
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return f"{path} is readable by other users (mode {stat.filemode(mode)}); chmod 600 it"
    return None


def _key_path(key_file: str, env: Mapping[str, str]) -> Path:
    # Under systemd, LoadCredential= puts the key in $CREDENTIALS_DIRECTORY; a bare
    # file name is looked up there first.
    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds and os.sep not in key_file:
        return Path(creds) / key_file
    return Path(key_file).expanduser()
