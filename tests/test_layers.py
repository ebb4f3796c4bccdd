"""The layer rules of pyproject.toml hold: a new upward import or cycle fails here (only
the CLI and the demo sit above the daemon, so nothing else can import it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_import_layers_are_kept() -> None:
    linter = Path(sys.executable).parent / "lint-imports"  # installed beside this Python
    assert linter.exists(), "import-linter is a dev dependency; run ./scripts/test"
    result = subprocess.run(
        [linter, "--no-cache"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 kept, 0 broken" in result.stdout
