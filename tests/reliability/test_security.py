"""Security: the read-only SQL surface, secrets, and untrusted text from Wikipedia and the model.

Already proven elsewhere (not repeated): the SQL guard's statement list and
read_csv/read_text/glob/http refusals through ``query_arrow``
(tests/storage/test_catalog.py), COPY refused by the CLI (tests/test_cli.py), no
secrets in the export manifest or the card with hand-written rows
(tests/publish/test_export.py, test_card.py), card escaping of hand-written rows
(test_card.py::test_untrusted_text_is_escaped), page text that imitates tool calls
(tests/rollouts/test_engine.py::test_page_text_never_triggers_an_action).

Added here: every refusal through the ``hopforge sql`` CLI entry point (exit code,
one line, no file created, no TCP connection made, symlinks and ``..`` out of the
data directory); the API key from the environment *and* from the config, planted
and really sent to the teacher, appears in no file of a whole rollout -> filters ->
labels -> export -> card run nor in any log line; hostile page titles
(``../../etc/passwd``, a path to a canary directory), ``<script>``, a Jinja
template-injection payload and shell syntax in pages, questions and model output
are never executed, never become paths, and reach the card escaped; the graph
stage does the same with such titles in a dump.
"""

from __future__ import annotations

import bz2
import logging
import socket
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pytest
from aiohttp import web

from hopforge.cli import main as cli_main
from hopforge.config import load_config
from hopforge.filters import run_filters
from hopforge.labels.stage import run_labels
from hopforge.publish.card import render_card
from hopforge.publish.export import export_dataset
from hopforge.rollouts import run_rollouts
from hopforge.stage import resolve, selection_for
from hopforge.storage import ShardWriter, query_arrow, read_table, schema_for
from hopforge.testing.scripted import OraclePolicy, ScriptedServer
from hopforge.testing.stages import complete_chain

# ---------------------------------------------------------------- hopforge sql (CLI entry point)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture,
            monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """``hopforge ARGV`` through the real entry point (main(): the one-line error handler)."""
    monkeypatch.setattr(sys, "argv", ["hopforge", *argv])
    with pytest.raises(SystemExit) as exc:
        cli_main()
    code = exc.value.code if isinstance(exc.value.code, int) else (0 if exc.value.code is None else 1)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture
def sql_out(tmp_path: Path) -> Path:
    out = tmp_path / "data"
    with ShardWriter(out, "questions", run_id="r1") as w:
        w.write_many([{"question_id": f"q{i}", "question": f"Q{i}?", "answer": "A", "hops": 2} for i in range(3)])
    (tmp_path / "outside.txt").write_text("TOPSECRET outside the data dir\n")
    (out / "link.txt").symlink_to(tmp_path / "outside.txt")
    (out / "questions" / "link.parquet").symlink_to(tmp_path / "outside.txt")
    return out


@pytest.mark.parametrize("sql", [
    "ATTACH '{tmp}/attached.duckdb' AS x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "COPY (SELECT * FROM questions) TO '{tmp}/copied.csv'",
    "CREATE TABLE {tmp_name} AS SELECT 1",
    "SET allowed_directories = ['/']",
    "SET enable_external_access = true",
    "SELECT * FROM read_text('{tmp}/outside.txt')",
    "SELECT * FROM read_text('{out}/../outside.txt')",
    "SELECT * FROM read_text('{out}/link.txt')",
    "SELECT * FROM read_csv('{out}/questions/link.parquet')",
    "SELECT * FROM read_text('/proc/self/environ')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM duckdb_secrets()",
    "SELECT * FROM read_csv('http://127.0.0.1:{port}/x.csv')",
    "SELECT * FROM read_parquet('s3://bucket/x.parquet')",
    "SELECT 1; COPY questions TO '{tmp}/copied.csv'",
])
def test_hopforge_sql_cannot_write_attach_install_read_outside_or_reach_the_network(
        sql_out: Path, sql: str, capsys, monkeypatch) -> None:
    tmp = sql_out.parent
    with socket.socket() as listener:  # a real port: a connection attempt would be seen here
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0.3)
        q = sql.format(tmp=tmp, out=sql_out, port=listener.getsockname()[1], tmp_name="t_" + uuid.uuid4().hex[:6])
        before = sorted(p.relative_to(tmp) for p in tmp.rglob("*"))
        code, _, err = run_cli(["sql", "--out", str(sql_out), q], capsys, monkeypatch)
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing connected
    assert code in (1, 2), err
    assert err.startswith("error: ") and "Traceback" not in err and "TOPSECRET" not in err
    assert sorted(p.relative_to(tmp) for p in tmp.rglob("*")) == before  # nothing written anywhere


