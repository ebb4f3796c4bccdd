"""The recorder's own losses, fed the writer's reports directly: ``dropped`` gaps with their
rows, gap rows written again as they were, and the state file across a restart."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from recorder.batching import Batch
from recorder.config import Secret
from recorder.feed import TRADES
from recorder.gaps import Gap, GapCause
from recorder.losses import Losses
from recorder.protocol import NS, Trade
from recorder.schema import gap_row, trade_row

NOW = 1_800_000_000 * NS
KEY = Secret("secret-key-0123456789")


def _losses(tmp: Path) -> tuple[Losses, list[tuple[Gap, str | None]]]:
    written: list[tuple[Gap, str | None]] = []
    losses = Losses(tmp / "dropped-gaps.json", KEY, lambda: NOW)
    return losses, written


def _trades(code: str, seconds: list[int]) -> list[tuple[object, ...]]:
    return [trade_row(Trade(code, NOW - s * NS, 1.0, 1.0, 1, NOW)) for s in seconds]


@given(
    st.dictionaries(
        st.sampled_from(("US:AAPL", "HK:700")), st.lists(st.integers(1, 50), min_size=1)
    )
)
def test_lost_rows_become_one_dropped_gap_per_code_spanning_them(
    lost: dict[str, list[int]],
) -> None:
    losses, written = _losses(Path("/nonexistent"))
    for code, seconds in lost.items():
        batch = Batch({"trades": _trades(code, seconds)}, seq=NOW)
        losses.on_dropped(batch, f"lost: the spool is full (key {KEY.reveal()})", None, False)
    assert bool(losses) == bool(lost) == losses.snapshot().dropped_gaps_pending
    losses.write(lambda gap, event: written.append((gap, event)))
    assert not losses and not losses.snapshot().dropped_gaps_pending
    gaps = {gap.code: (gap, event) for gap, event in written}
    assert gaps.keys() == lost.keys()
    for code, seconds in lost.items():
        gap, event = gaps[code]
        assert event == "gap" and (gap.cause, gap.feed.key, gap.status) == (
            "dropped",
            "trades",
            "unrecoverable",
        )
        assert (gap.start, gap.end) == (NOW - max(seconds) * NS, NOW - min(seconds) * NS)
        assert gap.missing == len(seconds) == gap.lost_trades
        assert KEY.reveal() not in (gap.detail or "") and "***" in (gap.detail or "")


def test_lost_gap_rows_are_written_again_as_they_were_and_counted(tmp_path: Path) -> None:
    losses, written = _losses(tmp_path)
    gap = Gap(NOW - 9 * NS, NOW, "US:AAPL", TRADES, GapCause.DISCONNECT, NOW, detail="closed")
    losses.on_dropped(Batch({"gaps": [gap_row(gap)]}, seq=NOW), "lost: full", 1, kept=False)
    losses.on_dropped(Batch({"gaps": [gap_row(gap)]}, seq=NOW), "rejected", 1, kept=True)
    assert losses.snapshot().gap_rows_rewritten == 1  # kept (rejected.ndjson): not again
    losses.write(lambda g, event: written.append((g, event)))
    ((again, event),) = written
    assert event is None and gap_row(again) == gap_row(gap)


def test_unreadable_rows_are_a_gap_of_unknown_code_at_the_batch_cut(tmp_path: Path) -> None:
    losses, written = _losses(tmp_path)
    losses.on_dropped(Batch({}, seq=NOW - 5 * NS), "lost: a damaged spool entry", 7, False)
    losses.write(lambda g, event: written.append((g, event)))
    ((gap, event),) = written
    assert event == "gap"  # a loss of its own, logged
    assert (gap.code, gap.feed.key, gap.start, gap.end, gap.missing) == (
        "*",
        "unknown",
        NOW - 5 * NS,
        NOW - 5 * NS,
        7,
    )


def test_gaps_left_at_stop_are_written_by_the_next_start(tmp_path: Path) -> None:
    first, _ = _losses(tmp_path)
    first.on_dropped(Batch({"trades": _trades("US:AAPL", [3, 4])}, seq=NOW), "lost", None, False)
    first.keep()
    first.keep()  # nothing left: the file stays as it was
    second, written = _losses(tmp_path)
    second.reload()
    assert not (tmp_path / "dropped-gaps.json").exists()
    second.write(lambda g, event: written.append((g, event)))
    ((gap, _),) = written
    assert (gap.code, gap.cause, gap.missing) == ("US:AAPL", "dropped", 2)
    assert second.snapshot().gap_rows_rewritten == 0  # kept at a stop, not lost
    (tmp_path / "dropped-gaps.json").write_text("{not json")
    third, written = _losses(tmp_path)
    third.reload()  # logged, nothing invented; the file stays for a person to look at
    assert not third and (tmp_path / "dropped-gaps.json").exists()
