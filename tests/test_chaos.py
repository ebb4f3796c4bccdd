"""A short seeded chaos run: the real recorder process under random faults (long outages,
a locked database, SIGTERM and kill -9 restarts among them), reconciled with the truth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_a_short_chaos_run_leaves_no_uncovered_loss_and_no_duplicate(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "chaos.py"),
            "--minutes",
            "1.5",
            "--seed",
            "5",
            "--quiet",
            "8",
            "--settle",
            "15",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["uncovered"] == 0 and report["invented_or_duplicated"] == 0
    assert report["expected"] > 500 and report["stored"] > 0
    assert "reconciliation: PASS" in result.stdout
    faults = [line for line in result.stderr.splitlines() if line.startswith("  ")]
    assert len(faults) >= 2  # the schedule did run faults (a long outage alone lasts a minute)
