"""A wheel built from this tree carries every non-Python file the package reads at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_viewer_templates_card_template_and_title_list(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT),
         "-w", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel = next(tmp_path.glob("hopforge-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    views = {p.name for p in (ROOT / "src" / "hopforge" / "viewer" / "templates").glob("*.html")}
    assert views and all(f"hopforge/viewer/templates/{v}" in names for v in views), sorted(names)
    assert "hopforge/resources/enwiki-233.titles.txt" in names
    card = [n for n in names if n.endswith("/data/share/hopforge/data_cards/dataset_card.md.j2")]
    assert card, sorted(n for n in names if not n.endswith(".py"))


def test_card_template_dir_falls_back_to_the_installed_share_dir(monkeypatch, tmp_path):
    from hopforge.publish import card

    assert (card.TEMPLATE_DIR / card.TEMPLATE_NAME).exists()  # from the source tree here
    fake_module = tmp_path / "site-packages" / "hopforge" / "publish" / "card.py"
    monkeypatch.setattr(card, "__file__", str(fake_module))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    assert card._template_dir() == tmp_path / "prefix" / "share" / "hopforge" / "data_cards"


def test_card_template_dir_finds_a_user_install(monkeypatch, tmp_path):
    import site

    from hopforge.publish import card

    user = tmp_path / "user"
    (user / "share" / "hopforge" / "data_cards").mkdir(parents=True)
    (user / "share" / "hopforge" / "data_cards" / card.TEMPLATE_NAME).write_text("card")
    monkeypatch.setattr(card, "__file__", str(tmp_path / "lib" / "hopforge" / "publish" / "card.py"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    monkeypatch.setattr(site, "getuserbase", lambda: str(user))
    assert card._template_dir() == user / "share" / "hopforge" / "data_cards"
