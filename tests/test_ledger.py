"""#21, the ledger, health, the key and the session: real recorder processes against the
scripted hostile server (:mod:`hostile`), their log, database, ``/healthz`` and ``status``."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import KEY, make_config, rows, run_recorder, start_recorder, wait_for, write_config
from hostile import Answer, Hostile
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from simulated import SimulatorThread

from recorder import logs
from recorder.batching import Batch
from recorder.config import Config, Secret
from recorder.daemon import Recorder
from recorder.feed import TRADES
from recorder.protocol import NS, Stream, Trade
from recorder.report import format_gaps, read_gaps
from recorder.spool import Spool

SimFactory = Callable[..., SimulatorThread]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthz(port: int) -> tuple[int, bytes] | None:
    """``/healthz``'s status and body, or None when it does not answer within 2 s."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return None


@contextmanager
def _running(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_recorder(config, log=log)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM; the exit code, or -9 when it had to be killed after 20 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return -9


def _bar(ts: int) -> str:
    return json.dumps(
        {
            "tp": "K",
            "c": "CF:BTCUSDT",
            "o": "1",
            "cl": "1",
            "h": "1",
            "l": "1",
            "v": "1",
            "ts": ts,
            "kt": 1,
        }
    )


def test_a_kline_far_ahead_leaves_the_process_responsive(tmp_path: Path) -> None:
    port = _free_port()
    now = int(time.time())
    with Hostile() as up:
        up.frames += [_bar(now - now % 60 - 60), _bar(1741960243000)]
        config = write_config(
            tmp_path / "recorder.toml",
            up,
            f'[subscribe]\nklines = ["CF:BTCUSDT"]\n[sink]\nsqlite_path = "ticks.sqlite"\n'
            f'[metrics]\nlisten = "127.0.0.1:{port}"\n',
        )
        with _running(config, tmp_path / "log") as proc:

            def both_frames_taken() -> bool:
                answer = _healthz(port)
                health = json.loads(answer[1]) if answer is not None else {}
                taken: int = health.get("frames", {}).get("klines", 0) + health.get(
                    "decode_errors", 0
                )
                return taken >= 2

            # both bars were read (or the far one refused at decode), and it still answers
            assert wait_for(both_frames_taken, timeout=20)
            assert _healthz(port) is not None
            assert _stop(proc) == 0


# --- #21 item 8: a key a header cannot carry ---------------------------------------------

BAD_KEYS = {
    "non-ASCII": "tést-key-0123456789".encode(),
    "control": b"test-key\x01-0123456789",
    "inner newline": b"test-key\n0123456789",
}


def _key_config(tmp: Path, up: Hostile, key_file: Path, port: int) -> Path:
    path = tmp / "recorder.toml"
    path.write_text(
        f'[upstream]\nws_url = "{up.ws_url}"\nhttp_url = "{up.http_url}"\n'
        f'key_env = ""\nkey_file = "{key_file}"\n[subscribe]\ntrades = ["US:AAPL"]\n'
        f'[sink]\nsqlite_path = "ticks.sqlite"\n[metrics]\nlisten = "127.0.0.1:{port}"\n'
    )
    return path


def test_a_key_file_with_a_bom_and_a_newline_sends_the_key_alone(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_bytes(b"\xef\xbb\xbf" + KEY.encode() + b"\r\n")
    key_file.chmod(0o600)
    port = _free_port()
    with Hostile() as up:
        up.frames.append(_trade(int(time.time()) - 1))
        config = _key_config(tmp_path, up, key_file, port)
        check = subprocess.run(
            [sys.executable, "-m", "recorder", "check-config", str(config)],
            capture_output=True,
            check=False,
        )
        assert check.returncode == 0, check.stderr
        with _running(config, tmp_path / "log") as proc:
            assert wait_for(lambda: len(up.handshakes) >= 1, timeout=20)
            assert up.handshakes[0]["key"] == KEY
            assert wait_for(lambda: b'"trades":1' in (_healthz(port) or (0, b""))[1], timeout=20)
            seen = [(_healthz(port) or (0, b""))[1], _status("--config", str(config)).stdout]
            assert _stop(proc) == 0
    seen += [(tmp_path / "log").read_bytes(), (tmp_path / "ticks.sqlite").read_bytes()]
    seen += [p.read_bytes() for p in (tmp_path / "spool").iterdir() if p.is_file()]
    assert all(KEY.encode() not in text for text in seen)


@pytest.mark.parametrize("kind", sorted(BAD_KEYS))
def test_a_key_a_header_cannot_carry_is_refused_in_one_line_without_the_key(
    tmp_path: Path, kind: str
) -> None:
    raw = BAD_KEYS[kind]
    key_file = tmp_path / "key"
    key_file.write_bytes(raw + b"\n")
    key_file.chmod(0o600)
    with Hostile() as up:
        config = _key_config(tmp_path, up, key_file, _free_port())
        for command in (["check-config", str(config)], ["run", "--config", str(config)]):
            done = subprocess.run(
                [sys.executable, "-m", "recorder", *command],
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 2
            lines = done.stderr.decode().splitlines()
            assert len(lines) == 1 and "upstream.key_file" in lines[0], lines
            assert "of the key is" in lines[0]
            for part in (raw, raw.decode("utf-8", "replace").encode()):
                assert part not in done.stdout + done.stderr
        assert up.handshakes == []
    assert not (tmp_path / "ticks.sqlite").exists()


def test_an_exception_quoting_the_key_is_scrubbed_from_ledger_health_and_log(
    tmp_path: Path,
) -> None:
    # read_key refuses such a key; the Recorder is given it directly, as a defense in depth
    secret = "\ufeffleaky-key-0123456789"  # websockets refuses the BOM; aiohttp sends it
    with Hostile() as up:
        # a crypto code needs no calendar, and no backfill: nothing asks REST with the key
        config = make_config(
            up,
            tmp_path,
            ["CF:BTCUSDT"],
            subscribe={"depth": [], "snapshots": []},
            gaps={"backfill": False},
        )
        with structlog.testing.capture_logs() as logs:
            recorder = run_recorder(
                config, until=lambda r: r.status().reconnects >= 2, timeout=30, key=secret
            )
    assert recorder.status().reconnects >= 2
    _, health = recorder.status().health(config.metrics)
    details = rows(tmp_path / "ticks.sqlite", "SELECT detail FROM gaps")
    assert details and any("***" in (d or "") for (d,) in details)
    for text in (repr(logs), repr(health), repr(details), recorder.status().last_disconnect_reason):
        for form in (secret, repr(secret)[1:-1], "leaky"):
            assert form not in str(text)


@given(
    st.text(st.characters(blacklist_characters="*"), min_size=1, max_size=20),
    st.text(max_size=20),
    st.text(max_size=20),
)
def test_scrub_leaves_no_form_of_the_key(key: str, before: str, after: str) -> None:
    secret = Secret(key)
    for text in (before + key + after, f"{before}{key!r}{after}"):
        if key not in before and key not in after:
            assert key not in secret.scrub(text) and "***" in secret.scrub(text)


def test_the_log_scrubs_the_key_from_every_event() -> None:
    out = io.BytesIO()
    secret = Secret("log-leak\x02key")
    logs.configure("info", out, secret=secret)
    try:
        structlog.get_logger("t").error(
            "boom", error=f"invalid key header: {secret.reveal()}", reasons=[secret.reveal()]
        )
    finally:
        structlog.reset_defaults()
    line = out.getvalue()
    assert b"log-leak" not in line and line.count(b"***") == 2


# --- #21 item 10: every row the recorder dropped is in the ledger ------------------------


def _database_down(
    make_sim: SimFactory, tmp: Path, seed: int, **sections: dict[str, Any]
) -> tuple[Config, Path, list[str]]:
    """A busy simulator, a 40 kB spool and a database that cannot open (its folder is a
    file, ``blocker``) until the test deletes ``blocker``."""
    sim = make_sim(trades_per_second=200, seed=seed)
    codes = list(sim.sim.codes)[:2]
    blocker = tmp / "db"
    blocker.write_text("a file where the database's folder should be: the sink cannot open")
    config = make_config(
        sim,
        tmp,
        codes,
        sink={"sqlite_path": str(blocker / "ticks.sqlite"), "retry_interval": 0.2},
        spool={"max_bytes": 40_000, "segment_bytes": 20_000},
        **sections,
    )
    return config, blocker, codes


def test_rows_a_full_spool_lost_are_dropped_gaps_with_their_counts(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    config, blocker, codes = _database_down(make_sim, tmp_path, 5)

    def unblock(recorder: Recorder, elapsed: float) -> None:
        if recorder.status().lost_rows > 500 and blocker.is_file():
            blocker.unlink()  # the database comes back

    def ledger_written(recorder: Recorder) -> bool:
        return (
            not blocker.is_file()
            and recorder.status().sink_healthy
            and not recorder.status().spool_segments
            and not recorder.status().dropped_gaps_pending
        )

    recorder = run_recorder(config, until=ledger_written, during=unblock, timeout=60)
    lost = recorder.status().lost_rows
    assert lost > 500
    db = blocker / "ticks.sqlite"
    dropped = rows(
        db,
        "SELECT code, stream, status, missing, missing_unit, lost_trades, detail FROM gaps "
        "WHERE cause = 'dropped'",
    )
    assert dropped and {c for c, *_ in dropped} <= set(codes)
    assert all(s == "unrecoverable" and u == "rows" for _, _, s, _, u, _, _ in dropped)
    assert all(lt == m for _, st_, _, m, _, lt, _ in dropped if st_ == "trades")
    lost_gap_rows = (
        recorder.status().gap_rows_rewritten
    )  # lost too, then written again as they were
    assert sum(m for _, _, _, m, *_ in dropped) == lost - lost_gap_rows
    assert all("spool" in d for *_, d in dropped)
    listed = format_gaps(read_gaps(config, 0))  # what `qos-recorder gaps` prints
    assert "no gaps" not in listed and "dropped" in listed and "unrecoverable" in listed


# --- #21 item 11: the downtime gap comes from what was received, bounded by the clock ----


def _trade(ts: int, price: str = "212.5") -> str:
    return json.dumps({"tp": "T", "c": "US:AAPL", "p": price, "v": "3", "ts": ts, "d": 1})


def _downtime(db: Path) -> list[tuple[int, int | None, str]]:
    return rows(
        db,
        "SELECT ts, end_ts, status FROM gaps WHERE code = 'US:AAPL' AND stream = 'trades' "
        "AND cause = 'disconnect' AND detail LIKE 'the recorder was not running%'",
    )


def test_a_restart_onto_an_empty_database_with_a_full_spool_has_its_downtime_gap(
    tmp_path: Path,
) -> None:
    now = int(time.time())
    blocker = tmp_path / "db"
    with Hostile() as up:
        up.frames += [_trade(now - 5), _trade(now - 4)]
        down = make_config(
            up,
            tmp_path,
            ["US:AAPL"],
            subscribe={"depth": [], "snapshots": []},
            sink={"sqlite_path": str(blocker / "ticks.sqlite")},
            gaps={"backfill": False},
        )
        blocker.write_text("the database's folder is a file: the sink cannot open")
        first = run_recorder(down, until=lambda r: r.status().spool_bytes > 0, timeout=20)
        assert first.status().rows_written.get("trades", 0) == 0  # all of it waits in the spool
        blocker.unlink()
        up.frames.clear()
        second = run_recorder(
            down,
            until=lambda r: r.status().subscribed and not r.status().spool_segments,
            timeout=20,
        )
    db = blocker / "ticks.sqlite"
    assert rows(db, "SELECT count(*) FROM trades") == [(2,)]  # the spool drained
    assert second.status().rows_written.get("gaps", 0) >= 1
    ((start, end, _),) = _downtime(db)
    # from the last trade received (saved at the clean stop), not from nothing
    assert start == (now - 4) * NS
    assert end is not None and end >= start


def test_a_stored_trade_in_2099_does_not_poison_later_downtime_gaps(tmp_path: Path) -> None:
    now = int(time.time())
    with Hostile() as up:
        up.frames += [_trade(now - 5), _trade(4102444799, "1")]  # 2099-12-31 23:59:59
        config = make_config(
            up,
            tmp_path,
            ["US:AAPL"],
            subscribe={"depth": [], "snapshots": []},
            gaps={"backfill": False},
        )
        first = run_recorder(
            config, until=lambda r: r.status().rows_written.get("trades", 0) >= 2, timeout=20
        )
        assert first.status().rows_written.get("trades", 0) == 2
        up.frames.clear()
        run_recorder(config, until=lambda r: r.status().subscribed, timeout=20)
        up.frames.append(_trade(now - 3))
        third = run_recorder(
            config, until=lambda r: r.status().rows_written.get("trades", 0) >= 1, timeout=20
        )
        assert third.status().frames[Stream.TRADES] == 1
    db = tmp_path / "ticks.sqlite"
    gaps = _downtime(db)  # the second restart's gap starts where the first's did: one row
    assert gaps
    limit = (int(time.time()) + 300) * NS
    for start, end, _ in gaps:
        assert (now - 5 - 10) * NS <= start <= limit and end is not None and end <= limit


# --- #21 item 14: frames for codes never subscribed are counted and dropped --------------


def test_frames_for_codes_never_subscribed_are_counted_not_recorded(tmp_path: Path) -> None:
    now = int(time.time())
    invented = [
        json.dumps({"tp": "T", "c": f"US:FAKE{i}", "p": "1", "v": "1", "ts": now, "d": 1})
        for i in range(2000)
    ]
    with Hostile() as up:
        up.frames += [_trade(now - 1), *invented, _bar(now - now % 60)]  # bar: not subscribed
        config = make_config(up, tmp_path, ["US:AAPL"], subscribe={"depth": [], "snapshots": []})
        recorder = run_recorder(
            config,
            until=lambda r: (
                r.status().unsubscribed_frames >= 2001 and "trades" in r.status().rows_written
            ),
            timeout=20,
        )
        scraped = generate_latest(recorder.metrics.registry).decode()
    status = recorder.status()
    assert status.unsubscribed_frames == 2001
    assert set(status.last_frame) == set(status.last_trade) == {"US:AAPL"}
    assert rows(tmp_path / "ticks.sqlite", "SELECT DISTINCT code FROM trades") == [("US:AAPL",)]
    assert "FAKE" not in scraped and "BTCUSDT" not in scraped
    assert "qos_unsubscribed_frames_total 2001.0" in scraped
    assert recorder.status().health(config.metrics)[1]["unsubscribed_frames"] == 2001


# --- #21 item 9: a redirect never carries the key away -----------------------------------


def test_a_websocket_redirect_to_another_origin_is_not_followed(tmp_path: Path) -> None:
    with Hostile() as thief, Hostile() as up:
        up.ws_answer = Answer.redirect(thief.ws_url)
        config = make_config(up, tmp_path, ["US:AAPL"], subscribe={"depth": [], "snapshots": []})
        recorder = run_recorder(config, until=lambda r: r.status().reconnects >= 2, timeout=20)
        assert len(up.handshakes) >= 2 and up.handshakes[0]["key"] == KEY
        assert thief.handshakes == [] and thief.requests == [] and thief.connections == 0
    reason = recorder.status().last_disconnect_reason or ""
    assert "HTTP 307" in reason and "not followed" in reason


# --- #21 item 15: status reports the running recorder whatever the file says now ---------


def _status(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "recorder", "status", *args],
        capture_output=True,
        timeout=30,
        check=False,
    )


def test_status_reports_the_running_recorder_after_a_refused_reload(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    body = (
        'backoff_initial = 0.2\n[subscribe]\ntrades = ["US:AAPL", "CF:BTCUSDT"]\n'
        '[sink]\nsqlite_path = "ticks.sqlite"\n[spool]\ndir = "state/spool"\n'
        '[metrics]\nlisten = "127.0.0.1:0"\n'  # any free port: status reads the bound one
    )
    config = write_config(tmp_path / "recorder.toml", sim, body)
    with _running(config, tmp_path / "log") as proc:
        assert wait_for(lambda: _status("--config", str(config)).returncode == 0, timeout=30)
        config.write_text(config.read_text() + "\n[subscribe\nbroken = \n")  # a bad edit
        proc.send_signal(signal.SIGHUP)

        def reload_refused() -> bool:
            return b"config reload failed" in _status("--config", str(config)).stdout

        assert wait_for(reload_refused, timeout=20)
        done = _status("--config", str(config))
        out = done.stdout.decode()
        assert done.returncode == 0, done.stderr  # the running recorder is healthy
        assert out.startswith("status: ok") and "rows written:" in out
        assert "config file now:" in out and "not valid TOML" in out
        runtime = json.loads((tmp_path / "state" / "spool" / "recorder.json").read_bytes())
        assert runtime["pid"] == proc.pid
        by_address = _status("--listen", runtime["listen"])
        assert by_address.returncode == 0 and b"config reload failed" in by_address.stdout
        assert _stop(proc) == 0


# --- #21 item 16: an unusable spool directory is found before anything is received -------


def test_an_unusable_spool_directory_is_one_line_at_start_and_in_check_config(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    (tmp_path / "taken").write_text("a file where the spool's folder should be")
    body = '[subscribe]\ntrades = ["US:AAPL"]\n[spool]\ndir = "taken/spool"\n'
    config = write_config(tmp_path / "recorder.toml", sim, body)
    for command in (["check-config", str(config)], ["run", "--config", str(config)]):
        done = subprocess.run(
            [sys.executable, "-m", "recorder", *command],
            capture_output=True,
            timeout=60,
            check=False,
            env={**os.environ, "QOS_TEST_KEY": KEY},
        )
        lines = done.stderr.decode().splitlines()
        assert done.returncode == 2 and len(lines) == 1, lines
        assert "spool.dir" in lines[0] and "is a file, not a folder" in lines[0]
    assert sim.call(lambda: sim.sim.connections_opened) == 0  # nothing received to lose


def test_a_damaged_spool_entry_is_a_dropped_gap(tmp_path: Path) -> None:
    now = time.time_ns()
    spool = Spool(tmp_path / "spool")
    batches = [
        Batch.of(
            [Trade("US:AAPL", now - (100 - i) * NS, 1.0 + r, 1.0, 1, now) for r in range(5)],
            seq=now - (100 - i) * NS,
        )
        for i in range(20)
    ]
    for batch in batches:
        spool.append(batch)
    spool.close()
    (segment,) = (tmp_path / "spool").glob("*.seg")
    data = bytearray(segment.read_bytes())
    at = sum(8 + len(b.to_bytes()) for b in batches[:9])  # entry 9's payload
    data[at + 8 + batches[9].to_bytes().index(b"AAPL")] ^= 0x10  # one bit: A -> Q
    segment.write_bytes(bytes(data))
    with Hostile() as up:
        config = make_config(up, tmp_path, ["US:AAPL"], subscribe={"depth": [], "snapshots": []})
        recorder = run_recorder(
            config, until=lambda r: r.status().rows_written.get("gaps", 0) >= 1, timeout=20
        )
    assert recorder.status().spool_damaged_entries == 1
    db = tmp_path / "ticks.sqlite"
    assert rows(db, "SELECT count(*) FROM trades") == [(95,)]
    ((code, stream, missing, start, detail),) = rows(
        db, "SELECT code, stream, missing, ts, detail FROM gaps WHERE cause = 'dropped'"
    )
    assert (code, stream, missing, start) == ("*", "unknown", 5, batches[8].seq)
    assert "damaged spool entry" in detail


def test_dropped_gaps_a_stop_could_not_write_are_written_by_the_next_start(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    config, blocker, _ = _database_down(make_sim, tmp_path, 6, gaps={"backfill": False})
    # stopped while the database is still down and the spool full: the ledger waits in the
    # spool, or (when the spool refuses even that) in spool/dropped-gaps.json
    first = run_recorder(config, until=lambda r: r.status().lost_rows > 500, timeout=30)
    blocker.unlink()
    second = run_recorder(
        config,
        until=lambda r: (
            not r.status().spool_segments
            and not r.status().dropped_gaps_pending
            and r.status().rows_written.get("gaps", 0) > 0
        ),
        timeout=30,
    )
    assert second.status().lost_rows == 0
    dropped = rows(
        blocker / "ticks.sqlite", "SELECT sum(missing) FROM gaps WHERE cause = 'dropped'"
    )
    assert dropped == [(first.status().lost_rows - first.status().gap_rows_rewritten,)]
    assert not (tmp_path / "spool" / "dropped-gaps.json").exists()


def test_dropped_gaps_left_at_a_stop_are_kept_on_disk_for_the_next_start(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    config = make_config(sim, tmp_path, ["US:AAPL"])
    first = Recorder(config, Secret(KEY))
    first.losses.dropped.add("US:AAPL", TRADES, 5 * NS, 9 * NS, 42, "lost: the spool is full")
    first.losses.keep()  # what shutdown does after the writer stopped
    assert not first.losses and (tmp_path / "spool" / "dropped-gaps.json").exists()
    second = Recorder(config, Secret(KEY))
    second.losses.reload()  # what run does at start
    ((gap,),) = [second.losses.dropped.take()]
    assert (gap.code, gap.cause, gap.missing, gap.start, gap.end) == (
        "US:AAPL",
        "dropped",
        42,
        5 * NS,
        9 * NS,
    )
    assert not (tmp_path / "spool" / "dropped-gaps.json").exists()
