"""The ``qos-recorder`` command line.

User errors (a bad config, a missing key, a refused port) print one line to stderr and
exit 2; a bug still shows its traceback. A reader that closes the pipe (``| head``) is a
normal end: exit 0, no message.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import secrets
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config as config_mod
from .exceptions import ConfigError, RecorderError
from .protocol import STREAMS

if TYPE_CHECKING:  # the simulator is imported only when `simulate` runs
    from .sim import Simulator


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except BrokenPipeError:
        return _pipe_closed()
    except RecorderError as exc:
        print(f"qos-recorder: error: {exc}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:
        # a task of the daemon's TaskGroup failed; a user error inside still gets one line
        leaves = _leaves(group)
        if not all(isinstance(e, RecorderError) for e in leaves):
            raise
        print(f"qos-recorder: error: {leaves[0]}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"qos-recorder: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def _pipe_closed() -> int:
    # the reader went away (``| head``): a normal end; stdout points at /dev/null so the
    # interpreter's last flush cannot complain about the pipe again
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qos-recorder",
        description="Record the QOS market-data API (trades, depth, snapshots, K-lines) into "
        "QuestDB or SQLite, with every hole filled or written to the gaps table.",
        epilog="Start with `qos-recorder demo`; then `qos-recorder COMMAND --help`.",
    )
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # one function per subcommand, in the order `--help` lists them
    for add in (
        _run_parser,
        _check_config_parser,
        _status_parser,
        _gaps_parser,
        _coverage_parser,
        _replay_parser,
        _export_parser,
        _simulate_parser,
        _schema_parser,
        _demo_parser,
    ):
        add(subs)
    return parser


def _config_option(parser: Any, text: str, required: bool = False) -> None:
    """The ``--config``/``-c`` option most subcommands share; only its help differs."""
    parser.add_argument("--config", "-c", required=required, help=text)


def _run_parser(subs: Any) -> None:
    run = subs.add_parser("run", help="record the configured streams until stopped")
    _config_option(run, "the TOML config file", required=True)
    run.set_defaults(func=cmd_run)


def _check_config_parser(subs: Any) -> None:
    check = subs.add_parser("check-config", help="validate a config file and its API key")
    check.add_argument("config", help="the TOML config file")
    check.add_argument(
        "--online",
        action="store_true",
        help="also try the key against the API: one request (/instrument-info of one code)",
    )
    check.set_defaults(func=cmd_check_config)


def _status_parser(subs: Any) -> None:
    status = subs.add_parser("status", help="summarize a running recorder; non-zero if unhealthy")
    where = status.add_mutually_exclusive_group(required=True)
    _config_option(
        where, "the TOML config file the recorder was started with (it need not be valid now)"
    )
    where.add_argument("--listen", help="ask the recorder whose metrics listen on HOST:PORT")
    status.set_defaults(func=cmd_status)


def _gaps_parser(subs: Any) -> None:
    gaps = subs.add_parser("gaps", help="print the gaps table readably")
    _config_option(gaps, "the TOML config file (its store)")
    gaps.add_argument("--source", help="read this store instead: " + SOURCE_HELP)
    gaps.add_argument("--since", help="only gaps starting at or after this UTC date or time")
    gaps.set_defaults(func=cmd_gaps)


def _coverage_parser(subs: Any) -> None:
    cov = subs.add_parser("coverage", help="picture a day or a window of the record as HTML")
    _config_option(cov, "the TOML config file (without it: --source and the codes it holds)")
    cov.add_argument("--source", help="read this store instead of the config's: " + SOURCE_HELP)
    cov.add_argument(
        "--day",
        help="the UTC day, such as 2026-11-26; zoomed to the recorded span when that is "
        "under half the day (--whole-day keeps it all)",
    )
    cov.add_argument("--from", dest="start", help="start of a window instead of a day (UTC)")
    cov.add_argument("--to", dest="end", help="end of the window (default: now)")
    cov.add_argument("--whole-day", action="store_true", help="--day: draw all 24 hours")
    cov.add_argument("--out", required=True, help="the HTML file to write")
    cov.set_defaults(func=cmd_coverage)


def _replay_parser(subs: Any) -> None:
    rep = subs.add_parser("replay", help="replay recorded data as NDJSON or a QOS WebSocket")
    rep.add_argument("--source", required=True, help=SOURCE_HELP)
    rep.add_argument(
        "--from",
        dest="start",
        required=True,
        help="UTC date/time (2026-11-26T14:30) or unix seconds",
    )
    rep.add_argument("--to", dest="end", required=True, help="end of the range, exclusive")
    rep.add_argument("--codes", nargs="*", default=[], help="MARKET:SYMBOL codes (default all)")
    rep.add_argument("--streams", nargs="*", default=list(STREAMS), help=" ".join(STREAMS))
    rep.add_argument(
        "--serve",
        type=int,
        metavar="PORT",
        help="serve a QOS-compatible WebSocket on PORT instead of printing NDJSON",
    )
    _replay_serve_options(rep)
    rep.set_defaults(func=cmd_replay)


def _replay_serve_options(rep: Any) -> None:
    # the --serve options default to None so that one given without --serve is refused
    rep.add_argument("--host", help="--serve: address to listen on (default 127.0.0.1)")
    rep.add_argument("--speed", help="--serve: pace factor, or max (default 1)")
    rep.add_argument(
        "--settle",
        type=float,
        help="--serve: subscriptions within this many seconds of a client's first one all "
        "start at the beginning of the range (default 5)",
    )
    rep.add_argument(
        "--max-idle",
        type=float,
        metavar="SECONDS",
        help="--serve: shorten stretches with nothing to send (nights, weekends) to this",
    )
    rep.add_argument(
        "--close-at-end",
        action="store_true",
        default=None,
        help="--serve: close the socket after the range (the live service never does)",
    )


def _simulate_parser(subs: Any) -> None:
    sim = subs.add_parser("simulate", help="serve a QOS-compatible simulator")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8765)
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument(
        "--codes", default=",".join(_sim_codes()), help="comma-separated MARKET:SYMBOL codes"
    )
    sim.add_argument("--key", action="append", help="accepted API key (repeatable); default demo")
    sim.add_argument("--rate", type=float, default=4.0, help="trades per second per open code")
    sim.add_argument(
        "--always-open",
        action="store_true",
        help="trade round the clock (for testing); by default each market trades in its "
        "hours only, lunch breaks included (CF trades 24 h)",
    )
    sim.add_argument("--heartbeat-timeout", type=float, default=60.0)
    sim.add_argument(
        "--strict",
        action="store_true",
        help="the letter of the 1 request/s rule: every command, H included, 1 s apart "
        "(by default 50 ms are forgiven and H is exempt, as the vendor's clients need)",
    )
    _simulate_fault_options(sim)
    sim.add_argument("--truth", help="write the ground truth as NDJSON here on exit")
    sim.add_argument(
        "--config-out",
        metavar="FILE",
        help="write a recorder config for this simulator (its codes, SQLite beside FILE)",
    )
    sim.set_defaults(func=cmd_simulate)


def _simulate_fault_options(sim: Any) -> None:
    sim.add_argument("--close-every", type=float, help="fault: close connections every N s")
    sim.add_argument("--stall", action="store_true", help="fault: never send anything")
    sim.add_argument("--drop-rate", type=float, default=0.0, help="fault: drop frames (0-1)")
    sim.add_argument(
        "--malformed-rate", type=float, default=0.0, help="fault: send malformed frames (0-1)"
    )
    sim.add_argument("--error-replies", action="store_true", help="fault: refuse every command")
    sim.add_argument("--http-status", type=int, help="fault: answer HTTP with this status")
    sim.add_argument("--http-delay", type=float, default=0.0, help="fault: slow HTTP by N s")
    sim.add_argument(
        "--refuse-connections",
        action="store_true",
        help="fault: refuse new WebSocket connections with HTTP 503",
    )
    sim.add_argument(
        "--control-key",
        help="key of the fault switches under /control (POST /control/drop, "
        "/control/outage?seconds=N, ...); default: a random one, printed at start",
    )


def _schema_parser(subs: Any) -> None:
    schema = subs.add_parser("schema", help="print the tables: their meaning, or their DDL")
    form = schema.add_mutually_exclusive_group()
    form.add_argument(
        "--markdown", action="store_true", help="docs/schema.md: every column explained (default)"
    )
    form.add_argument("--questdb", action="store_true", help="QuestDB CREATE TABLE statements")
    form.add_argument("--sqlite", action="store_true", help="SQLite CREATE statements")
    schema.set_defaults(func=cmd_schema)


def _demo_parser(subs: Any) -> None:
    demo = subs.add_parser("demo", help="record from the simulator into SQLite and summarize")
    demo.add_argument("--seconds", type=float, default=20.0)
    demo.add_argument("--db", default="demo-data/demo.sqlite")
    demo.set_defaults(func=cmd_demo)


def _sim_codes() -> tuple[str, ...]:
    from .sim import DEFAULT_CODES

    return tuple(DEFAULT_CODES)


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    key = config_mod.read_key(cfg)
    for note in config_mod.check_paths(cfg):
        print(f"qos-recorder: note: {note}", file=sys.stderr)
    warning = config_mod.key_file_warning(cfg)
    if warning:
        print(f"qos-recorder: warning: {warning}", file=sys.stderr)
    sub = cfg.subscribe
    online = ""
    if args.online:
        from .runtime import run

        answer: list[str] = []

        async def go() -> None:
            answer.append(await _try_key(cfg, key))

        run(go)
        online = f"; {answer[0]}"
    print(f"{args.config}: OK, {len(sub.all_codes())} codes, sink {cfg.sink.kind}{online}")
    return 0


async def _try_key(cfg: config_mod.Config, key: config_mod.Secret) -> str:
    """One request with the key: what the service says of it, or the error it is."""
    import orjson

    from .exceptions import ApiError, HttpStatusError, UpstreamError
    from .rest import AiohttpTransport, answer_data
    from .retry import refuses_key

    up = cfg.upstream
    url = up.http_url.rstrip("/") + "/instrument-info"
    transport = AiohttpTransport(up.http_timeout, up.max_http_bytes)
    body = orjson.dumps({"codes": cfg.subscribe.all_codes()[:1]})
    headers = {"key": key.reveal(), "Content-Type": "application/json"}
    try:
        answer_data("/instrument-info", await transport.post(url, body, headers))
    except (HttpStatusError, ApiError) as exc:
        status = exc.status if isinstance(exc, HttpStatusError) else None
        said = key.scrub(exc.msg if isinstance(exc, ApiError) else f"HTTP {status}")
        if refuses_key(exc):
            raise ConfigError(
                f"{cfg.path}: upstream: the service refuses the key ({said}) at {url}"
            ) from None
        raise UpstreamError(f"{cfg.path}: upstream: {url} answered {said}") from None
    except UpstreamError as exc:
        raise UpstreamError(f"{cfg.path}: upstream: {url}: {key.scrub(str(exc))}") from None
    finally:
        await transport.aclose()
    return f"the service accepts the key (1 request to {url})"


def cmd_run(args: argparse.Namespace) -> int:
    from . import logs, runtime
    from .daemon import Recorder

    cfg = config_mod.load(args.config)
    key = config_mod.read_key(cfg)
    config_mod.check_paths(cfg)
    logs.configure(cfg.log.level, secret=key)
    import structlog

    log = structlog.get_logger("recorder")
    warning = config_mod.key_file_warning(cfg)
    if warning:
        log.warning("key_file_permissions", detail=warning)

    async def go() -> None:
        stop = asyncio.Event()
        runtime.stop_on_signals(stop)
        recorder = Recorder(cfg, key)
        # systemctl reload: read the config again and apply the subscriptions live
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, recorder.reload)
        await recorder.run(stop)

    runtime.tune()
    runtime.run(go)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Ask the running recorder. Its address comes from ``--listen``, else from the runtime
    file it wrote in its spool directory, else from ``metrics.listen``: the config file is
    read only as far as it can be, since a bad edit must not hide the recorder running
    with the config it had."""
    from .config import Address
    from .report import fetch_health, format_health
    from .status import loose_settings, read_runtime

    invalid = None
    if args.listen is not None:
        try:
            listen: Address | None = Address.parse(args.listen)
        except ValueError as exc:
            raise ConfigError(f"--listen: {exc}") from None
    else:
        try:
            cfg = config_mod.load(args.config)
            spool_dir, listen = cfg.resolve(cfg.spool.dir), cfg.metrics.listen
        except ConfigError as exc:
            invalid = str(exc)
            spool_dir, listen = loose_settings(args.config)
        listen = read_runtime(spool_dir) or listen
    if listen is None:
        raise ConfigError(
            invalid or f"{args.config}: metrics.listen: not set, so there is no health to ask"
        )
    ok, summary = fetch_health(listen)
    print(format_health(summary))
    if invalid is not None:
        print(f"config file now: {invalid}")
    return 0 if ok else 1


