"""Fixtures of the export and card tests: a hand-built run (see export_rows.py).

Moved here from tests/storage/ with export_rows.py: only the publish tests use them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.publish.export_rows import build_run

from hopforge.config import load_config


@pytest.fixture
def run_dir(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    out = tmp_path / "data"
    return out, build_run(out)


@pytest.fixture
def make_cfg():
    def _make(out: Path, **overrides: Any):
        return load_config(None, {"run.out": str(out), **overrides})

    return _make
