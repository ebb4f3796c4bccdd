"""The writer: one thread that owns the sink, and the spool behind it.

The event loop hands batches over with :meth:`Writer.submit`, which never blocks and never
touches a file: when the thread's bounded queue is full the batch goes to a second bounded
queue that a spooler thread appends to the spool (only if that one is full too, because
the disk is slower than the market, does the loop spool the batch itself). The thread writes a
batch to the sink and, when the sink does not acknowledge it, appends it to the spool and
keeps going. While anything is spooled, new batches are spooled behind it and the spool is
drained oldest first, so batches reach the database in the order they were cut (the later
version of a K-line bar stays the later). A segment is deleted only once every batch in it
was acknowledged; the dedup keys make the re-sent ones harmless.

The thread is supervised: an unexpected exception (a bug in a sink, an unreadable spool
segment, an OSError) is caught at its top, logged once with its cause, the batch in hand
is spooled (or set aside in ``rejected.ndjson`` when the exception says its data cannot
be encoded: ``ValueError``, ``TypeError``, ``ArithmeticError`` such as ``OverflowError``),
and the loop starts again after a backoff. A batch that crashes the writer
``max_crashes - 1`` times (at least twice) is set aside whatever the exception, before the
writer would give up, so no one batch (live or spooled, this run or the next) can make a
crash loop, while a sink that crashes now and then on any batch loses nothing. After
``max_crashes`` crashes without a write in between it gives up: everything queued is
spooled, ``failed`` is set, and the daemon exits non-zero so systemd restarts it. The
crash handler itself never raises: a batch that can be neither spooled
nor encoded is kept in ``rejected.ndjson`` with its odd values as text, or counted lost.

The thread is owned like a task: :meth:`Writer.run` starts it and awaits its end in the
daemon's TaskGroup (raising :class:`~recorder.exceptions.WriterFailed` there when it gave
up), and meanwhile is a watchdog: a ``sink.write`` running longer than ``stuck_after``
seconds is logged once (``sink_write_stuck``) and shown in the snapshot's
``write_stuck_seconds``.

The parts the :class:`Writer` owns: ``_Keeper`` (spool, ``rejected.ndjson`` or lost, and
the ledger told), ``_Overflow`` (the spooler thread), ``_Supervisor`` (the crash handling
above), ``_Watchdog`` (the stuck write) and ``_Retention`` (old rows, a slice at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import orjson
import structlog

from .batching import Batch
from .exceptions import (
    SinkError,
    SinkIncompatible,
    SinkRejected,
    SinkReplaced,
    SpoolError,
    WriterFailed,
)
from .sinks import EXPIRE_ROWS, Sink
from .spool import Spool

log = structlog.get_logger("recorder.writer")


#: exceptions that say a batch's data cannot be written (an int beyond 64 bits, a value of
#: the wrong type): retrying cannot help, so the batch is set aside
_BAD_DATA: Final = (ValueError, TypeError, ArithmeticError)


class _Stop:
    """The writer thread's stop signal: its own type, never written or spooled."""


_STOP: Final = _Stop()


@dataclass
class WriterStats:
    batches: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    spooled_batches: int = 0
    drained_batches: int = 0
    lost_rows: int = 0
    rejected_rows: int = 0
    last_error: str | None = None
    healthy: bool = False
    #: unexpected exceptions the supervisor caught, and the last one
    crashes: int = 0
    crash_error: str | None = None
    #: crashed and not written a batch since
    recovering: bool = False
    #: times the sink's file was deleted or replaced under it (reopened each time)
    sink_replaced: int = 0


@dataclass(frozen=True, slots=True)
class WriterSnapshot:
    """The writer's figures (names as in :class:`~recorder.status.Status`): what reached
    the database, and the state of the way there."""

    rows_written: dict[str, int]
    batches_written: int
    spooled_batches: int
    drained_batches: int
    expired_rows: int
    writer_queue: int
    sink_healthy: bool
    sink_error: str | None
    sink_failures: int
    writer_crashes: int
    writer_error: str | None
    writer_failed: bool
    write_stuck_seconds: float
    suspended_tables: dict[str, str]
    writer_recovering: bool
    #: rows lost on the way: the writer's and its spool's (damaged entries)
    lost_rows: int
    rejected_rows: int
    sink_replaced: int