def cmd_gaps(args: argparse.Namespace) -> int:
    from .report import format_gaps, parse_time, read_gaps
    from .store import open_source

    if (args.config is None) == (args.source is None):
        raise ConfigError("gaps: give --config or --source")
    source = config_mod.load(args.config) if args.config else open_source(args.source)
    since = parse_time(args.since) if args.since else 0
    print(format_gaps(read_gaps(source, since)))
    return 0


def _config_of(reader: Any, source: str) -> config_mod.Config:
    """A config recording what a source holds (its codes per stream), for coverage alone."""
    streams = {t: reader.codes(t) for t in ("trades", "depth", "snapshots")}
    doc: dict[str, Any] = {"subscribe": {t: codes for t, codes in streams.items() if codes}}
    if reader.codes("klines"):
        doc["subscribe"] |= {"klines": reader.codes("klines"), "kline_types": [1]}
    if not doc["subscribe"]:
        raise ConfigError(f"--source: {source} holds no market data")
    return config_mod.parse(doc, name=source)


def cmd_coverage(args: argparse.Namespace) -> int:
    import datetime as dt

    from .coverage import build, render, window_text
    from .protocol import NS
    from .report import parse_time
    from .store import open_source

    if args.config is None and args.source is None:
        raise ConfigError("coverage: give --config, --source, or both")
    reader = open_source(args.source) if args.source else None
    cfg = config_mod.load(args.config) if args.config else _config_of(reader, args.source)
    window = None
    if args.start is not None:
        if args.day is not None or args.whole_day:
            raise ConfigError("--from: give either --day or --from/--to, not both")
        now = time.time_ns()
        start = parse_time(args.start, "--from")
        end = parse_time(args.end, "--to") if args.end is not None else now
        if end <= start:
            raise ConfigError("--to must be after --from")
        if end - start > 7 * 86400 * NS:
            raise ConfigError("--to: a window is at most 7 days (use --day for each day)")
        window = (start, end)
        day = dt.datetime.fromtimestamp(start / NS, dt.UTC).date()
    elif args.day is None:
        raise ConfigError("coverage: give --day DAY, or --from TIME (and --to TIME)")
    elif args.end is not None:
        raise ConfigError("--to: goes with --from, not --day")
    else:
        try:
            day = dt.date.fromisoformat(args.day)
        except ValueError:
            raise ConfigError(f"--day: {args.day!r} is not a date such as 2026-11-26") from None
    picture = build(cfg, day, window=window, reader=reader)
    if window is None and not args.whole_day:
        picture = picture.zoomed()
    Path(args.out).write_text(render(picture))
    gaps = sum(picture.gaps.values())
    print(f"wrote {args.out} ({window_text(picture)}: {len(picture.lines)} lines, {gaps} gaps)")
    return 0


