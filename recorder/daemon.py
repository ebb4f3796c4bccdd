"""The recorder daemon's composition root: session → ingest → batcher → writer → sink.

:class:`Recorder` builds every part from the config (the WebSocket connect, the REST
transport, the sink, the spool and the clock may be injected), owns every task and the
writer's thread in one :class:`asyncio.TaskGroup`, applies a reload, and composes the
status from the parts' snapshots. The records themselves go through
:class:`~recorder.ingest.Ingest`, the session's handler. SIGTERM and SIGINT set the stop
event; the tasks are cancelled (reading stops), the batcher hands over what it holds, and
the writer writes or spools everything within ``shutdown_timeout`` before the process
exits 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable

import structlog

from . import config as config_mod
from .backfill import Backfiller
from .batching import Batch, Batcher
from .clock import SYSTEM, Clock
from .config import Address, Config, Secret, SubscribeConfig
from .deadletter import DeadLetter
from .exceptions import ConfigError, InUseError, RecorderError, SinkIncompatible
from .feed import TRADES
from .gaps import Gap, GapCause
from .ingest import Ingest
from .lastseen import LastSeen, believable, newest
from .losses import Losses
from .markets import Calendar, is_open
from .metrics import Metrics
from .notify import Notifier
from .protocol import NS, Stream, market_of
from .reference import ReferencePoller
from .rest import RestClient, Transport
from .schema import Row, gap_of
from .serving import bound_port, serve
from .session import Connect, Target, run_upstream
from .sinks import Sink, make_sink
from .spool import Spool
from .status import Status, progress, write_runtime
from .writer import Writer

log = structlog.get_logger("recorder")


class Recorder:
    """Builds the parts, owns their tasks, reloads the config, composes the status."""

    def __init__(
        self,
        config: Config,
        key: Secret,
        sink: Sink | None = None,
        notifier: Notifier | None = None,
        on_flush: Callable[[Batch, float], None] | None = None,
        *,
        spool: Spool | None = None,
        connect: Connect | None = None,
        transport: Transport | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        """``sink``, ``spool``, the WebSocket's ``connect``, the REST ``transport``: default
        from the config and the network; ``on_flush(batch, seconds)``: each batch written."""
        self.config = config
        self.key = key
        self.clock = clock
        self.sink = sink if sink is not None else make_sink(config)
        self.spool = spool if spool is not None else _spool(config)
        self.metrics = Metrics(self.status, config.metrics)
        self._on_flush = on_flush
        self.losses = Losses(self.spool.dir / "dropped-gaps.json", key, clock.wall_ns)
        self.writer = _writer(config, self.sink, self.spool, self._flushed, self.losses, clock)
        sc = config.sink
        self.batcher = Batcher(self.writer.submit, sc.batch_rows, sc.batch_age, clock.wall_ns)
        self.dead_letter = DeadLetter(config.resolve(config.log.dead_letter))
        self.calendar = Calendar()
        self.notifier = notifier if notifier is not None else Notifier()
        self.ingest = Ingest(
            config.subscribe,
            config.gaps,
            self.batcher,
            self.dead_letter,
            self.calendar,
            clock=clock,
            on_ready=self.notifier.ready,
        )
        budget = self.spool.dir / "rest-budget.json"
        self.rest = RestClient(config.upstream, key, budget=budget, transport=transport)
        self.backfiller = Backfiller(
            self.rest,
            self.ingest.counter,
            self.batcher.add,
            self.ingest.record_gap,
            config.gaps.max_trade_backfill,
            sweep_due=self.ingest.detector.sweep_due,
            closing=self.ingest.closing,
        )
        if config.gaps.backfill:
            self.ingest.backfill = self.backfiller
        self.target = Target(config.subscribe)  # what the session subscribes; reload moves it
        self.reference = ReferencePoller(
            self.rest, lambda: self.target.sub.all_codes(), self.calendar, self.batcher.add_row
        )
        self.last_seen = LastSeen(self.spool.dir / "last-seen.json", clock.wall_ns)
        self._connect = connect
        self._reopened: list[Gap] = []
        self._reloads = 0
        self._reload_error: str | None = None  # why the last reload was refused, until one works

    def _flushed(self, batch: Batch, seconds: float) -> None:
        """The writer thread's report of an acknowledged batch."""
        self.metrics.on_flush(batch, seconds)
        if self._on_flush is not None:
            self._on_flush(batch, seconds)

    # --- reload ---------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: read the config file again. The subscriptions are applied by difference
        on the live session (its target, the ingest stage, the detector and the reference
        poller follow it); other changed settings are named as needing a restart; an
        invalid file changes nothing."""
        try:
            new = config_mod.load(self.config.path)
        except ConfigError as exc:
            self._reload_error = str(exc)
            log.error("config_reload_failed", error=str(exc), kept="the running config")
            return
        old = self.config
        self._reloads += 1
        self._reload_error = None
        restart = _changed(old, dataclasses.replace(new, subscribe=old.subscribe))
        if restart:
            log.warning("config_needs_restart", settings=restart)
        before, after = set(old.subscribe.all_codes()), set(new.subscribe.all_codes())
        self.config = dataclasses.replace(old, subscribe=new.subscribe)
        self._retarget(new.subscribe)
        now = self.clock.wall_ns()
        old_trades = old.subscribe.codes(Stream.TRADES)
        for code in new.subscribe.codes(Stream.TRADES):
            if code not in old_trades:
                self.ingest.submit(_recent_trades(code, now))
        log.info(
            "config_reloaded",
            added=sorted(after - before),
            removed=sorted(before - after),
            needs_restart=restart,
        )

    def _retarget(self, sub: SubscribeConfig) -> None:
        """Every part that follows the subscription, to ``sub``."""
        self.ingest.want(sub)
        self.ingest.detector.resubscribe(sub)
        self.target.set(sub)
        self.reference.retarget()

    # --- the parts' figures ---------------------------------------------------------

    def status(self) -> Status:
        """The recorder's state now, for ``/metrics``, ``/healthz`` and ``status``."""
        now = self.clock.wall_ns()
        return Status.of(
            self.ingest.session_snapshot(),
            self.ingest.snapshot(),
            self.ingest.detector.snapshot(),
            self.writer.snapshot(),
            self.spool.snapshot(),
            self.backfiller.snapshot(),
            self.rest.snapshot(),
            self.reference.snapshot(),
            self.losses.snapshot(),
            now=now,
            market_open={
                code: is_open(market_of(code), now, self.calendar)
                for code in self.config.subscribe.codes(Stream.TRADES)
            },
            reloads=self._reloads,
            reload_error=self._reload_error,
        )

    def _write_losses(self, force: bool = False) -> None:
        """The ``dropped`` gaps, once the writer can take them (or at shutdown)."""
        spool = self.spool
        if self.losses and (
            force or self.writer.stats.healthy or spool.total_bytes < spool.max_bytes
        ):
            self.losses.write(self.ingest.record_gap)

    async def _every_second(self) -> None:
        """Silence checks, the writer's health and the frame rate every second; the last-seen
        times every few seconds."""
        tick = 0
        every = self.config.log.progress_interval
        monotonic = self.clock.monotonic
        next_progress, last = monotonic() + every, None
        while True:
            await asyncio.sleep(1.0)
            self.ingest.detector.check()
            self._write_losses()
            self.reference.say_uncovered()
            self.ingest.sample_rate()
            tick += 1
            if tick % 5 == 0:
                seen = self.last_seen.seen(self.ingest.detector)
                await asyncio.to_thread(self.last_seen.save, seen)
            if every and monotonic() >= next_progress:
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
        detector = self.ingest.detector
        try:
            self.sink.open()
            # The database may not hold the newest rows yet (they wait in the spool), and
            # one stored far-future row must not be "the last": what was received (the
            # state file) counts too, and only times the clock allows.
            now = self.clock.wall_ns()
            last = newest(believable(self.sink.last_times(), now), self.last_seen.load())
            reopened = _readable(self.sink.open_gaps())
            anchors = self.sink.volume_anchors(self.config.subscribe.codes(Stream.TRADES))
            starts = [t for (_, table), t in last.items() if table == TRADES.table]
            starts += [g.start for g in reopened if g.feed == TRADES]
            since = max(min([now - 900 * NS, *starts]), now - 7 * 86400 * NS)
            self.ingest.counter.seed(self.sink.trade_counts(since))
        except SinkIncompatible:  # waiting cannot help: stop with its one line
            raise
        except RecorderError as exc:  # the sink is down: the spool takes over
            last = self.last_seen.load()
            log.warning("restore_from_state_file", error=str(exc), codes=len(last))
            detector.seed(last)
            self.ingest.hold_pending()
            return
        # gaps still open when the recorder stopped end with this run's subscription
        detector.seed(last, reopened, anchors)
        self.ingest.hold_pending()
        # gaps that had ended but whose backfill had not run: run it now
        self._reopened = [g for g in reopened if g.end is not None]

    async def _start(self) -> None:
        """Before anything is read or written: one recorder per spool and per database
        file; then what the sink and the state directory hold."""
        self.spool.lock()
        try:
            await asyncio.to_thread(self.sink.claim)
        except (InUseError, OSError):
            self.spool.close()
            raise
        await asyncio.to_thread(self.restore)
        await asyncio.to_thread(self.losses.reload)
        if self.ingest.backfill is not None and self._reopened:
            for gap in self._reopened:
                self.ingest.submit(gap)
            log.info("gaps_reopened", count=len(self._reopened))
        log.info(
            "recorder_started",
            sink=self.sink.name,
            codes=self.config.subscribe.all_codes(),
            spooled_segments=self.spool.segments,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Record until ``stop`` is set; then flush everything received."""
        await self._start()
        up = self.config.upstream
        try:
            async with self.rest, asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self.writer.run()),  # the thread, and its watchdog
                    tg.create_task(self.dead_letter.run()),
                    tg.create_task(
                        run_upstream(up, self.target, self.key, self.ingest, connect=self._connect)
                    ),
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
        self._write_losses(force=True)
        self.batcher.cut()
        timeout = self.config.sink.shutdown_timeout
        done = await asyncio.to_thread(self.writer.close, timeout)
        await asyncio.to_thread(self.dead_letter.close)
        seen = self.last_seen.seen(self.ingest.detector)
        await asyncio.to_thread(self.last_seen.save, seen, done)
        await asyncio.to_thread(self.losses.keep)
        written, spooled = self.writer.snapshot(), self.spool.snapshot()
        log.info(
            "recorder_stopped",
            clean=done,
            frames={stream.value: n for stream, n in self.ingest.counts.frames.items()},
            rows=written.rows_written,
            spooled_batches=written.spooled_batches,
            spool_bytes=spooled.spool_bytes,
            lost_rows=written.lost_rows,
            rejected_rows=written.rejected_rows,
            spool_damaged_entries=spooled.spool_damaged_entries,
        )


def _spool(config: Config) -> Spool:
    sp = config.spool
    return Spool(config.resolve(sp.dir), sp.max_bytes, sp.segment_bytes, sp.fsync)


def _writer(
    config: Config,
    sink: Sink,
    spool: Spool,
    on_flush: Callable[[Batch, float], None],
    losses: Losses,
    clock: Clock,
) -> Writer:
    sc = config.sink
    return Writer(
        sink,
        spool,
        sc.max_pending_batches,
        sc.retry_interval,
        on_flush=on_flush,
        # with an archive, the export job expires what the archive holds, nothing else
        retention=config.retention.days() if config.retention.archive is None else None,
        on_dropped=losses.on_dropped,
        stuck_after=sc.write_stuck_after,
        clock=clock.wall,
    )


def _recent_trades(code: str, now: int) -> Gap:
    """A code a reload added starts with its recent trades (what ``/trade`` still has)."""
    detail = "added by a reload: its recent trades"
    return Gap(now - 60 * NS, now, code, TRADES, GapCause.ADDED, now, detail=detail, record=False)


def _readable(rows: Iterable[Row]) -> list[Gap]:
    """The open gaps an earlier run left, but for a row that is not ours (logged)."""
    out = []
    for row in rows:
        try:
            out.append(gap_of(row))
        except ValueError as exc:
            log.error("gap_row_unreadable", error=str(exc))
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
