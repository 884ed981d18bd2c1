"""Tests for src/hopforge/synth/language.py and the language rules of the question stage: the dump's
siteinfo decides; the template composer refuses any language but English with one line naming the option."""

from __future__ import annotations

import pytest

from hopforge.config import load_config
from hopforge.errors import ConfigError
from hopforge.synth.language import dump_language, name_language, siteinfo_language
from hopforge.synth.questions import check_language


def test_siteinfo_language_of_the_shared_dumps(ltgwiki_tiny_8, enwiki_tiny_70):
    assert siteinfo_language(str(ltgwiki_tiny_8)) == "ltg"  # <mediawiki xml:lang="ltg">
    assert siteinfo_language(str(enwiki_tiny_70)) is None  # this export has no <siteinfo>: its name says "en"
    assert dump_language(str(enwiki_tiny_70)) == "en"
    assert dump_language(str(ltgwiki_tiny_8)) == "ltg" and dump_language(str(ltgwiki_tiny_8), "lv") == "lv"


def test_a_dump_that_is_gone_falls_back_to_its_name_then_english(tmp_path):
    assert siteinfo_language(str(tmp_path / "ltgwiki-latest.xml.bz2")) is None
    assert name_language("ltgwiki-latest.xml.bz2") == "ltg"
    assert dump_language(str(tmp_path / "ltgwiki-latest.xml.bz2")) == "ltg"
    assert dump_language("toy.xml") == "en"


def test_template_composer_refuses_a_non_english_dump_in_one_line(ltgwiki_tiny_8, tmp_path):
    cfg = load_config(None, {"run.out": str(tmp_path), "graph.dump": str(ltgwiki_tiny_8)})
    with pytest.raises(ConfigError) as e:
        check_language(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "'ltg'" in msg and "synth.composer = 'llm'" in msg and "--composer llm" in msg
    llm = load_config(None, {"run.out": str(tmp_path), "graph.dump": str(ltgwiki_tiny_8), "synth.composer": "llm"})
    assert check_language(llm) == "ltg"


# Four linked Latgalian pages under the shared dump's own <siteinfo> (ltgwiki-tiny-8 has no link between its
# two pages, so its graph is empty and the question stage skips before composing anything).
LTG_PAGES = {
    "Daugpiļs": "Daugpiļs ir leluokuo piļsāta [[Latgola|Latgolā]]. Tei atsarūn pi [[Daugova|Daugovys]].",
    "Rēzne": "Rēzne ir piļsāta [[Latgola|Latgolā]]. Nu Rēznis da [[Daugpiļs]] ir symts kilometru.",
    "Latgola": "Latgola ir Latvejis regions. Leluokuos piļsātys ir [[Daugpiļs]] i [[Rēzne]].",
    "Daugova": "Daugova ir upe. Pi Daugovys stuov [[Daugpiļs]] i cytys piļsātys.",
}


def latgalian_dump(ltgwiki_tiny_8, path):
    import bz2

    head = bz2.open(ltgwiki_tiny_8, "rb").read().decode()
    head = head[: head.index("</siteinfo>") + len("</siteinfo>")]
    pages = "".join(f"<page><title>{t}</title><ns>0</ns><id>{i + 1}</id><revision><id>{i + 10}</id>"
                    f"<timestamp>2017-01-01T00:00:00Z</timestamp><text xml:space=\"preserve\">{body}</text>"
                    f"</revision></page>" for i, (t, body) in enumerate(LTG_PAGES.items()))
    path.write_bytes(bz2.compress((head + pages + "</mediawiki>").encode()))
    return path


def test_cli_questions_on_a_latgalian_dump_refuses_with_the_option(ltgwiki_tiny_8, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import hopforge

    dump = latgalian_dump(ltgwiki_tiny_8, tmp_path / "ltgwiki-linked.xml.bz2")
    config = tmp_path / "ltg.toml"
    config.write_text(f'[run]\nout = "{tmp_path / "data"}"\n[graph]\ndump = "{dump}"\nworkers = 1\n')
    env = {**os.environ, "PYTHONPATH": str(Path(hopforge.__file__).parents[1])}

    def hopforge_cli(*args):
        return subprocess.run([sys.executable, "-m", "hopforge.cli", *args, "--config", str(config)],
                              capture_output=True, text=True, env=env)

    r = hopforge_cli("ingest")
    assert r.returncode == 0, r.stderr
    r = hopforge_cli("questions", "--n", "5")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("error: synth.composer = 'template' writes English questions only") and "'ltg'" in lines[0]
    assert "--composer llm" in lines[0]
