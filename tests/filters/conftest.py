"""Fixtures for the filter tests (builders live in trajectory_builders.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "data"