class _Keeper:
    """Where a batch goes when it is not written now: the spool, ``rejected.ndjson``
    beside it, or counted lost; the ledger hears of every batch that will not reach the
    database. Used by the writer thread, the spooler thread and the event loop."""

    def __init__(
        self,
        spool: Spool,
        stats: WriterStats,
        on_dropped: Callable[[Batch, str, int | None, bool], None] | None,
    ) -> None:
        self.spool = spool
        self.stats = stats
        self._on_dropped = on_dropped
        self._counting = threading.Lock()  # stats several threads bump

    def lose(self, rows: int) -> None:
        with self._counting:
            self.stats.lost_rows += rows

    def spool_batch(self, batch: Batch, why: str) -> None:
        try:
            self.spool.append(batch)
        except SpoolError as exc:
            self.lose(len(batch))
            log.error("spool_rejected_batch", error=str(exc), rows=len(batch), why=why)
            self.dropped(batch, f"lost: the spool could not keep them ({exc})")
            return
        except _BAD_DATA as exc:  # its rows cannot even be encoded (an int beyond 64 bits)
            self.reject(batch, SinkRejected(f"it cannot be spooled: {type(exc).__name__}: {exc}"))
            return
        with self._counting:
            self.stats.spooled_batches += 1

    def damage_found(self, corrupt_before: int) -> None:
        """After a drain: damaged entries found on the way are dropped rows (the ledger
        hears), and said once."""
        for seq, rows in self.spool.take_damage():
            self.dropped(Batch({}, seq), "lost: a damaged spool entry", rows)
        if self.spool.corrupt_entries > corrupt_before:
            log.error(
                "spool_corrupt_entries",
                count=self.spool.corrupt_entries - corrupt_before,
                detail="damaged spool entries were skipped (their rows are lost); the "
                "entries after them were drained; the segment is kept as *.damaged",
            )

    def dropped(self, batch: Batch, why: str, rows: int | None = None, kept: bool = False) -> None:
        """Rows that will not reach the database: lost, or ``kept`` aside in a file. The
        ledger makes them ``dropped`` gaps. When the rows cannot be read (a damaged spool
        entry), ``batch`` is ``Batch({}, seq)`` with the seq (cut time) of the entry before
        and ``rows`` their count if known. Never raises: it runs in the crash handler too."""
        if self._on_dropped is None:
            return
        try:
            self._on_dropped(batch, why, rows, kept)
        except Exception as exc:  # the ledger must not take the writer down with it
            log.error("dropped_not_recorded", error=f"{type(exc).__name__}: {exc}")

    def reject(self, batch: Batch, exc: SinkRejected) -> None:
        """Keep a refused batch in ``rejected.ndjson`` beside the spool, loudly. Never
        raises: what cannot be kept is counted in ``lost_rows``."""
        self.stats.rejected_rows += len(batch)
        path = self.spool.dir / "rejected.ndjson"
        log.error("batch_rejected", error=str(exc), rows=len(batch), kept_in=str(path))
        try:
            line = b'{"error":' + orjson.dumps(str(exc)) + b',"batch":' + _encoded(batch) + b"}\n"
            with path.open("ab") as out:
                out.write(line)
        except Exception as err:  # OSError, or rows no encoding can carry: counted, said
            self.lose(len(batch))
            log.error("rejected_batch_lost", error=f"{type(err).__name__}: {err}", rows=len(batch))
            self.dropped(batch, f"lost: refused by the database ({exc}), not kept ({err})")
            return
        self.dropped(batch, f"set aside in {path}: {exc}", kept=True)


class _Overflow:
    """Batches the writer's queue had no room for, appended to the spool by their own
    thread (the spooler), off the event loop."""

    def __init__(self, keeper: _Keeper, maxsize: int) -> None:
        self._keeper = keeper
        self._queue: queue.Queue[Batch | _Stop] = queue.Queue(maxsize=maxsize)
        self._handed = 0  # handed over (only the event loop counts these)
        self._done = 0  # spooled or counted lost (only the spooler counts these)
        self.thread = threading.Thread(target=self._run, name="qos-spooler", daemon=True)

    @property
    def pending(self) -> bool:
        """Batches handed to the spooler and not spooled yet: nothing may overtake them."""
        return self._handed != self._done

    def put(self, batch: Batch) -> bool:
        """Hand a batch to the spooler; False when its queue is full too."""
        self._handed += 1  # first: the writer thread must see it pending at once
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            self._handed -= 1
            return False
        return True

    def _run(self) -> None:
        while not isinstance(batch := self._queue.get(), _Stop):
            try:
                self._keeper.spool_batch(batch, "writer queue full")
            except Exception as exc:  # spool_batch does not raise; if it did, count, say, go on
                self._keeper.lose(len(batch))
                log.error("overflow_not_spooled", error=repr(exc), rows=len(batch))
            finally:
                self._done += 1

    def stop(self, timeout: float, deadline: float) -> None:
        """Let the spooler finish by ``deadline``; spool what it left from here."""
        if self.thread.is_alive():
            with contextlib.suppress(queue.Full):  # a spooler stuck on a hung disk
                self._queue.put(_STOP, timeout=timeout)
            self.thread.join(max(0.0, deadline - time.monotonic()))
        while True:
            try:
                batch = self._queue.get_nowait()
            except queue.Empty:
                return
            if not isinstance(batch, _Stop):
                self._keeper.spool_batch(batch, "shutdown")
                self._done += 1


