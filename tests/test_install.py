"""scripts/install, as root would run it, into temporary places (PREFIX, UNITS, ETC): the
virtualenv, the units pointed at it and passing ``systemd-analyze verify``, and a config
that reads the key from the credentials directory. systemd itself is not started here."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
UNITS = ("qos-recorder.service", "qos-recorder@.service", "qos-recorder-archive.service",
         "qos-recorder-archive.timer")  # fmt: skip


def _install(tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PREFIX": str(tmp / "opt"),
        "UNITS": str(tmp / "units"),
        "ETC": str(tmp / "etc"),
    }
    (tmp / "units").mkdir(exist_ok=True)
    return subprocess.run(
        [str(ROOT / "scripts" / "install")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_install_gives_a_virtualenv_verified_units_and_a_config_reading_the_credential(
    tmp_path: Path,
) -> None:
    first = _install(tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.startswith("Installed. Next:")
    executable = tmp_path / "opt" / "venv" / "bin" / "qos-recorder"
    assert executable.exists()
    for unit in UNITS:
        text = (tmp_path / "units" / unit).read_text()
        if "ExecStart" in text:  # pointed at the virtualenv it made
            assert f"ExecStart={executable} " in text, unit
    if shutil.which("systemd-analyze") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs systemd-analyze (Debian's systemd) to verify the units")
    else:
        verified = subprocess.run(
            ["systemd-analyze", "verify", *(str(tmp_path / "units" / u) for u in UNITS)],
            capture_output=True,
            text=True,
        )
        assert verified.returncode == 0 and verified.stderr == "", verified.stderr
    # the config reads the key from the credentials systemd passes (LoadCredential=)
    config = tmp_path / "etc" / "recorder.toml"
    assert 'key_file = "qos-key"' in config.read_text()
    (tmp_path / "etc" / "qos-key").write_text("the-key-0123456789\n")
    (tmp_path / "etc" / "qos-key").chmod(0o600)
    checked = subprocess.run(
        [str(executable), "check-config", str(config)],
        env={**os.environ, "CREDENTIALS_DIRECTORY": str(tmp_path / "etc")},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"{config}: OK, ")
    # a second run keeps the config the operator edited
    config.write_text(config.read_text().replace("batch_rows = 2000", "batch_rows = 1000"))
    again = _install(tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "batch_rows = 1000" in config.read_text()
