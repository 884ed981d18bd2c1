"""`hopforge view`: help text and the one-line error for a missing data directory."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from hopforge.cli import app


def test_view_help_names_its_options():
    res = CliRunner().invoke(app, ["view", "--help"])
    assert res.exit_code == 0
    for word in ("--out", "--port", "127.0.0.1"):
        assert word in res.output


def test_view_on_a_missing_directory_fails_before_serving(tmp_path):
    res = subprocess.run([sys.executable, "-m", "hopforge.cli", "view", "--out", str(tmp_path / "absent"),
                          "--port", "1"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "does not exist" in res.stderr and "Traceback" not in res.stderr


def test_view_with_a_missing_card_directory_fails_clearly(tmp_path):
    (tmp_path / "data").mkdir()
    res = subprocess.run([sys.executable, "-m", "hopforge.cli", "view", "--out", str(tmp_path / "data"),
                          "--card", str(tmp_path / "nope"), "--port", "1"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "--card" in res.stderr and "not a directory" in res.stderr and "Traceback" not in res.stderr
