"""The recorder daemon: session → batcher → writer thread → sink (or spool).

One :class:`asyncio.TaskGroup` owns every task. SIGTERM and SIGINT set the stop event; the
tasks are cancelled (reading stops), the batcher hands over what it holds, and the writer
writes or spools everything within ``shutdown_timeout`` before the process exits 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from . import config as config_mod
from .backfill import Backfiller
from .batching import Batch, Batcher
from .config import Address, Config, Secret, SubscribeConfig
from .deadletter import DeadLetter
from .exceptions import ConfigError, DecodeError, InUseError, RecorderError, SinkIncompatible
from .gaps import CLOCK_SKEW, DroppedRows, Gap, GapDetector
from .identity import Ordinals, TradeCounter
from .markets import Calendar, is_open
from .metrics import Metrics
from .notify import Notifier
from .protocol import (
    NS,
    STREAMS,
    Depth,
    Kline,
    Record,
    Snapshot,
    Stream,
    Trade,
    market_of,
)
from .reference import ReferencePoller
from .rest import RestClient
from .schema import gap_of, gap_row
from .serving import bound_port, serve
from .session import KEY_REFUSED, Target, run_upstream
from .sinks import Sink, make_sink
from .spool import Spool
from .status import RateMeter, Status, progress, write_runtime
from .writer import Writer

log = structlog.get_logger("recorder")
#: how far before the last time saved a gap starts when the database cannot say (the
#: batcher and the writer's queue may have held a few seconds of rows at a crash)
LAST_SEEN_MARGIN = 10 * NS


@dataclass
class Stats:
    """Counters the session's callbacks bump on the hot path; :meth:`Recorder.status`
    copies them into a frozen :class:`~recorder.status.Status`."""

    frames: dict[Stream, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))
    decode_errors: int = 0
    #: frames for a code (or K-line type) not subscribed on their stream, dropped
    unsubscribed: int = 0
    unknown_frames: int = 0
    rejected: int = 0
    reconnects: int = 0
    connected: bool = False
    connected_since: float | None = None
    subscribed: bool = False
    heartbeat_rtt: float | None = None
    #: receive time (wall-clock ns) of the last frame per code
    last_frame: dict[str, int] = field(default_factory=dict)
    last_disconnect_reason: str | None = None
    #: why the service refuses the API key, while it does (no handshake since succeeded)
    key_refused: str | None = None
    reloads: int = 0
    #: why the last reload was refused, until one succeeds
    reload_error: str | None = None


class Recorder:
    """Wires the pieces together and implements the session's :class:`Handler`."""

    def __init__(
        self,
        config: Config,
        key: Secret,
        sink: Sink | None = None,
        notifier: Notifier | None = None,
        on_flush: Callable[[Batch, float], None] | None = None,
    ) -> None:
        self.config = config
        self.key = key
        self.stats = Stats()
        # Live k needs only the current second (10 s covers late frames and the volume
        # check's detection delay); the seconds a trades gap's backfill will merge are held
        # until it ran. Memory is this window times the distinct trades per second.
        self.counter = TradeCounter(window_s=10.0)
        self.ordinals = Ordinals(window_s=10.0)  # n of depth and snapshot rows
        self.sink = sink if sink is not None else make_sink(config)
        sc, sp = config.sink, config.spool
        self.spool = Spool(config.resolve(sp.dir), sp.max_bytes, sp.segment_bytes, sp.fsync)
        self.metrics = Metrics(self.status, config.metrics)
        self.rate = RateMeter()
        self._on_flush = on_flush
        self.writer = Writer(
            self.sink,
            self.spool,
            sc.max_pending_batches,
            sc.retry_interval,
            on_flush=self._flushed,
            # with an archive, the export job expires what the archive holds, nothing else
            retention=config.retention.days() if config.retention.archive is None else None,
            on_dropped=self._on_dropped,
            stuck_after=sc.write_stuck_after,
        )
        self.dropped = DroppedRows()
        self.batcher = Batcher(self.writer.submit, sc.batch_rows, sc.batch_age)
        self.dead_letter = DeadLetter(config.resolve(config.log.dead_letter))
        self.calendar = Calendar()
        self._uncovered_said: set[str] = set()
        self.detector = GapDetector(
            config.gaps, config.subscribe, self._on_gap, self.calendar, update=self._on_gap_opened
        )
        self.rest = RestClient(config.upstream, key, budget=self.spool.dir / "rest-budget.json")
        self._reopened: list[Gap] = []
        self.target = Target(config.subscribe)  # what the session subscribes; reload moves it
        self._want(config.subscribe)
        self._last_seen_path = self.spool.dir / "last-seen.json"
        self._dropped_path = self.spool.dir / "dropped-gaps.json"
        self.backfiller = Backfiller(
            self.rest,
            self.counter,
            self.batcher.add,
            self._update_gap,
            config.gaps.max_trade_backfill,
            sweep_due=self.detector.sweep_due,
            closing=lambda: bool(self.detector.pending) and self.stats.connected,
        )
        self.reference = ReferencePoller(
            self.rest, lambda: self.target.sub.all_codes(), self.calendar, self.batcher.add_row
        )
        self.notifier = notifier if notifier is not None else Notifier()
        self._ready = False

    def _flushed(self, batch: Batch, seconds: float) -> None:
        """The writer thread's report of an acknowledged batch."""
        self.metrics.on_flush(batch, seconds)
        if self._on_flush is not None:
            self._on_flush(batch, seconds)

    # --- Handler --------------------------------------------------------------------

    def _want(self, sub: SubscribeConfig) -> None:
        """What is recorded: per stream its codes (K-lines: (code, kt) pairs)."""
        self._trade_codes = frozenset(sub.codes(Stream.TRADES))
        self._wanted: dict[Stream, frozenset[Any]] = {
            stream: frozenset(sub.codes(stream)) for stream in STREAMS
        }
        self._wanted[Stream.KLINES] = frozenset(
            (code, kt) for code in sub.codes(Stream.KLINES) for kt in sub.kline_types
        )

    def on_record(self, record: Record) -> None:
        # the hot path: plain counters, receive times from the record, no clock calls
        stats = self.stats
        if type(record) is Trade:
            if record.code not in self._trade_codes:
                stats.unsubscribed += 1  # nothing per code: invented codes cost nothing
                return
        elif (
            (record.code, record.kt) if type(record) is Kline else record.code
        ) not in self._wanted[record.stream]:
            stats.unsubscribed += 1
            return
        stats.last_frame[record.code] = record.recv_ts
        stats.frames[record.stream] += 1
        if type(record) is Trade:
            self.counter.assign(record)
            self.batcher.add_trade(record)
            self.detector.on_trade(record)
            return
        if type(record) is Depth:
            record.n = self.ordinals.assign(record.code, record.ts, (record.bids, record.asks))
        elif type(record) is Snapshot:
            record.n = self.ordinals.assign(record.code, record.ts, (record.volume, record.last))
        self.batcher.add(record)
        self.detector.on_record(record)

    def on_decode_error(self, error: DecodeError) -> None:
        self.stats.decode_errors += 1
        self.dead_letter.keep(error, time.time_ns())
        if self.stats.decode_errors <= 10 or self.stats.decode_errors % 1000 == 0:
            log.warning(
                "decode_error",
                reason=error.reason,
                count=self.stats.decode_errors,
                dead_letter=str(self.dead_letter.path),
            )

    def on_unknown(self) -> None:
        self.stats.unknown_frames += 1

    def on_connected(self) -> None:
        self.stats.connected = True
        self.stats.connected_since = time.time()
        self.stats.subscribed = False
        self.stats.key_refused = None
        # the rate is measured over this connection only, from its first second
        self.rate.reset()
        self.rate.sample(time.monotonic(), sum(self.stats.frames.values()))

    def on_subscribed(self, stream: Stream, codes: list[str], kt: int | None) -> None:
        self.stats.subscribed = True
        self.detector.on_subscribed(stream, kt, codes)
        if not self._ready:
            self._ready = True
            self.notifier.ready()

    def on_rejected(self, what: str, msg: str) -> None:
        self.stats.rejected += 1
        if what == KEY_REFUSED:  # until a handshake succeeds
            self.stats.key_refused = msg
        log.error("request_rejected", what=what, msg=msg)

    def on_heartbeat(self, rtt: float) -> None:
        self.stats.heartbeat_rtt = rtt

    def on_disconnected(self, reason: str) -> None:
        self.stats.connected = False
        self.stats.connected_since = None
        self.stats.subscribed = False
        self.stats.reconnects += 1
        self.stats.last_disconnect_reason = reason
        self.detector.on_disconnect(reason)
        self._hold_pending()

    # --- reload ---------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: read the config file again. The subscriptions are applied by difference
        on the live session; other changed settings are named as needing a restart; an
        invalid file changes nothing."""
        try:
            new = config_mod.load(self.config.path)
        except ConfigError as exc:
            self.stats.reload_error = str(exc)
            log.error("config_reload_failed", error=str(exc), kept="the running config")
            return
        old = self.config
        self.stats.reloads += 1
        self.stats.reload_error = None
        restart = _changed(old, dataclasses.replace(new, subscribe=old.subscribe))
        if restart:
            log.warning("config_needs_restart", settings=restart)
        before, after = set(old.subscribe.all_codes()), set(new.subscribe.all_codes())
        self.config = dataclasses.replace(old, subscribe=new.subscribe)
        self._want(new.subscribe)
        self.detector.resubscribe(new.subscribe)
        self.target.set(new.subscribe)
        self.reference.retarget()
        now = time.time_ns()
        for code in new.subscribe.codes(Stream.TRADES):
            if code not in old.subscribe.codes(Stream.TRADES) and self.config.gaps.backfill:
                # a new code starts with its recent trades (what /trade still has)
                detail = "added by a reload: its recent trades"
                self.backfiller.submit(
                    Gap(
                        now - 60 * NS,
                        now,
                        code,
                        "trades",
                        "added",
                        now,
                        detail=detail,
                        record=False,
                    )
                )
        log.info(
            "config_reloaded",
            added=sorted(after - before),
            removed=sorted(before - after),
            needs_restart=restart,
        )

    # --- gaps -----------------------------------------------------------------------

    def _on_gap(self, gap: Gap) -> None:
        """A gap's end is known: record it, and backfill it."""
        self._log_gap("gap", gap)
        self._update_gap(gap)
        if self.config.gaps.backfill:
            self.backfiller.submit(gap)

    def _on_gap_opened(self, gap: Gap) -> None:
        """A gap was found while it lasts, or its row changed (its lost volume became known):
        the ledger shows it now."""
        if gap.end is None:  # found, not a later change
            self._log_gap("gap_open", gap)
        self._update_gap(gap)

    def _on_dropped(self, batch: Batch, why: str, rows: int | None, kept: bool) -> None:
        """The writer thread's report of rows that will not reach the database."""
        lost_gaps = batch.tables.get("gaps")
        data = {t: r for t, r in batch.tables.items() if t != "gaps"}
        if data:
            self.dropped.add_rows(data, why)
        elif not lost_gaps:  # unreadable rows: their times are about the batch's cut
            self.dropped.add("*", "unknown", batch.seq, batch.seq, rows, why)
        if lost_gaps and not kept:
            # lost for want of space, not for what they hold: written again as they were
            self.dropped.again(gap_of(row) for row in lost_gaps)

    def _keep_dropped(self) -> None:
        """At stop: ``dropped`` gaps the writer could not take (the spool full, the database
        down) wait in the state directory for the next start, which writes them."""
        left = self.dropped.take()
        if not left:
            return
        try:
            kept = orjson.loads(self._dropped_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            kept = []
        rows = [*(kept if isinstance(kept, list) else []), *(gap_row(g) for g in left)]
        tmp = self._dropped_path.with_suffix(".tmp")
        try:
            tmp.write_bytes(orjson.dumps(rows))
            tmp.replace(self._dropped_path)
        except OSError as exc:
            log.error("dropped_gaps_not_kept", path=str(self._dropped_path), error=str(exc))
            return
        log.warning("dropped_gaps_kept", gaps=len(left), path=str(self._dropped_path))

    def _reload_dropped(self) -> None:
        """At start: the ``dropped`` gaps the last run kept, to be written."""
        try:
            kept = orjson.loads(self._dropped_path.read_bytes())
            gaps = [gap_of(tuple(row)) for row in kept]
        except FileNotFoundError:
            return
        except (OSError, orjson.JSONDecodeError, TypeError, ValueError) as exc:
            log.error("dropped_gaps_unreadable", path=str(self._dropped_path), error=str(exc))
            return
        self.dropped.again(gaps, lost=False)
        self._dropped_path.unlink(missing_ok=True)
        log.info("dropped_gaps_reloaded", gaps=len(gaps))

    def _say_uncovered(self) -> None:
        """Once per market: its calendar does not reach today, so its hours are the
        reference table's, Monday to Friday (silence detection stays on)."""
        new = self.calendar.uncovered - self._uncovered_said
        if new:
            self._uncovered_said |= new
            log.warning(
                "calendar_does_not_cover_today",
                markets=sorted(new),
                using="the reference hours, Monday to Friday",
            )

    def _write_dropped(self, force: bool = False) -> None:
        """The ``dropped`` gaps, once the writer can take them (or at shutdown)."""
        if not self.dropped:
            return
        spool = self.spool
        if not force and not self.writer.stats.healthy and spool.total_bytes >= spool.max_bytes:
            return
        for gap in self.dropped.take():
            if gap.cause == "dropped":
                gap.detail = self.key.scrub(gap.detail or "")
                self._log_gap("gap", gap)
            self._update_gap(gap)

    def _update_gap(self, gap: Gap) -> None:
        if gap.record:
            self.batcher.add_gap(gap)

    @staticmethod
    def _log_gap(event: str, gap: Gap) -> None:
        if gap.record:
            log.warning(
                event,
                code=gap.code,
                stream=gap.stream,
                cause=gap.cause,
                start=gap.start,
                end=gap.end,
                status=gap.status,
            )

    def _hold_pending(self) -> None:
        """Disconnect gaps wait for their end; keep what their backfill will need."""
        if self.config.gaps.backfill:
            for gap in self.detector.pending.values():
                self.backfiller.hold(gap)

    def status(self) -> Status:
        """The recorder's state now, for ``/metrics``, ``/healthz`` and ``status``."""
        stats, wstats, spool = self.stats, self.writer.stats, self.spool
        det, bf = self.detector, self.backfiller
        lasting = det.open_gaps()
        now = time.time_ns()
        return Status(
            now=now,
            connected=stats.connected,
            connected_since=stats.connected_since,
            subscribed=stats.subscribed,
            last_disconnect_reason=stats.last_disconnect_reason,
            key_refused=stats.key_refused,
            reconnects=stats.reconnects,
            heartbeat_rtt=stats.heartbeat_rtt,
            frames=dict(stats.frames),
            frames_per_second=self.rate.rate(),
            frames_rate_window=self.rate.window(),
            decode_errors=stats.decode_errors,
            unsubscribed_frames=stats.unsubscribed,
            dead_letter_dropped=self.dead_letter.not_kept,
            rejected_requests=stats.rejected,
            rest_requests=self.rest.requests,
            rest_requests_by_purpose={p.value: n for p, n in self.rest.scheduler.sent.items()},
            last_frame=dict(stats.last_frame),
            last_trade=dict(det.last_trade_seen),
            market_open={
                code: is_open(market_of(code), now, self.calendar)
                for code in self.config.subscribe.codes(Stream.TRADES)
            },
            rest_budget_remaining=self.rest.limiter.remaining(),
            gap_outcomes=dict(bf.outcomes),
            rows_written=dict(wstats.rows),
            writer_queue=self.writer.pending,
            batcher_rows=len(self.batcher),
            sink_healthy=wstats.healthy,
            sink_error=wstats.last_error,
            sink_failures=wstats.failures,
            writer_crashes=wstats.crashes,
            writer_error=wstats.crash_error if wstats.crashes else None,
            writer_failed=self.writer.failed.is_set(),
            write_stuck_seconds=self.writer.stuck_for(),
            suspended_tables=dict(getattr(self.sink, "suspended", {})),
            writer_recovering=wstats.recovering,
            lost_rows=wstats.lost_rows + spool.lost_rows,
            rejected_rows=wstats.rejected_rows,
            spool_damaged_entries=spool.corrupt_entries,
            sink_replaced=wstats.sink_replaced,
            spool_bytes=spool.total_bytes,
            spool_max_bytes=spool.max_bytes,
            spool_segments=spool.segments,
            spool_rejected_rows=spool.rejected_rows,
            reloads=stats.reloads,
            reload_error=stats.reload_error,
            # still lasting, or ended and not backfilled yet
            open_gaps=len(lasting) + bf.submitted - bf.resolved,
            oldest_open_gap=min((g.detected_ts for g in lasting), default=None),
            backfilled_rows=bf.rows,
        )

    def _last_seen(self) -> dict[tuple[str, str], int]:
        """The last times written by :meth:`_save_last_seen`; unless they were saved at a
        clean stop, moved back by a margin for what was received but not yet written when
        the process ended."""
        try:
            doc = orjson.loads(self._last_seen_path.read_bytes())
            clean = isinstance(doc, dict) and doc.get("clean") is True
            saved = doc["seen"] if isinstance(doc, dict) and "seen" in doc else doc
            margin = 0 if clean else LAST_SEEN_MARGIN
            return _believable(
                {
                    (code, table): int(ts) - margin
                    for key, ts in saved.items()
                    for code, _, table in [key.partition("|")]
                }
            )
        except (OSError, orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
            return {}

    def _seen(self) -> dict[str, int]:
        """The newest exchange time per code and table (on the event loop: a snapshot)."""
        det = self.detector
        seen = {f"{code}|trades": ts for code, ts in det.last_trade.items()}
        for (code, stream), ts in det.last.items():
            key = f"{code}|{stream.partition(':')[0]}"
            seen[key] = max(ts, seen.get(key, 0))
        limit = time.time_ns() + CLOCK_SKEW
        return {key: ts for key, ts in seen.items() if ts <= limit}

    def _save_last_seen(self, seen: dict[str, int], clean: bool = False) -> None:
        """Keep :meth:`_seen` in the state directory, so a start while the database is down
        (or before the spool drained into it) still knows where the time it was away began.
        ``clean``: saved after everything received was written or spooled."""
        tmp = self._last_seen_path.with_suffix(".tmp")
        try:
            tmp.write_bytes(orjson.dumps({"clean": clean, "seen": seen}))
            tmp.replace(self._last_seen_path)
        except OSError as exc:
            log.warning("state_not_saved", path=str(self._last_seen_path), error=str(exc))

    async def _every_second(self) -> None:
        """Silence checks, the writer's health and the frame rate every second; the last-seen
        times every few seconds."""
        tick = 0
        every = self.config.log.progress_interval
        next_progress, last = time.monotonic() + every, None
        while True:
            await asyncio.sleep(1.0)
            self.detector.check()
            self._write_dropped()
            self._say_uncovered()
            self.rate.sample(time.monotonic(), sum(self.stats.frames.values()))
            tick += 1
            if tick % 5 == 0:
                await asyncio.to_thread(self._save_last_seen, self._seen())
            if every and time.monotonic() >= next_progress:
                # a routine line, so a quiet journal still shows the recorder working
                now = self.status()
                log.info("progress", **progress(now, last))
                next_progress, last = next_progress + every, now

    async def _serve_metrics(self) -> None:
        listen = self.config.metrics.listen
        if listen is None:
            return
        try:
            runner = await serve(self.metrics.app(), listen.host, listen.port)
        except OSError as exc:
            raise ConfigError(
                f"{self.config.path}: metrics.listen: cannot listen on {listen}: {exc.strerror}"
            ) from None
        bound = Address(listen.host, bound_port(runner))
        log.info("metrics_listening", address=str(bound))
        try:  # so `qos-recorder status` finds it whatever the config file says now
            await asyncio.to_thread(write_runtime, self.spool.dir, bound, self.config.path)
        except OSError as exc:
            log.warning("runtime_file_not_written", error=str(exc))
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    # --- life -----------------------------------------------------------------------

    def restore(self) -> None:
        """What the sink already holds: the newest row per code and stream (the time the
        recorder was down becomes a disconnect gap) and the trade identities since then."""
        try:
            self.sink.open()
            # The database may not hold the newest rows yet (they wait in the spool), and
            # one stored far-future row must not be "the last": what was received (the
            # state file) counts too, and only times the clock allows.
            last = _newest(_believable(self.sink.last_times()), self._last_seen())
            reopened = [gap_of(row) for row in self.sink.open_gaps()]
            anchors = self.sink.volume_anchors(self.config.subscribe.codes(Stream.TRADES))
            now = time.time_ns()
            starts = [t for (_, table), t in last.items() if table == "trades"]
            starts += [g.start for g in reopened if g.stream == "trades"]
            since = max(min([now - 900 * NS, *starts]), now - 7 * 86400 * NS)
            self.counter.seed(self.sink.trade_counts(since))
        except SinkIncompatible:  # waiting cannot help: stop with its one line
            raise
        except RecorderError as exc:  # the sink is down: the spool takes over
            last = self._last_seen()
            log.warning("restore_from_state_file", error=str(exc), codes=len(last))
            self.detector.seed(last)
            self._hold_pending()
            return
        # gaps still open when the recorder stopped end with this run's subscription
        self.detector.seed(last, reopened, anchors)
        self._hold_pending()
        # gaps that had ended but whose backfill had not run: run it now
        ended = [g for g in reopened if g.end is not None]
        self._reopened = ended if self.config.gaps.backfill else []

    async def run(self, stop: asyncio.Event) -> None:
        """Record until ``stop`` is set; then flush everything received."""
        # before anything is read or written: one recorder per spool and per database file
        self.spool.lock()
        try:
            await asyncio.to_thread(self.sink.claim)
        except (InUseError, OSError):
            self.spool.close()
            raise
        await asyncio.to_thread(self.restore)
        await asyncio.to_thread(self._reload_dropped)
        for gap in self._reopened:
            self.backfiller.submit(gap)
        if self._reopened:
            log.info("gaps_reopened", count=len(self._reopened))
        up, sub = self.config.upstream, self.config.subscribe
        log.info(
            "recorder_started",
            sink=self.sink.name,
            codes=sub.all_codes(),
            spooled_segments=self.spool.segments,
        )
        try:
            async with self.rest, asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self.writer.run()),  # the thread, and its watchdog
                    tg.create_task(self.dead_letter.run()),
                    tg.create_task(run_upstream(up, self.target, self.key, self)),
                    tg.create_task(self.batcher.run()),
                    tg.create_task(self.backfiller.run()),
                    tg.create_task(self._every_second()),
                    tg.create_task(self.notifier.keep_alive()),
                    tg.create_task(self._serve_metrics()),
                    tg.create_task(self.reference.run()),
                ]
                await stop.wait()
                for task in tasks:
                    task.cancel()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Hand over what the batcher holds and let the writer finish or spool it."""
        self.notifier.stopping()
        self._write_dropped(force=True)
        self.batcher.cut()
        timeout = self.config.sink.shutdown_timeout
        done = await asyncio.to_thread(self.writer.close, timeout)
        await asyncio.to_thread(self.dead_letter.close)
        await asyncio.to_thread(self._save_last_seen, self._seen(), done)
        await asyncio.to_thread(self._keep_dropped)
        log.info(
            "recorder_stopped",
            clean=done,
            frames={stream.value: n for stream, n in self.stats.frames.items()},
            rows=self.writer.stats.rows,
            spooled_batches=self.writer.stats.spooled_batches,
            spool_bytes=self.spool.total_bytes,
            lost_rows=self.writer.stats.lost_rows + self.spool.lost_rows,
            rejected_rows=self.writer.stats.rejected_rows,
            spool_damaged_entries=self.spool.corrupt_entries,
        )


def _believable(last: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """The last times no later than the clock allows (a ``ts`` in 2100 is not "the last")."""
    limit = time.time_ns() + CLOCK_SKEW
    return {key: ts for key, ts in last.items() if ts <= limit}


def _newest(*sources: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """Per code and table, the newest time any source knows."""
    out: dict[tuple[str, str], int] = {}
    for source in sources:
        for key, ts in source.items():
            out[key] = max(ts, out.get(key, ts))
    return out


def _changed(old: Config, new: Config) -> list[str]:
    """The settings (``section.key``) that differ between two configs."""
    out = []
    for section in dataclasses.fields(old):
        a, b = getattr(old, section.name), getattr(new, section.name)
        if section.name == "path" or a == b:
            continue
        if not dataclasses.is_dataclass(a):
            out.append(section.name)
            continue
        out += [
            f"{section.name}.{f.name}"
            for f in dataclasses.fields(a)
            if getattr(a, f.name) != getattr(b, f.name)
        ]
    return out
