"""The on-disk spool: order, durability boundaries, corruption, the size bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from recorder.batching import Batch
from recorder.exceptions import SpoolError
from recorder.spool import Spool


def _batch(i: int, rows: int = 3) -> Batch:
    return Batch(
        {
            "trades": [
                (i * 10 + r, "US:AAPL", "US", 1.5, 100.0, 1, r, "live", 7) for r in range(rows)
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
