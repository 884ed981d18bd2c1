"""Fixtures for the viewer tests; the rows themselves are built in viewer_rows.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from viewer_rows import write_small_run


@pytest.fixture
def small_run(tmp_path) -> Path:
    return write_small_run(tmp_path / "data")
