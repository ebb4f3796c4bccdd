"""The on-disk spool: order, durability boundaries, corruption, the size bound."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from recorder.batching import Batch
from recorder.exceptions import SpoolError
from recorder.spool import Spool


def _batch(i: int, rows: int = 3) -> Batch:
    return Batch(
        {
            "trades": [
                (i * 10 + r, "US:AAPL", "US", 1.5, 100.0, 1, r, "live", 7, 1, None)
                for r in range(rows)
            ]
        },
        seq=1000 + i,  # cut in the order of i
    )


def _drain(spool: Spool) -> list[Batch]:
    out: list[Batch] = []
    for path, batch, last in spool.drain():
        if batch.tables:
            out.append(batch)
        if last:
            spool.remove(path)
    return out


def test_batches_come_back_in_order_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=300)
    for i in range(20):
        spool.append(_batch(i))
    assert spool.segments > 1 and spool.total_bytes > 0
    got = _drain(spool)
    assert [b.tables for b in got] == [_batch(i).tables for i in range(20)]
    assert not spool and spool.total_bytes == 0 and list(tmp_path.glob("*.seg")) == []


def test_an_older_batch_is_drained_before_newer_ones(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    older = [_batch(i) for i in range(3)]
    newer = [_batch(i) for i in range(3, 6)]
    for batch in newer:
        spool.append(batch)
    for batch in older:  # e.g. the batch in flight when the database failed
        spool.append(batch)
    assert [b.seq for b in _drain(spool)] == [b.seq for b in older + newer]


def test_an_older_batch_inside_a_spooled_range_still_drains_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    batches = [_batch(i) for i in range(6)]
    for i in (0, 2, 4, 5):
        spool.append(batches[i])
    spool.append(batches[3])  # waited in the writer's queue while 4 and 5 overflowed
    spool.append(batches[1])
    assert [b.seq for b in _drain(spool)] == [b.seq for b in batches]
    assert not spool and list(tmp_path.glob("*.seg")) == []


def test_leftover_segments_are_found_at_start(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    for i in range(3):
        first.append(_batch(i))
    first.close()
    second = Spool(tmp_path)
    assert second.segments == 1
    second.append(_batch(3))  # new data goes to a new segment after the old ones
    assert [b.tables for b in _drain(second)] == [_batch(i).tables for i in range(4)]


def test_a_torn_tail_is_reported_not_skipped_silently(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(_batch(1))
    spool.append(_batch(2))
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    data = segment.read_bytes()
    segment.write_bytes(data[:-5])  # a crash in the middle of the last write
    again = Spool(tmp_path)
    got = _drain(again)
    assert [b.tables for b in got] == [_batch(1).tables]
    assert again.corrupt_entries == 1


def test_a_full_spool_refuses_loudly_and_keeps_the_old_data(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1000)
    kept = 0
    with pytest.raises(SpoolError, match="is full"):
        for i in range(100):
            spool.append(_batch(i))
            kept += 1
    assert 0 < kept < 100 and spool.rejected_rows == 3
    assert [b.tables for b in _drain(spool)] == [_batch(i).tables for i in range(kept)]


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_every_fsync_policy_round_trips(tmp_path: Path, policy: str) -> None:
    spool = Spool(tmp_path, fsync=policy)  # type: ignore[arg-type]
    spool.append(_batch(5))
    assert [b.tables for b in _drain(spool)] == [_batch(5).tables]


def test_an_unwritable_directory_is_a_spool_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SpoolError, match="spool"):
        Spool(blocker / "spool")


# --- #21 items 3 and 5: stray files, damaged entries, short writes ---------------------------


def test_a_stray_file_in_the_spool_directory_is_left_alone_with_a_warning(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.append(_batch(1))
    first.close()
    (tmp_path / "backup.seg").write_bytes(b"an operator's copy")
    (tmp_path / "0001.seg.bak").write_bytes(b"x")
    with structlog.testing.capture_logs() as logs:
        spool = Spool(tmp_path)
    assert [e["path"] for e in logs if e["event"] == "spool_file_ignored"] == [
        str(tmp_path / "backup.seg")
    ]
    assert [b.tables for b in _drain(spool)] == [_batch(1).tables]
    assert (tmp_path / "backup.seg").read_bytes() == b"an operator's copy"


def _entries(segment: Path) -> list[tuple[int, int]]:
    """(offset, size) of each entry of a segment."""
    data, at, out = segment.read_bytes(), 0, []
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "little")
        out.append((at, size))
        at += 8 + size
    return out


@pytest.mark.parametrize("where", ["payload", "length", "crc"])
def test_a_damaged_entry_is_skipped_counted_and_its_segment_kept_aside(
    tmp_path: Path, where: str
) -> None:
    spool = Spool(tmp_path)
    batches = [_batch(i, rows=5) for i in range(94)]
    for batch in batches:
        spool.append(batch)
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    at, size = _entries(segment)[9]
    data = bytearray(segment.read_bytes())
    offset = {"payload": at + 8 + size // 2, "length": at + 1, "crc": at + 5}[where]
    data[offset] ^= 0x10  # one flipped bit
    segment.write_bytes(bytes(data))
    again = Spool(tmp_path)
    with structlog.testing.capture_logs() as logs:
        got = _drain(again)
    assert [b.seq for b in got] == [b.seq for b in batches if b.seq != batches[9].seq]
    assert again.corrupt_entries == 1
    assert [e["event"] for e in logs] == ["spool_entry_damaged"]
    damage = again.take_damage()
    assert damage == [(batches[8].seq, 5 if where != "length" else damage[0][1])]
    assert again.lost_rows in (5, 0) and (where != "payload" or again.lost_rows == 5)
    assert not list(tmp_path.glob("*.seg")) and not again
    assert (tmp_path / (segment.name + ".damaged")).read_bytes() == bytes(data)


def test_a_torn_tail_after_good_entries_still_keeps_everything_before_it(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(5):
        spool.append(_batch(i))
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    segment.write_bytes(segment.read_bytes()[:-3])
    again = Spool(tmp_path)
    assert [b.seq for b in _drain(again)] == [_batch(i).seq for i in range(4)]
    assert again.take_damage() == [(_batch(3).seq, None)]  # its rows are unknown


_FULL_DISK = """
import os, resource, signal, sys
sys.path.insert(0, {root!r})
from recorder.batching import Batch
from recorder.exceptions import SpoolError
from recorder.spool import Spool

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
spool = Spool({dir!r}, segment_bytes=1 << 30)
kept = []
for i in range(1000):
    batch = Batch({{"trades": [(i, "US:AAPL", "US", 1.5, 100.0, 1, r, "live", 7)
                               for r in range(40)]}}, 1000 + i)
    try:
        spool.append(batch)
    except SpoolError as exc:
        print("refused", i, exc, file=sys.stderr)
        continue
    kept.append(i)
print(" ".join(map(str, kept)))
"""


def test_a_full_disk_makes_short_writes_that_are_undone_and_not_counted(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes the kernel write part of an entry and refuse the rest, as a full
    disk does: the part is cut off again and the batch is refused, not counted."""
    root = str(Path(__file__).parent.parent)
    script = _FULL_DISK.format(root=root, limit=20_000, dir=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    kept = [int(i) for i in done.stdout.split()]
    assert kept and len(kept) < 1000 and "cannot write" in done.stderr
    (segment,) = tmp_path.glob("*.seg")
    assert segment.stat().st_size <= 20_000
    spool = Spool(tmp_path)
    got = _drain(spool)
    assert [b.seq for b in got] == [1000 + i for i in kept]
    assert spool.corrupt_entries == 0  # no torn entry was left behind
