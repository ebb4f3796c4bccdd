"""scripts/bench --quick keeps working; it measures, and no test asserts a speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_bench_quick_runs_every_part_and_prints_the_table() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout
    for line in (
        "| raw websockets receive (limit) |",
        "| recorder → null sink |",
        "| recorder → SQLite |",
        "| recorder → questdb client, ILP/HTTP |",
        "| naive recorder (row+flush per message) |",
        "- latency at 10,000 msgs/s",
        "- spool drain into SQLite",
        "- replay from SQLite",
    ):
        assert line in table, line
    assert "cores" in table.splitlines()[0]  # says which machine it ran on