class _Watchdog:
    """The ``sink.write`` in flight, and whether it has run longer than ``stuck_after``."""

    def __init__(self, sink: Sink, stuck_after: float) -> None:
        self._sink = sink
        self.stuck_after = stuck_after
        self.batch: Batch | None = None  # the batch being written
        self._started = 0.0  # monotonic start of the write in flight
        self._reported = False

    def begin(self, batch: Batch) -> float:
        start = self._started = time.monotonic()
        self.batch = batch
        return start

    def stuck_for(self) -> float:
        """Seconds the ``sink.write`` in flight has run, once past ``stuck_after``; else 0."""
        started = self._started
        if self.batch is None or not started:
            return 0.0
        running = time.monotonic() - started
        return running if running > self.stuck_after else 0.0

    def watch(self) -> None:
        stuck = self.stuck_for()
        if stuck and not self._reported:
            self._reported = True
            log.error(
                "sink_write_stuck",
                sink=self._sink.name,
                seconds=round(stuck, 1),
                limit=self.stuck_after,
                detail="the write has not returned; new batches are queued, then spooled",
            )
        elif not stuck and self._reported:
            self._reported = False
            log.info("sink_write_unstuck", sink=self._sink.name)


class _Retention:
    """Old rows deleted a slice at a time, between batches, by the writer thread."""

    def __init__(self, sink: Sink, days: Mapping[str, float], clock: Callable[[], float]) -> None:
        self._sink = sink
        self.days = dict(days)
        self._clock = clock
        self._next = 0.0  # monotonic time of the next pass
        self.expired_rows = 0

    def due(self) -> bool:
        return bool(self.days) and time.monotonic() >= self._next

    def expire(self) -> None:
        """One slice per table with a limit; again soon while rows are left, else in a
        minute. Whole UTC days are kept."""
        now = self._clock()
        today = int(now) - int(now) % 86400
        more = False
        for table, days in self.days.items():
            before = (today - int(days) * 86400) * 1_000_000_000
            try:
                gone = self._sink.expire(table, before)
            except SinkError as exc:
                log.warning("retention_failed", table=table, error=str(exc))
                continue
            self.expired_rows += gone
            more = more or gone >= EXPIRE_ROWS
        self._next = time.monotonic() + (0.0 if more else 60.0)


