"""Rollout fixtures: an invented wiki for the environment, teacher and engine tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.rollouts.rollout_fixtures import write_wiki


@pytest.fixture
def wiki(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    write_wiki(out)
    return out
