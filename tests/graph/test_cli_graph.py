"""`hopforge ingest` and `hopforge graph stats` end to end (ltgwiki-tiny-8 and enwiki-tiny-70: fast)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
from typer.testing import CliRunner

from hopforge.cli import app
from hopforge.storage import read_table

from .conftest import cut_bz2, wiki_file

SRC = Path(__file__).resolve().parents[2] / "src"


def _hopforge(*args: str) -> subprocess.CompletedProcess:
    """The installed `hopforge` console script, importing this checkout's package."""
    exe = Path(sys.executable).with_name("hopforge")
    cmd = [str(exe)] if exe.exists() else [shutil.which("hopforge") or "hopforge"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, env=env)


def test_ingest_then_graph_stats(tmp_path):
    runner = CliRunner()
    dump = wiki_file("ltgwiki-tiny-8.xml.bz2")
    res = runner.invoke(app, ["ingest", str(dump), "--out", str(tmp_path), "--workers", "1"])
    assert res.exit_code == 0, res.output
    stats = orjson.loads(res.stdout)
    assert stats["dump"] == "ltgwiki-tiny-8.xml.bz2" and stats["pages"] == 2 and stats["redirects"] == 1
    res = runner.invoke(app, ["graph", "stats", "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    st = orjson.loads(res.stdout)
    assert st["nodes"] == 2 and {r["title"] for r in st["top_pagerank"]} == {"Hello", "Toronto"}


def test_ingest_bad_dump_prints_one_line_and_exits_nonzero(tmp_path):
    empty = tmp_path / "empty.xml.bz2"
    empty.write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "hopforge.cli", "ingest", str(empty), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"error: {empty}: empty file (byte offset 0); expected a MediaWiki XML dump"]


def test_ingest_truncated_dump_is_one_error_line_then_allow_truncated_finishes(tmp_path):
    cut, size, survivors = cut_bz2(wiki_file("enwiki-tiny-70.xml.bz2"), tmp_path / "cut.xml.bz2", 0.6)
    out = tmp_path / "out"
    proc = _hopforge("ingest", str(cut), "--out", str(out), "--workers", "1")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the dump ends early (truncated_dump): "), proc.stderr
    assert f"bz2 stream ends early at compressed byte {size}; last complete page: {survivors[-1]!r}" in lines[0]
    assert "--allow-truncated" in lines[0] and proc.stdout == ""

    proc = _hopforge("ingest", str(cut), "--out", str(out), "--workers", "1", "--allow-truncated")
    assert proc.returncode == 0, proc.stderr
    stats = orjson.loads(proc.stdout)
    assert stats["batches"] == stats["batches_skipped"] == 1  # the intact batch is not parsed again
    assert stats["nodes"] == read_table(out, "pages").num_rows == 4 and "Traceback" not in proc.stderr


def test_ingest_of_a_dump_without_links_between_its_pages_exits_0_naming_the_zero(tmp_path):
    """enwiki-tiny-70: 6 articles (the rest redirects), none linking to another."""
    proc = _hopforge("ingest", str(wiki_file("enwiki-tiny-70.xml.bz2")), "--out", str(tmp_path), "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    stats = orjson.loads(proc.stdout)
    assert stats["empty"] == "the graph has 0 links between its 6 pages: no walk can leave its start"
    assert (stats["pages"], stats["redirects"], stats["nodes"], stats["edges"], stats["links"]) == (6, 64, 6, 0, 0)
    assert "nothing to do: the graph has 0 links between its 6 pages" in proc.stderr
    assert "Traceback" not in proc.stderr
