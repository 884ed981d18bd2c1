"""Tests for hopforge.publish.card: numbers from the data, real plots, escaping, front matter."""

from __future__ import annotations

import glob
import json
import re
from pathlib import Path
from typing import Any

import datasets
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from tests.publish.export_rows import T0
from hopforge.cli import app
from hopforge.errors import StorageError
from hopforge.storage import ShardWriter
from hopforge.publish.card import dump_language, md_cell, render_card, size_category
from hopforge.publish.export import export_dataset

datasets.disable_progress_bars()


@pytest.fixture
def exported(run_dir, make_cfg, tmp_path):
    out, src = run_dir
    cfg = make_cfg(out, **{"export.validation_fraction": 0.5, "export.window_turns": 3})
    dest = tmp_path / "export"
    manifest = export_dataset(cfg, "trl", dest)
    return cfg, out, dest, manifest


def _sql(out: Path, query: str) -> list[dict[str, Any]]:
    """Run a query through the `hopforge sql` command, as a user would."""
    res = CliRunner().invoke(app, ["sql", query, "--out", str(out), "--format", "json"])
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def _table(text: str, header: str) -> list[list[str]]:
    """Rows (cells) of the Markdown table whose header line starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(header))
    rows = []
    for ln in lines[start + 2 :]:
        if not ln.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", ln.strip().strip("|"))
        rows.append([re.sub(r"\\(.)", r"\1", c.strip()) for c in cells])
    return rows


def test_card_numbers_match_hopforge_sql(exported):
    cfg, out, dest, manifest = exported
    text = render_card(cfg, dest).read_text()

    funnel = {r[0]: int(r[1]) for r in _table(text, "| stage | rows |")}
    for table in ("pages", "walks", "questions", "trajectories", "turns", "kept"):
        assert funnel[table] == _sql(out, f"SELECT count(*) AS n FROM {table}")[0]["n"], table
    assert funnel["kept"] == 4 and funnel["trajectories"] == 5  # and the data is what we built
    assert funnel["exported rows"] == sum(manifest["counts"]["samples"].values()) == 6

    rejects = {(r[0], r[1], r[2]): int(r[3]) for r in _table(text, "| stage | step | reason |")}
    want = {(r["stage"], r["step"], r["reason"]): r["n"]
            for r in _sql(out, "SELECT stage, step, reason, count(*) AS n FROM rejects GROUP BY 1, 2, 3")}
    assert rejects == want == {("filter", "answer_check", "answer_mismatch"): 1,
                               ("questions", "checks", "ambiguous_answer"): 2}

    hops = {int(r[0]): (int(r[1]), int(r[2])) for r in _table(text, "| hops | trajectories | kept |")}
    want = {r["hops"]: (r["n"], r["k"]) for r in _sql(out, """
        SELECT q.hops, count(*) AS n, count(*) FILTER (WHERE t.trajectory_id IN (SELECT trajectory_id FROM kept)) AS k
        FROM trajectories t, questions q WHERE t.question_id = q.question_id GROUP BY q.hops""")}
    assert hops == want

    turns = {int(r[0]): int(r[1]) for r in _table(text, "| turns | trajectories |")}
    want = _sql(out, "SELECT num_turns, count(*) AS n FROM trajectories t JOIN kept k USING (trajectory_id) "
                     "GROUP BY num_turns")
    assert turns == {r["num_turns"]: r["n"] for r in want}

    calls = {int(r[0]): int(r[1]) for r in _table(text, "| tool calls | trajectories |")}
    want = _sql(out, "SELECT num_tool_calls, count(*) AS n FROM trajectories t JOIN kept k USING (trajectory_id) "
                     "GROUP BY num_tool_calls")
    assert calls == {r["num_tool_calls"]: r["n"] for r in want}

    tools = {r[0]: int(r[1]) for r in _table(text, "| tool | calls |")}
    want = _sql(out, "SELECT tool_name, count(*) AS n FROM turns JOIN kept USING (trajectory_id) "
                     "WHERE role = 'assistant' GROUP BY tool_name")
    assert tools == {r["tool_name"]: r["n"] for r in want} == {"search": 6, "visit": 6, "answer": 4}

    labels = {r[0]: int(r[1]) for r in _table(text, "| label | turns |")}
    want = _sql(out, "SELECT judge_label, loss_weight IS NULL AS unlabelled, count(*) AS n FROM turns "
                     "JOIN kept USING (trajectory_id) WHERE role = 'assistant' GROUP BY ALL")
    assert labels == {("(unlabelled)" if r["unlabelled"] else r["judge_label"] or "(rules only)"): r["n"] for r in want}
    assert labels == {"essential": 12, "harmful": 1, "(unlabelled)": 3}

    (tok,) = _table(text, "| trajectories | total |")
    (want,) = _sql(out, "SELECT count(*) AS n, sum(t.tokens_in) + sum(t.tokens_out) AS total, "
                        "max(t.tokens_in + t.tokens_out) AS mx FROM trajectories t JOIN kept USING (trajectory_id)")
    assert (int(tok[0]), int(tok[1]), int(tok[6])) == (want["n"], int(want["total"]), want["mx"])

    splits = {r[0]: (int(r[1]), int(r[2])) for r in _table(text, "| split | rows | questions |")}
    assert splits == {s: (manifest["counts"]["samples"][s], manifest["counts"]["questions"][s])
                      for s in ("train", "validation")}

    (diff,) = _sql(out, "SELECT avg(solve_rate_tools) AS t FROM difficulty")
    assert f"{diff['t']:g} with tools" in text


def test_front_matter_is_valid_and_configs_load(exported):
    cfg, out, dest, manifest = exported
    text = render_card(cfg, dest).read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["license"] == "cc-by-sa-4.0"
    assert front["language"] == ["en"]  # from the dump name enwiki-233.xml.bz2
    assert "text-generation" in front["task_categories"]
    assert front["size_categories"] == ["n<1K"]
    (config,) = front["configs"]
    files = {d["split"]: d["path"] for d in config["data_files"]}
    assert set(files) == {"train", "validation"}
    for split, pattern in files.items():
        assert glob.glob(str(dest / pattern)), pattern
    ds = datasets.load_dataset("parquet", data_files={s: str(dest / p) for s, p in files.items()})
    assert {s: len(d) for s, d in ds.items()} == manifest["counts"]["samples"]


def test_plots_are_real_pngs(exported):
    cfg, out, dest, _ = exported
    text = render_card(cfg, dest).read_text()
    linked = re.findall(r"!\[[^\]]*\]\((plots/[a-z_]+\.png)\)", text)
    assert set(linked) == {f"plots/{n}.png" for n in ("hops", "turns", "tool_calls", "labels", "rejects", "tokens")}
    for rel in linked:
        path = dest / rel
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size == (640, 400)
            lo, hi = img.convert("L").getextrema()
            assert hi - lo > 100, f"{rel} is blank"  # bars/axes drawn on a white background


def test_untrusted_text_is_escaped(run_dir, make_cfg, tmp_path):
    out, _ = run_dir
    evil_q = "Which <script>alert(1)</script> city | has [a link](javascript:alert(2))?"
    evil_obs = "</pre><img src=x onerror=alert(3)> **bold**"
    kw = {"run_id": "revil", "config_hash": "evil"}
    with ShardWriter(out, "questions", **kw) as w:
        w.write({"question_id": "q0", "walk_id": "w0", "question": evil_q, "answer": "<b>X</b>", "answer_aliases": [],
                 "answer_type": "entity", "path": [], "hops": 2, "evidence": [], "answer_facts": [],
                 "composer": "template", "checks": [], "passed": True, "seed": 0})
    with ShardWriter(out, "trajectories", **kw) as w:
        w.write({"trajectory_id": "t0", "question_id": "q0", "attempt": 0, "teacher_backend": "cpu",
                 "teacher_model": "gemma-3-270m <i>", "status": "answered", "final_answer": "X", "num_turns": 3,
                 "num_tool_calls": 1, "tokens_in": 10, "tokens_out": 5, "retries": 0, "errors": 0,
                 "context_events": 0, "started_at": T0, "finished_at": T0, "wall_seconds": 1.0})
    with ShardWriter(out, "turns", **kw) as w:
        for i, (role, content) in enumerate([("user", evil_q), ("assistant", "<iframe>"), ("tool", evil_obs)]):
            w.write({"trajectory_id": "t0", "question_id": "q0", "turn_index": i, "role": role, "content": content,
                     "tool_name": "search" if role != "user" else None,
                     "tool_args": {"query": "<svg onload=1>"} if role == "assistant" else None})
    with ShardWriter(out, "kept", **kw) as w:
        w.write({"trajectory_id": "t0", "question_id": "q0", "correct": True, "f1": 1.0})
    with ShardWriter(out, "rejects", **kw) as w:
        w.write({"stage": "filter", "step": "x|<b>y</b>", "reason": "too_few_tool_calls", "row_table": "kept",
                 "row_id": "t9", "detail": ""})
    cfg = make_cfg(out)
    dest = tmp_path / "e"
    export_dataset(cfg, "trl", dest)
    text = render_card(cfg, dest).read_text()
    body = text.split("---\n", 2)[2]
    for raw in ("<script", "<img", "<iframe", "<svg", "<b>", "<i>", "</pre><"):
        assert raw not in body, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "&lt;/pre&gt;&lt;img src=x onerror=alert(3)&gt;" in body
    # the evil example sits inside one <pre> block that closes where the template closes it
    assert body.count("<pre>") == body.count("</pre>") == 2
    # table cells cannot break the table: the pipe in the step name is escaped
    assert "| filter | x\\|&lt;b&gt;y&lt;/b&gt; | too\\_few\\_tool\\_calls | 1 |" in body


def test_card_never_contains_secrets(run_dir, make_cfg, tmp_path, monkeypatch):
    out, _ = run_dir
    monkeypatch.setenv("HF_TOKEN", "hf_card_secret_789")
    cfg = make_cfg(out, **{"teacher.api_key": "sk-card-secret-000"})
    dest = tmp_path / "s"
    export_dataset(cfg, "trl", dest)
    render_card(cfg, dest)
    for f in dest.rglob("*"):
        if f.is_file():
            assert b"sk-card-secret-000" not in f.read_bytes() and b"hf_card_secret" not in f.read_bytes()


def test_card_needs_an_export_and_a_template(run_dir, make_cfg, tmp_path):
    out, _ = run_dir
    cfg = make_cfg(out)
    with pytest.raises(StorageError, match="run `hopforge export"):
        render_card(cfg, tmp_path / "nothing")
    dest = tmp_path / "d"
    export_dataset(cfg, "trl", dest)
    with pytest.raises(StorageError, match="cannot load card template"):
        render_card(cfg, dest, template_dir=tmp_path / "no-templates")
    (dest / "export_manifest.json").write_text("{not json")
    with pytest.raises(StorageError, match="unreadable export manifest"):
        render_card(cfg, dest)


def test_card_renders_when_nothing_was_kept(run_dir, make_cfg, tmp_path):
    # The CPU demo's weak teacher often keeps no trajectory; the card must still say so.
    import shutil

    out, _ = run_dir
    shutil.rmtree(out / "kept")
    cfg = make_cfg(out)
    dest = tmp_path / "export"
    export_dataset(cfg, "trl", dest)
    text = render_card(cfg, dest).read_text()
    assert "Turns per trajectory](" not in text  # no plot without data
    assert _sql(out, "SELECT count(*) AS n FROM kept") == [{"n": 0}]
    assert "| kept | 0 |" in text.replace("  ", " ")


def test_limitations_are_derived_from_the_data(exported):
    cfg, out, dest, _ = exported
    text = render_card(cfg, dest).read_text()
    section = text.split("## Known limitations")[1].split("## License")[0]
    assert "gemma-3-270m on the cpu backend" in section and "80% of trajectories passed" in section
    assert "3 assistant turns have no turn label" in section
    assert "windows" in section
    assert "Wikipedia contributors" in text and "creativecommons.org/licenses/by-sa/4.0" in text


def test_small_helpers():
    assert dump_language("enwiki-233.xml.bz2") == "en"
    assert dump_language("/x/ltgwiki-tiny-8.xml.bz2") == "ltg"
    assert dump_language("zh_yuewiki-20240101-pages-articles.xml.bz2") == "zh-yue"
    assert dump_language("dump.xml") is None
    assert [size_category(n) for n in (0, 999, 1000, 250_000)] == ["n<1K", "n<1K", "1K<n<10K", "100K<n<1M"]
    assert md_cell("a|b\n[c](d) *e*") == "a\\|b \\[c\\](d) \\*e\\*"
    assert md_cell(0.5) == "0.5" and md_cell(None) == ""


def test_cli_card(exported):
    cfg, out, dest, _ = exported
    (dest / "README.md").unlink(missing_ok=True)
    res = CliRunner().invoke(app, ["card", "--out", str(out), "--dest", str(dest)])
    assert res.exit_code == 0, res.output
    assert (dest / "README.md").read_text().startswith("---\nlicense: cc-by-sa-4.0")
