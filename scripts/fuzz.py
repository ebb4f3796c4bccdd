"""Fuzz the whole path after decode for ``--minutes``: the property of tests/test_fuzz.py
(see tests/fuzzing.py) run round after round of fresh random examples until the time is
up, against a real SQLite file and the QuestDB client flushing to the ILP receiver.
Exits 1 with hypothesis's minimal failing example when one is found."""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fuzzing import check_pipeline, streams
from hypothesis import HealthCheck, given, seed, settings

from recorder.sim.ilp import IlpServer
from recorder.sinks.questdb import QuestDBSink

ROUND = 500  # examples per round


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="how long (default 5)")
    parser.add_argument("--seed", type=int, default=None, help="first round's seed")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.minutes * 60
    rounds, examples = 0, [0]
    with IlpServer() as ilp:
        sink = QuestDBSink(ilp.conf)
        while time.monotonic() < deadline:
            round_seed = rng.randrange(2**32)
            before = examples[0]

            @seed(round_seed)
            @settings(
                max_examples=ROUND,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(frames=streams())
            def fuzz(frames: list[bytes]) -> None:
                examples[0] += 1
                check_pipeline(frames, sink, ilp)

            try:
                fuzz()
            except Exception:
                print(f"fuzz: FAILED in round {rounds + 1} (seed {round_seed})", flush=True)
                raise
            rounds += 1
            done = examples[0] - before
            print(f"fuzz: round {rounds} (seed {round_seed}): {done} inputs, ok", flush=True)
        sink.close()
    print(f"fuzz: {examples[0]} inputs in {rounds} rounds, {args.minutes:g} min: no failure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