def test_hopforge_sql_still_reads_the_data(sql_out: Path, capsys, monkeypatch) -> None:
    code, out, err = run_cli(["sql", "--out", str(sql_out), "-f", "csv",
                              f"SELECT count(*) AS n FROM read_parquet('{sql_out}/questions/run=*/part-*.parquet')"],
                             capsys, monkeypatch)
    assert (code, out.split(), err) == (0, ['"n"', "3"], "")  # the guard is not a blanket refusal


# ---------------------------------------------------------------- a small hostile wiki

CANARY = f"hopforge-canary-{uuid.uuid4().hex[:8]}"
TRAVERSE = f"../../../../../../../../tmp/{CANARY}/evil"  # a title that would escape OUT if used as a path
SSTI = "{{ cycler.__init__.__globals__.os.popen('mkdir -p /tmp/" + CANARY + "-ssti').read() }}"
SHELL = f"$(mkdir -p /tmp/{CANARY}-shell); `mkdir -p /tmp/{CANARY}-tick`"
SCRIPT = "<script>alert('pwned')</script>"

PAGES = {
    "../../etc/passwd": f"The page ../../etc/passwd is an article about a file. It links to Moonfield. {SCRIPT}",
    "Moonfield": f"Moonfield is a village founded by Arla Venn. {SSTI} {SHELL}",
    TRAVERSE: f"A page whose title is a path. {SCRIPT} The founder of Moonfield was Arla Venn.",
    "Arla Venn": "Arla Venn was a surveyor who founded Moonfield.",
}
QUESTIONS = [
    {"question_id": "q-passwd", "question": f"Which surveyor founded the village in {SCRIPT} ?",
     "answer": "Arla Venn", "path": ["../../etc/passwd", "Moonfield", "Arla Venn"]},
    {"question_id": "q-traverse", "question": f"Who founded it? {SSTI}", "answer": "Arla Venn",
     "path": [TRAVERSE, "Arla Venn"]},
    {"question_id": "q-script", "question": f"What does the script say? {SHELL}", "answer": SCRIPT,
     "path": ["Moonfield", "../../etc/passwd"]},
]


def write_hostile_wiki(cfg) -> None:
    """The hostile pages and questions as the complete output of the graph, question and screen stages."""
    pages = [{"page_id": i + 1, "title": t, "ns": 0, "text": text, "lead": text} for i, (t, text) in
             enumerate(PAGES.items())]
    qs = [{**q, "hops": len(q["path"]), "passed": True, "answer_aliases": []} for q in QUESTIONS]
    complete_chain(cfg, {"graph": {"pages": pa.Table.from_pylist(pages, schema=schema_for("pages"))},
                         "questions": {"questions": pa.Table.from_pylist(qs, schema=schema_for("questions"))},
                         "screen": {}})


def canaries() -> list[Path]:
    return sorted(Path("/tmp").glob(f"{CANARY}*"))