class _Supervisor:
    """The writer thread's top: runs the writer's loop, keeps the batch it held when the
    loop raises, and starts it again after a backoff; a batch that keeps crashing it is
    set aside; ``max_crashes`` crashes without a write in between and it gives up."""

    def __init__(
        self,
        keeper: _Keeper,
        sink: Sink,
        max_crashes: int,
        spool_queued: Callable[[str], None],
    ) -> None:
        self._keeper = keeper
        self.stats = keeper.stats
        self.sink = sink
        self.max_crashes = max_crashes
        self._spool_queued = spool_queued
        #: set when the supervisor gave up; the daemon then stops with an error
        self.failed = threading.Event()
        #: why the writer stopped for good without crashing (a database it cannot use)
        self.fatal: SinkIncompatible | None = None
        self.in_hand: Batch | None = None  # taken off the queue, not written or spooled yet
        self.draining: Batch | None = None  # the spooled batch being written
        #: spooled batches to set aside at the next drain, and why
        self.poison: dict[int, str] = {}
        self._culprit: tuple[int, int] = (-1, 0)  # (seq, crashes) of the last crash's batch

    def run(self, loop: Callable[[], None]) -> None:
        """Run ``loop``, and restart it when it raises."""
        in_a_row = 0
        while True:
            written = self.stats.batches
            try:
                loop()
                return
            except SinkIncompatible as exc:  # retrying cannot help: the recorder stops
                log.critical("sink_incompatible", error=str(exc))
                self.fatal = exc
                batch, self.in_hand = self.in_hand, None
                if batch is not None:
                    self._keeper.spool_batch(batch, "the database cannot hold the tables")
                self._spool_queued("the database cannot hold the tables")
                self.failed.set()
                return
            except Exception as exc:  # anything: the thread must not die unnoticed
                in_a_row = 1 if self.stats.batches > written else in_a_row + 1
                try:
                    self.crashed(exc)
                except Exception as worse:  # a bug here must not kill the thread either
                    log.critical("writer_crash_handler_failed", error=repr(worse))
            if in_a_row >= self.max_crashes:
                log.critical("writer_failed", crashes=in_a_row, error=self.stats.crash_error)
                self._spool_queued("writer failed")
                self.failed.set()
                try:
                    self.sink.close()  # and let go of it (its lock file)
                except Exception as exc:  # a sink broken enough to crash may not close
                    log.error("sink_not_closed", error=repr(exc))
                return
            time.sleep(min(5.0, 0.1 * 2**in_a_row))

    def crashed(self, exc: Exception) -> None:
        """Keep the batch in hand and say once what went wrong."""
        error = f"{type(exc).__name__}: {exc}"
        self.stats.crashes += 1
        self.stats.recovering = True
        if error != self.stats.crash_error:
            log.error("writer_crashed", error=error, exc_info=exc)
        self.stats.crash_error = error
        batch, self.in_hand = self.in_hand, None
        spooled, self.draining = self.draining, None
        culprit = batch if batch is not None else spooled
        if culprit is None:
            return
        seq, crashes = self._culprit
        crashes = crashes + 1 if seq == culprit.seq else 1
        self._culprit = (culprit.seq, crashes)
        if isinstance(exc, _BAD_DATA):
            why = f"its data could not be written: {error}"
        elif crashes >= max(2, self.max_crashes - 1):
            why = f"it crashed the writer {crashes} times: {error}"
        else:
            why = ""
        if spooled is not None and why:  # the next drain sets it aside
            self.poison[spooled.seq] = why
        if batch is None:
            return
        if why:
            self._keeper.reject(batch, SinkRejected(why))
        else:
            self._keeper.spool_batch(batch, "the writer crashed while writing it")


