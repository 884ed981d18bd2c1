"""Dump download (HTTP Range resume) and the Special:Export fallback, against servers on 127.0.0.1 only."""

from __future__ import annotations

import bz2
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hopforge.errors import DumpError
from hopforge.graph import run_ingest
from hopforge.graph.fetch import download
from hopforge.storage import read_table

from .conftest import make_cfg, wiki_file


class _Server:
    def __init__(self, handler):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _file_handler(data: bytes, log: list, drop_first_after: int | None):
    """Serves ``data`` with Range support; the first response is cut after ``drop_first_after`` bytes."""

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            rng = self.headers.get("Range")
            log.append(rng)
            start = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng else 0
            body = data[start:]
            self.send_response(206 if rng else 200)
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if drop_first_after is not None and len(log) == 1:
                self.wfile.write(body[:drop_first_after])
                self.wfile.flush()
                self.connection.shutdown(2)  # connection lost mid-transfer
                return
            self.wfile.write(body)

    return H


def test_download_resumes_with_http_range_after_a_dropped_connection(tmp_path):
    data = wiki_file("enwiki-tiny-70.xml.bz2").read_bytes()
    log: list = []
    with _Server(_file_handler(data, log, drop_first_after=50_000)) as base:
        path = download(f"{base}/dumps/enwiki-tiny-70.xml.bz2", tmp_path, progress=False)
    assert path.read_bytes() == data and path.name == "enwiki-tiny-70.xml.bz2"
    assert log[0] is None and log[1] == "bytes=50000-"
    assert not (tmp_path / "enwiki-tiny-70.xml.bz2.part").exists()


def test_ingest_from_url_streams_then_parses(tmp_path):
    data = wiki_file("ltgwiki-tiny-8.xml.bz2").read_bytes()
    with _Server(_file_handler(data, [], drop_first_after=None)) as base:
        cfg = make_cfg(tmp_path, f"{base}/ltgwiki-tiny-8.xml.bz2", **{"graph.workers": 1})
        run_ingest(cfg)
    assert (tmp_path / "_downloads" / "ltgwiki-tiny-8.xml.bz2").read_bytes() == data
    assert sorted(read_table(tmp_path, "pages").column("title").to_pylist()) == ["Hello", "Toronto"]


def test_download_http_error_is_a_dump_error(tmp_path):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_error(404)

    with _Server(H) as base, pytest.raises(DumpError, match="HTTP 404"):
        download(f"{base}/missing.xml.bz2", tmp_path, progress=False)


def _export_handler(dump: bytes, requests: list):
    """A Special:Export stand-in answering POST pages=... from the shared dump."""
    header = dump[: dump.find(b"<page>")]
    by_title = {}
    for m in re.finditer(rb"<page>.*?</page>", dump, re.S):
        t = re.search(rb"<title>(.*?)</title>", m.group(0)).group(1).decode()
        by_title[t] = m.group(0)

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            titles = form["pages"][0].split("\n")
            requests.append((self.path, titles, form.get("curonly")))
            body = header + b"".join(by_title[t] + b"\n" for t in titles if t in by_title) + b"</mediawiki>\n"
            self.send_response(200)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return H


def test_missing_dump_is_rebuilt_through_special_export(tmp_path, monkeypatch):
    import hopforge.graph.fetch as fetch

    monkeypatch.setattr(fetch, "EXPORT_BATCH", 2)  # several POSTs, merged into one dump
    dump = bz2.decompress(wiki_file("enwiki-tiny-70.xml.bz2").read_bytes())
    titles = ["Anarchism", "Albedo", "A", "AccessibleComputing", "No such page"]
    (tmp_path / "titles.txt").write_text("\n".join(titles) + "\n")
    requests: list = []
    with _Server(_export_handler(dump, requests)) as base:
        cfg = make_cfg(tmp_path / "out", tmp_path / "absent.xml.bz2", **{
            "graph.export_titles": str(tmp_path / "titles.txt"),
            "graph.export_url": f"{base}/wiki/Special:Export", "graph.workers": 1})
        run_ingest(cfg)
    assert [r[1] for r in requests] == [titles[0:2], titles[2:4], titles[4:5]]
    assert all(r[0] == "/wiki/Special:Export" and r[2] == ["1"] for r in requests)
    exported = list(Path(cfg.run.out, "_downloads").glob("export-*.xml"))
    assert len(exported) == 1 and exported[0].read_bytes().count(b"<mediawiki") == 1
    assert sorted(read_table(cfg.run.out, "pages").column("title").to_pylist()) == ["A", "Albedo", "Anarchism"]
    red = read_table(cfg.run.out, "redirects").to_pylist()
    assert [(r["title"], r["target"]) for r in red] == [("AccessibleComputing", "Computer accessibility")]
