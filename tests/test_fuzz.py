"""The whole path after decode under hypothesis, briefly (``scripts/fuzz --minutes N`` runs
it for longer): see :mod:`fuzzing`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fuzzing import check_pipeline, streams
from hypothesis import given, settings

from recorder.sim.ilp import IlpServer
from recorder.sinks.questdb import QuestDBSink


@pytest.fixture(scope="module")
def questdb() -> Iterator[tuple[QuestDBSink, IlpServer]]:
    with IlpServer() as server:
        sink = QuestDBSink(server.conf)
        yield sink, server
        sink.close()


@settings(max_examples=60)
@given(frames=streams())
def test_any_frames_go_through_decode_identity_rows_and_both_sinks(
    questdb: tuple[QuestDBSink, IlpServer], frames: list[bytes]
) -> None:
    check_pipeline(frames, *questdb)