class Writer:
    def __init__(
        self,
        sink: Sink,
        spool: Spool,
        max_pending: int = 64,
        retry_interval: float = 2.0,
        on_flush: Callable[[Batch, float], None] | None = None,
        max_crashes: int = 5,
        retention: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.time,
        on_dropped: Callable[[Batch, str, int | None, bool], None] | None = None,
        stuck_after: float = 60.0,
    ) -> None:
        """``retention``: days to keep per table; old rows go in small slices while the
        writer has nothing else to do. ``on_dropped(batch, why, rows, kept)`` hears of every
        batch whose rows will not reach the database (see :meth:`_Keeper.dropped`)."""
        self.sink = sink
        self._retention = _Retention(sink, retention or {}, clock)
        self.spool = spool
        self.retry_interval = retry_interval
        self.max_crashes = max_crashes
        self.stats = WriterStats()
        self._keeper = _Keeper(spool, self.stats, on_dropped)
        self._supervisor = _Supervisor(self._keeper, sink, max_crashes, self._spool_queued)
        #: set when the supervisor gave up; the daemon then stops with an error
        self.failed = self._supervisor.failed
        self._on_flush = on_flush
        self._queue: queue.Queue[Batch | _Stop] = queue.Queue(maxsize=max_pending)
        #: reports a sink.write running longer than ``stuck_after`` seconds
        self._watchdog = _Watchdog(sink, stuck_after)
        self._abandoned = threading.Event()
        self._next_try = 0.0
        self._thread = threading.Thread(target=self._run_supervised, name="qos-writer", daemon=True)
        self._overflow = _Overflow(self._keeper, max(256, max_pending))

    def start(self) -> None:
        self._overflow.thread.start()
        self._thread.start()

    async def run(self, period: float = 1.0) -> None:
        """The writer thread owned like a task: start it, watch it, and end with it. Every
        ``period`` seconds the watchdog looks at the ``sink.write`` in flight and reports
        one stuck longer than ``stuck_after`` (log, ``write_stuck_seconds``). When the thread
        gives up, this raises :class:`WriterFailed` into the caller's TaskGroup; when the
        task is cancelled the thread goes on until :meth:`close` stops it."""
        loop = asyncio.get_running_loop()
        ended = loop.create_future()

        def end() -> None:
            if not ended.done():
                ended.set_result(None)

        def watch_thread() -> None:
            try:
                self._run_supervised()
            finally:
                # the loop may be closed already: a thread abandoned at shutdown ends late
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(end)

        self._thread = threading.Thread(target=watch_thread, name="qos-writer", daemon=True)
        self._overflow.thread.start()
        self._thread.start()
        while not ended.done():
            await asyncio.wait([ended], timeout=period)
            self._watchdog.watch()
        if (fatal := self._supervisor.fatal) is not None:
            raise fatal
        if self.failed.is_set():
            raise WriterFailed(
                f"the writer thread crashed {self.max_crashes} times in a row "
                f"(last: {self.stats.crash_error}); what it held is spooled"
            )

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def snapshot(self) -> WriterSnapshot:
        """The figures now (read from the event loop; the thread only adds to them)."""
        st = self.stats
        return WriterSnapshot(
            rows_written=dict(st.rows),
            batches_written=st.batches,
            spooled_batches=st.spooled_batches,
            drained_batches=st.drained_batches,
            expired_rows=self._retention.expired_rows,
            writer_queue=self.pending,
            sink_healthy=st.healthy,
            sink_error=st.last_error,
            sink_failures=st.failures,
            writer_crashes=st.crashes,
            writer_error=st.crash_error if st.crashes else None,
            writer_failed=self.failed.is_set(),
            write_stuck_seconds=self._watchdog.stuck_for(),
            suspended_tables=dict(getattr(self.sink, "suspended", {})),
            writer_recovering=st.recovering,
            lost_rows=st.lost_rows + self.spool.lost_rows,
            rejected_rows=st.rejected_rows,
            sink_replaced=st.sink_replaced,
        )

    def submit(self, batch: Batch) -> None:
        """Hand a batch over; never waits on the database, never writes a file (unless
        both queues are full)."""
        try:
            self._queue.put_nowait(batch)
            return
        except queue.Full:
            pass
        if not self._overflow.put(batch):
            self._keeper.spool_batch(batch, "writer queue and overflow full")

    # --- the thread -----------------------------------------------------------------

    def _run_supervised(self) -> None:
        self._supervisor.run(self._loop)

    def _loop(self) -> None:
        if not self.stats.healthy:
            self._try_open()
        while True:
            batch: Batch | _Stop | None
            try:
                batch = self._queue.get(timeout=self._wait())
            except queue.Empty:
                batch = None
            if isinstance(batch, _Stop):
                self._finish()
                return
            if batch is not None:
                self._supervisor.in_hand = batch
                self._handle(batch)
                self._supervisor.in_hand = None
            if self.spool and not self._overflow.pending and time.monotonic() >= self._next_try:
                self._drain()  # once the overflow is in: it may hold older batches
            elif self._retention.due():
                self._retention.expire()  # a slice at a time, between batches: never the event loop

    def _wait(self) -> float:
        if not self.spool:
            return 0.5
        return max(0.01, min(0.5, self._next_try - time.monotonic()))

    def _try_open(self) -> bool:
        try:
            self.sink.open()
        except SinkError as exc:
            self._failed(exc)
            return False
        self.stats.healthy = True
        return True

    def _failed(self, exc: SinkError) -> None:
        if self.stats.healthy or self.stats.last_error != str(exc):
            log.error(
                "sink_unavailable",
                sink=self.sink.name,
                error=str(exc),
                retry_in=self.retry_interval,
            )
        self.stats.failures += 1
        self.stats.healthy = False
        self.stats.last_error = str(exc)
        self._next_try = time.monotonic() + self.retry_interval
        if isinstance(exc, SinkReplaced):  # nothing to wait for: open the path anew now
            self.stats.sink_replaced += 1
            self._next_try = time.monotonic()

    def _write(self, batch: Batch) -> bool:
        start = self._watchdog.begin(batch)
        try:
            self.sink.write(batch)
        except SinkRejected as exc:
            self._keeper.reject(batch, exc)
            return True  # handled: kept aside, and it must not block what follows
        except SinkError as exc:
            self._failed(exc)
            return False
        finally:
            self._watchdog.batch = None
        elapsed = time.monotonic() - start
        if not self.stats.healthy:
            log.info("sink_recovered", sink=self.sink.name)
        self.stats.healthy = True
        self.stats.recovering = False
        self.stats.batches += 1
        for table, rows in batch:
            self.stats.rows[table] = self.stats.rows.get(table, 0) + len(rows)
        if self._on_flush is not None:
            self._on_flush(batch, elapsed)
        return True

    def _handle(self, batch: Batch) -> None:
        if self.spool or self._overflow.pending or not self.stats.healthy:
            # keep order: nothing overtakes what is already spooled or about to be
            self._keeper.spool_batch(
                batch, "sink unavailable" if not self.stats.healthy else "spool not empty"
            )
            return
        if not self._write(batch):
            self._keeper.spool_batch(batch, "sink did not acknowledge")

    def _drain(self) -> None:
        """Write spooled segments oldest first; stop at the first failure."""
        if not self.stats.healthy and not self._try_open():
            return
        # Queued batches may be older than spooled ones (they waited while newer ones
        # overflowed to disk): spool them too, where their sequence numbers sort them.
        self._spool_queued("joining the spool")
        done, corrupt = 0, self.spool.corrupt_entries
        try:
            for path, batch, last in self.spool.drain():
                if self._abandoned.is_set():
                    return
                if batch.seq in self._supervisor.poison:
                    self._keeper.reject(batch, SinkRejected(self._supervisor.poison.pop(batch.seq)))
                else:
                    self._supervisor.draining = batch
                    written = not batch.tables or self._write(batch)
                    self._supervisor.draining = None
                    if not written:
                        # re-sending the acknowledged ones later is harmless (dedup keys)
                        log.info("spool_drain_paused", done=done)
                        return
                done += 1
                self.stats.drained_batches += 1
                if last:
                    self.spool.remove(path)
        finally:
            self._keeper.damage_found(corrupt)
        if done:
            log.info("spool_drained", batches=done)

    def _finish(self) -> None:
        """At stop: write what is queued (or spool it); leftover spool waits for next start."""
        while not self._abandoned.is_set():
            try:
                batch = self._queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(batch, _Stop):
                self._supervisor.in_hand = batch
                self._handle(batch)
                self._supervisor.in_hand = None
        self.sink.close()

    # --- the event loop side ------------------------------------------------------------

    def close(self, timeout: float) -> bool:
        """Stop the thread: write or spool everything queued within ``timeout`` seconds.

        Whatever the thread could not finish in time (the queue and the batch it was
        writing) is spooled from here, so nothing received is lost. True if it finished
        cleanly: not when it timed out, and not when the supervisor had given up.
        """
        deadline = time.monotonic() + timeout
        self._overflow.stop(timeout, deadline)  # the overflow first: it may hold older batches
        timeout = max(0.0, deadline - time.monotonic())
        if self._thread.is_alive():
            while True:
                try:
                    self._queue.put(_STOP, timeout=0.05)
                    break
                except queue.Full:
                    self._spool_queued()
            self._thread.join(timeout)
        finished = not self._thread.is_alive()
        if finished:
            self._spool_queued("writer not running")  # left by a writer that gave up
        else:
            self._abandoned.set()
            self._spool_queued()
            stuck = self._watchdog.batch
            if stuck is not None:
                self._keeper.spool_batch(stuck, "sink write still running at shutdown")
            log.error(
                "writer_shutdown_timeout",
                timeout=timeout,
                spooled_batches=self.stats.spooled_batches,
            )
        self.spool.close()
        return finished and not self.failed.is_set()

    def _spool_queued(self, why: str = "shutdown") -> None:
        while True:
            try:
                batch = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(batch, _Stop):
                self._queue.put(batch)  # the thread still has to see it
                return
            self._keeper.spool_batch(batch, why)


def _encoded(batch: Batch) -> bytes:
    """The batch as JSON; values JSON cannot carry (an int beyond 64 bits) become text."""
    try:
        return batch.to_bytes()
    except _BAD_DATA:
        tables = {
            table: [[v if _portable(v) else repr(v) for v in row] for row in rows]
            for table, rows in batch.tables.items()
        }
        return orjson.dumps({"seq": batch.seq, "tables": tables})


def _portable(value: object) -> bool:
    if type(value) is int:
        return -(2**63) <= value < 2**64
    return value is None or type(value) in (str, float, bool)
