"""Shared fixtures: the real dumps in ../shared/wiki (skipped with a clear message where absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WIKI = (REPO / ".." / "shared" / "wiki").resolve()


def wiki_file(name: str) -> Path:
    path = WIKI / name
    if not path.exists():
        pytest.skip(f"{path} not found: the shared Wikipedia fixtures live in ../shared/wiki beside the repo")
    return path


@pytest.fixture
def enwiki_233() -> Path:
    return wiki_file("enwiki-233.xml.bz2")


@pytest.fixture
def enwiki_tiny_70() -> Path:
    return wiki_file("enwiki-tiny-70.xml.bz2")


@pytest.fixture
def ltgwiki_tiny_8() -> Path:
    return wiki_file("ltgwiki-tiny-8.xml.bz2")
