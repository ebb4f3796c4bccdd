"""One recorder per spool directory and per SQLite file, with real processes (#21 item 7)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import sigterm, start_recorder, wait_for, write_config
from simulated import SimulatorThread

from recorder.sinks.sqlite import SQLiteSink

SimFactory = Callable[..., SimulatorThread]


def test_a_second_recorder_on_the_same_spool_or_database_exits_2_naming_the_first(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim(trades_per_second=5, seed=71)
    db = tmp_path / "ticks.sqlite"

    def config(name: str, spool: Path) -> Path:
        return write_config(
            tmp_path / name,
            sim,
            f'[subscribe]\ntrades = ["US:AAPL"]\n[sink]\nkind = "sqlite"\n'
            f'sqlite_path = "{db}"\n[spool]\ndir = "{spool}"\n'
            f'[log]\ndead_letter = "{tmp_path / "dead.ndjson"}"\n',
        )

    first = start_recorder(config("first.toml", tmp_path / "spool"))
    try:
        lock = tmp_path / "spool" / "recorder.lock"
        assert wait_for(
            lambda: db.exists() and lock.exists() and bool(lock.read_text().strip()), 30
        )
        assert lock.read_text().strip() == str(first.pid)
        for name, spool, held in (
            ("twin.toml", tmp_path / "spool", f"spool directory {tmp_path / 'spool'}"),
            ("other.toml", tmp_path / "spool2", f"SQLite file {db}"),
        ):
            second = start_recorder(config(name, spool))
            out, err = second.communicate(timeout=30)
            lines = err.decode().strip().splitlines()
            assert second.returncode == 2, err.decode()
            assert len(lines) == 1 and lines[0].startswith("qos-recorder: error: " + held)
            assert f"in use by another qos-recorder (pid {first.pid}" in lines[0]
            assert b"recorder_started" not in out
        # the archive job's retention opens the file beside the recorder: it does not claim
        beside = SQLiteSink(db)
        beside.open()
        assert beside.expire("trades", 0) == 0
        beside.close()
        assert first.poll() is None  # the first one records on, undisturbed
    finally:
        stopped, _ = sigterm(first)
    assert stopped["clean"] and stopped["lost_rows"] == 0
    # the lock dies with its process: the next start takes it
    again = start_recorder(config("first.toml", tmp_path / "spool"))
    assert wait_for(lambda: lock.read_text().strip() == str(again.pid), 30)
    sigterm(again)
