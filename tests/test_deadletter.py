"""The dead-letter file: kept open, written from a worker thread, bounded on both sides
(#17 item 5)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from recorder.deadletter import DeadLetter
from recorder.exceptions import DecodeError


def _bad(i: int) -> DecodeError:
    return DecodeError(f"reason {i}", b'{"tp":[%d]}' % i)


def test_keep_only_buffers_and_the_run_task_writes_it_out(tmp_path: Path) -> None:
    path = tmp_path / "dead.ndjson"
    dead = DeadLetter(path)
    for i in range(3):
        dead.keep(_bad(i), recv_ts=i)
    assert not path.exists()  # nothing touched the disk on the caller's (the loop's) side

    async def main() -> None:
        task = asyncio.create_task(dead.run(period=0.01))
        for _ in range(1000):  # until written, at most 10 s
            if path.exists() and len(path.read_bytes().splitlines()) == 3:
                break
            await asyncio.wait([task], timeout=0.01)
        task.cancel()

    asyncio.run(main())
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [(x["recv_ts"], x["reason"], x["frame"]) for x in lines] == [
        (i, f"reason {i}", f'{{"tp":[{i}]}}') for i in range(3)
    ]
    dead.keep(_bad(3), recv_ts=3)
    dead.close()  # at shutdown: the rest is written
    assert len(path.read_bytes().splitlines()) == 4 and dead.not_kept == 0


def test_a_flood_is_bounded_in_memory_and_on_disk_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "dead.ndjson"
    dead = DeadLetter(path, max_bytes=2000, buffer_bytes=1000)
    for i in range(100):
        dead.keep(_bad(i), recv_ts=i)
    buffered = 100 - dead.not_kept
    assert 0 < buffered < 100  # the rest was counted, not held
    dead.flush()
    for i in range(100, 200):
        dead.keep(_bad(i), recv_ts=i)
    dead.close()
    kept = len(path.read_bytes().splitlines())
    assert path.stat().st_size <= 2000
    assert kept + dead.not_kept == 200


def test_an_unwritable_file_counts_the_frames_and_never_raises(tmp_path: Path) -> None:
    dead = DeadLetter(tmp_path / "missing-dir" / "dead.ndjson")
    dead.keep(_bad(1), recv_ts=1)
    dead.close()
    assert dead.not_kept == 1
