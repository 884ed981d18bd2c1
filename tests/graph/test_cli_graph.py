"""`hopforge ingest` and `hopforge graph stats` end to end (ltgwiki-tiny-8: fast)."""

import orjson
from typer.testing import CliRunner

from hopforge.cli import app

from .conftest import wiki_file


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
    import subprocess
    import sys

    empty = tmp_path / "empty.xml.bz2"
    empty.write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "hopforge.cli", "ingest", str(empty), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "error:" in proc.stderr and "empty file (byte offset 0)" in proc.stderr
    assert "Traceback" not in proc.stderr