class RecordingServer(ScriptedServer):
    """The scripted server, also recording the Authorization header of every request."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.auth: set[str] = set()

    def app(self) -> web.Application:
        app = super().app()

        @web.middleware
        async def record(request: web.Request, handler):
            self.auth.add(request.headers.get("Authorization", ""))
            return await handler(request)

        app.middlewares.append(record)
        return app


def full_run(tmp_path: Path, protocol: str = "chat", **over) -> tuple[object, Path, Path, set[str]]:
    """rollouts -> filters -> labels -> export -> card on the hostile wiki; returns (cfg, out, dest, auth seen)."""
    out = tmp_path / "out"
    settings = {"run.out": str(out), "graph.dump": "hostile-wiki.xml", "teacher.backend": "scripted",
                "teacher.model": "scripted", "teacher.protocol": protocol, "rollout.retry_base_s": 0.01,
                "rollout.request_timeout_s": 5.0, "filters.min_tool_calls": 1, **over}
    write_hostile_wiki(load_config(None, settings))
    with RecordingServer(OraclePolicy(QUESTIONS)) as server:
        cfg = load_config(None, {**settings, "teacher.base_url": server.url})
        stats = run_rollouts(cfg)
        auth = set(server.auth)
    assert stats.status == {"answered": 3}, stats
    run_filters(cfg)
    run_labels(cfg)
    dest = tmp_path / "export"
    selection = selection_for(resolve(cfg, "labels"))  # what `hopforge export --config` reads
    export_dataset(cfg, "trl", dest, selection=selection)
    render_card(cfg, dest, selection=selection)
    return cfg, out, dest, auth


# ---------------------------------------------------------------- secrets

ENV_KEY = "sk-hopforge-PLANTED-ENV-456"
CONFIG_KEY = "sk-hopforge-PLANTED-123"


@pytest.mark.parametrize("source", ["env", "config"])
def test_api_key_is_used_but_never_written_to_data_exports_cards_or_logs(
        tmp_path: Path, source: str, monkeypatch, caplog, capfd) -> None:
    monkeypatch.setenv("HOPFORGE_API_KEY", ENV_KEY)
    monkeypatch.setenv("HF_TOKEN", "hf_PLANTED_token_789")
    over = {"teacher.api_key": CONFIG_KEY} if source == "config" else {}
    caplog.set_level(logging.DEBUG)  # every hopforge/aiohttp/asyncio log line, at its most verbose
    cfg, out, dest, auth = full_run(tmp_path, **over)
    used = CONFIG_KEY if source == "config" else ENV_KEY
    assert auth == {f"Bearer {used}"}  # planted for real: the teacher sent it on every request
    planted = [k.encode() for k in (ENV_KEY, CONFIG_KEY, "hf_PLANTED_token_789")]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "README.md" for p in files) and any(p.suffix == ".parquet" for p in files)
    for p in files:
        data = p.read_bytes()
        for key in planted:
            assert key not in data, f"{key.decode()} leaked into {p}"
    captured = capfd.readouterr()
    logs = caplog.text + captured.out + captured.err + repr(cfg) + str(cfg.model_dump())
    for key in planted:
        assert key.decode() not in logs
    assert CONFIG_KEY not in cfg.model_dump_json()  # config dumps (e.g. Prefect parameters) mask it


# ---------------------------------------------------------------- untrusted text


@pytest.mark.parametrize("protocol", ["chat", "text"])
def test_hostile_titles_and_text_are_never_paths_never_executed_and_escaped_in_the_card(
        tmp_path: Path, protocol: str) -> None:
    sandbox = tmp_path / "sandbox"  # OUT and the export live here; nothing may appear beside them
    sandbox.mkdir()
    before_tmp = set(Path("/tmp").iterdir())
    assert not canaries()
    cfg, out, dest, _ = full_run(sandbox, protocol)
    assert not canaries(), "a title became a path or page/model text was executed"
    assert {p.name for p in sandbox.iterdir()} == {"out", "export"}
    # /tmp gained nothing but pytest's and hopforge's own temp dirs (none named after page text)
    new = {p.name for p in set(Path("/tmp").iterdir()) - before_tmp}
    assert not any("evil" in n or "passwd" in n or CANARY in n for n in new), new
    for p in list(out.rglob("*")) + list(dest.rglob("*")):
        assert "passwd" not in p.name and "evil" not in p.name and ".." not in p.name, p

    # the model really visited the hostile titles and saw the *wiki* page, not the host file
    visits = query_arrow(out, "SELECT tool_args.title AS t FROM turns WHERE tool_name = 'visit' "
                              "AND role = 'assistant'").column("t").to_pylist()
    assert "../../etc/passwd" in visits and TRAVERSE in visits
    obs = "\n".join(query_arrow(out, "SELECT content FROM turns WHERE role <> 'assistant'")
                    .column("content").to_pylist())
    assert "The page ../../etc/passwd is an article" in obs and "root:x:0:0" not in obs
    kept = read_table(out, "kept", columns=["question_id"]).column(0).to_pylist()
    assert set(kept) == {"q-passwd", "q-traverse", "q-script"}  # hostile text is data, judged like any other

    card = (dest / "README.md").read_text()
    body = card.split("---\n", 2)[2]
    assert "<script" not in body and "&lt;script&gt;" in body
    assert "cycler.__init__" in body  # the template payload is shown literally, never evaluated
    assert "mkdir -p /tmp/" in body  # shell syntax shown as text


def test_graph_ingest_never_uses_page_titles_as_paths(tmp_path: Path) -> None:
    from hopforge.graph import run_ingest

    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    titles = [TRAVERSE, "../../etc/passwd", "/absolute/title", "Normal page"]
    xml = ['<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">',
           "<siteinfo><sitename>W</sitename><dbname>testwiki</dbname><base>https://x/</base>"
           '<namespaces><namespace key="0" case="first-letter" /></namespaces></siteinfo>']
    from xml.sax.saxutils import escape

    for i, t in enumerate(titles, 1):
        body = escape(f"'''{t}''' links to [[Normal page]] and [[{TRAVERSE}]]. {SCRIPT} {SSTI} {SHELL}")
        xml.append(f"<page><title>{escape(t)}</title><ns>0</ns><id>{i}</id><revision><id>{i}</id>"
                   f"<timestamp>2024-01-01T00:00:00Z</timestamp><text>{body}</text></revision></page>")
    xml.append("</mediawiki>")
    dump = tmp_path / "hostile.xml.bz2"
    dump.write_bytes(bz2.compress("\n".join(xml).encode()))
    out = sandbox / "out"
    cfg = load_config(None, {"run.out": str(out), "graph.dump": str(dump), "graph.workers": 1})
    run_ingest(cfg)
    assert not canaries()
    assert [p.name for p in sandbox.iterdir()] == ["out"]
    for p in out.rglob("*"):
        assert "passwd" not in p.name and "evil" not in p.name and "absolute" not in p.name, p
    got = set(read_table(out, "pages", columns=["title"]).column(0).to_pylist())
    assert TRAVERSE in got and "../../etc/passwd" in got  # stored as data, unchanged