SOURCE_HELP = (
    "a SQLite file, a QuestDB HTTP address such as http://localhost:9000, or an archive "
    "folder or URL written by export"
)


def _export_parser(subs: Any) -> None:
    exp = subs.add_parser("export", help="days of the recording into a Parquet archive")
    exp.add_argument("--source", help=SOURCE_HELP)
    exp.add_argument("--config", "-c", help="export the store this config records into")
    exp.add_argument("--from", dest="start", help="UTC date/time or unix seconds")
    exp.add_argument("--to", dest="end", help="end of the range, exclusive")
    exp.add_argument("--yesterday", action="store_true", help="the UTC day before today")
    exp.add_argument(
        "--out", help="archive folder or URL (default: the config's retention.archive)"
    )
    exp.add_argument(
        "--partial", action="store_true", help="also export a day still being recorded"
    )
    exp.add_argument(
        "--expire",
        action="store_true",
        help="then expire, per the config's [retention] days, only what the archive holds",
    )
    exp.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from .archive import expire_held, export, report_line
    from .report import parse_time
    from .store import reader_for

    if (args.source is None) == (args.config is None):
        raise ConfigError("export: give --source or --config (the store to export)")
    cfg = config_mod.load(args.config) if args.config else None
    out = args.out or (cfg.retention.archive if cfg else None)
    if out is None:
        raise ConfigError("--out: required (or set retention.archive in the config)")
    if cfg is not None and "://" not in out:
        out = str(cfg.resolve(out))
    if args.yesterday == (args.start is not None or args.end is not None):
        raise ConfigError("export: give --from and --to, or --yesterday")
    if args.yesterday:
        import time

        today = int(time.time()) // 86400 * 86400
        start, end = (today - 86400) * 1_000_000_000, today * 1_000_000_000
    elif args.start is None or args.end is None:
        raise ConfigError("export: --from and --to go together")
    else:
        start, end = parse_time(args.start, "--from"), parse_time(args.end, "--to")
    if args.expire and cfg is None:
        raise ConfigError("--expire: needs --config (its [retention] days and its store)")
    source = args.source if cfg is None else reader_for(cfg)
    for day in export(source, start, end, out, partial=args.partial):
        print(report_line(day), flush=True)
    if args.expire and cfg is not None:
        for table, before in expire_held(cfg, out).items():
            print(f"expired {table} before {before}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from .replay import Query, check, frames, replay
    from .report import parse_time

    query = Query(
        parse_time(args.start, "--from"),
        parse_time(args.end, "--to"),
        tuple(args.codes),
        tuple(args.streams),
    )
    check(query)
    serve_only = ("host", "speed", "settle", "max_idle", "close_at_end")
    if args.serve is None:
        given = [f"--{n.replace('_', '-')}" for n in serve_only if getattr(args, n) is not None]
        if given:
            raise ConfigError(f"{given[0]}: applies to --serve PORT only (NDJSON is not paced)")
    records = replay(args.source, query.start, query.end, query.codes, query.streams)
    first = next(records, None)
    if first is None:
        what = f"codes {' '.join(query.codes)}" if query.codes else "any code"
        print(
            f"qos-recorder: no records in {args.source} from {args.start} to {args.end} "
            f"for {what} ({' '.join(query.streams)})",
            file=sys.stderr,
        )
        return 1
    if args.serve is not None:
        return _serve_replay(args, query)
    out = sys.stdout.buffer
    out.write(next(frames([first])))
    for line in frames(records):
        out.write(line)
    out.flush()
    return 0


def _serve_replay(args: argparse.Namespace, query: Any) -> int:
    from .replay import ReplayServer

    args.host = args.host or "127.0.0.1"
    args.speed = args.speed or "1"
    args.settle = 5.0 if args.settle is None else args.settle
    if args.speed == "max":
        speed = None
    else:
        try:
            speed = float(args.speed)
        except ValueError:
            raise ConfigError(f"--speed: {args.speed!r} is not a number or max") from None
        if speed <= 0:
            raise ConfigError("--speed: must be positive")
    from .runtime import run, serve_until_stopped

    if args.settle < 0 or (args.max_idle is not None and args.max_idle <= 0):
        raise ConfigError("--settle must be 0 or more and --max-idle more than 0")
    server = ReplayServer(
        args.source,
        query,
        speed,
        settle=args.settle,
        close_at_end=bool(args.close_at_end),
        max_idle=args.max_idle,
    )
    try:
        run(
            lambda: serve_until_stopped(
                server.app,
                args.host,
                args.serve,
                lambda port: f"replaying on ws://{args.host}:{port}/ws at speed {args.speed}",
            )
        )
    except OSError as exc:
        raise _listen_error(exc, "--serve", args.host, args.serve) from None
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from .runtime import run, stop_on_signals

    codes = tuple(c.strip() for c in args.codes.split(",") if c.strip())
    control_key = args.control_key or secrets.token_hex(8)
    if control_key in (args.key or ["demo"]):
        raise ConfigError("--control-key: must differ from every data key (--key)")
    for code in codes:
        problem = config_mod.check_code_entry(code)
        if problem:
            raise ConfigError(f"--codes: {problem}")
    sim = _simulator(args, codes, control_key)
    out = Path(args.config_out).resolve() if args.config_out else None

    async def go() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        async with sim.serving(args.host, args.port) as port:
            print(f"simulator listening on ws://{args.host}:{port}/ws", flush=True)
            await _announce_simulator(args.host, port, out, codes, control_key)
            await stop.wait()

    try:
        run(go)
    except OSError as exc:
        raise _listen_error(exc, "--port", args.host, args.port) from None
    if args.truth:
        sim.export_truth(args.truth)
    return 0


def _simulator(args: argparse.Namespace, codes: tuple[str, ...], control_key: str) -> Simulator:
    """The simulator ``simulate``'s options describe: its market and its faults."""
    from .sim import Faults, SimConfig, Simulator

    return Simulator(
        SimConfig(
            codes=codes,
            seed=args.seed,
            keys=tuple(args.key or ["demo"]),
            trades_per_second=args.rate,
            heartbeat_timeout=args.heartbeat_timeout,
            keep_truth=bool(args.truth),
            strict=args.strict,
            market_hours=not args.always_open,
            control_key=control_key,
        ),
        Faults(
            close_every=args.close_every,
            stall=args.stall,
            drop_rate=args.drop_rate,
            malformed_rate=args.malformed_rate,
            error_replies=args.error_replies,
            http_status=args.http_status,
            http_delay=args.http_delay,
            refuse_connections=args.refuse_connections,
        ),
    )


async def _announce_simulator(
    listen: str, port: int, out: Path | None, codes: tuple[str, ...], control_key: str
) -> None:
    """How to record from the simulator now listening: a config written to ``out`` or the
    lines to paste, and how to reach its fault switches."""
    from .demo import config_text, paste_lines

    # a wildcard address is reached on loopback from this host
    host = "127.0.0.1" if listen in ("0.0.0.0", "::", "") else listen
    host = f"[{host}]" if ":" in host else host
    ws_url, http_url = f"ws://{host}:{port}/ws", f"http://{host}:{port}"
    if out is not None:
        await asyncio.to_thread(_write_config, out, config_text(ws_url, http_url, codes))
        print(f"wrote {out}; record with:", flush=True)
        print(f"  QOS_API_KEY=demo qos-recorder run --config {out}", flush=True)
    else:
        print(paste_lines(ws_url, http_url), flush=True)
    print(
        f"fault switches: curl -X POST '{http_url}/control/outage?seconds=30"
        f"&key={control_key}' (drop, refuse, stall, errors, http, clear: README)",
        flush=True,
    )


def _listen_error(exc: OSError, flag: str, host: str, port: int) -> Exception:
    """A port that cannot be bound, as one line naming the flag that chooses another; any
    other OSError as it was."""
    if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
        return exc
    reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
    return ConfigError(
        f"{flag} {port}: cannot listen on {host}:{port}: {reason}; "
        f"choose another port with {flag} PORT (0 picks a free one)"
    )


def _write_config(out: Path, text: str) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    except OSError as exc:
        raise ConfigError(f"--config-out: cannot write {out}: {exc.strerror}") from None


def cmd_schema(args: argparse.Namespace) -> int:
    from .schema import TABLES
    from .schema_doc import markdown

    if args.questdb:
        print("\n\n".join(t.questdb_ddl() for t in TABLES))
    elif args.sqlite:
        print("\n".join(f"{s};" for t in TABLES for s in t.sqlite_ddl()))
    else:
        print(markdown(), end="")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo
    from .runtime import run

    run(lambda: demo(args.seconds, Path(args.db).resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
