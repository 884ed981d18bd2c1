"""Tests for the question stage (src/hopforge/synth/questions.py, stage.py): plan, compose, commit,
resume, determinism."""

from __future__ import annotations

import pyarrow as pa
import pytest

from hopforge.stage import Batch, execute_batch, resolve
from hopforge.storage import query_arrow, read_table
from hopforge.synth import QuestionStage, run_questions
from hopforge.synth.checks import CHECK_NAMES

from .conftest import toy_config


def plan(cfg) -> list[Batch]:
    return QuestionStage().plan(resolve(cfg, "questions"))


def _sorted_rows(out, table):
    t = read_table(out, table)
    key = "question_id" if table == "questions" else "walk_id"
    return sorted(t.to_pylist(), key=lambda r: r[key])


def test_run_writes_walks_questions_and_rejects(toy_cfg):
    stats = run_questions(toy_cfg)
    out = toy_cfg.run.out
    qs = read_table(out, "questions").to_pylist()
    assert stats.questions == len(qs) == 20
    assert {r["hops"] for r in qs} == {2, 3}
    walks = {r["walk_id"]: r for r in read_table(out, "walks").to_pylist()}
    assert len(walks) == 20
    for q in qs:
        w = walks[q["walk_id"]]
        assert q["path"] == w["path"] and len(q["path"]) == q["hops"] + 1 and len(set(q["path"])) == len(q["path"])
        assert [e["hop"] for e in q["evidence"]] == list(range(1, q["hops"] + 1))
        assert all(e["sentence"] and e["anchor"] in e["sentence"] for e in q["evidence"])
        assert "links" not in q["question"]
        assert q["answer"] == q["path"][-1] and q["answer_aliases"][0] == q["answer"]
        assert [c["name"] for c in q["checks"]] == list(CHECK_NAMES)
        assert q["passed"] == all(c["passed"] for c in q["checks"])
        assert not any(a.casefold() in q["question"].casefold() for a in q["answer_aliases"] if len(a) > 3)
    # Every failed check of every question is a reject row with the check's name as step.
    rejects = read_table(out, "rejects").to_pylist()
    failed = {(q["question_id"], c["name"]) for q in qs for c in q["checks"] if not c["passed"]}
    assert {(r["row_id"], r["step"]) for r in rejects} == failed
    assert all(r["stage"] == "questions" and r["row_table"] == "questions" for r in rejects)
    assert sum(stats.rejects.values()) == len(rejects)
    # The Cedric Vane -> Duskwater Press hop is the fact the press's infobox states, read from Vane's side.
    ev = [(e, r) for q in qs for e, r in zip(q["evidence"], q["relations"], strict=True)
          if (e["src"], e["dst"]) == ("Cedric Vane", "Duskwater Press (publisher)")]
    assert ev and ev[0][0]["sentence"] == "founder: Cedric Vane"
    assert ev[0][1] == {"hop": ev[0][1]["hop"], "relation": "founded", "source": "infobox:founder",
                        "stated_on": "Duskwater Press (publisher)"}
    # Every row carries its quality columns.
    for q in qs:
        assert q["language"] == "en" and q["candidates"] >= 1 and q["solvable"] is not None
        assert len(q["relations"]) == q["hops"] and q["certificate"] and q["reference_path"]
    res = query_arrow(out, "select hops, count(*) as n from questions group by 1 order by 1").to_pylist()
    assert [r["hops"] for r in res] == [2, 3] and sum(r["n"] for r in res) == 20


def test_same_seed_same_table_regardless_of_batch_split(toy_out, tmp_path):
    import shutil

    other = tmp_path / "copy"
    shutil.copytree(toy_out, other)
    a = toy_config(toy_out, **{"synth.n_questions": 25, "synth.batch_size": 25})
    b = toy_config(other, **{"synth.n_questions": 25, "synth.batch_size": 4})
    run_questions(a)
    assert len(plan(b)) == 7
    run_questions(b)
    assert _sorted_rows(toy_out, "questions") == _sorted_rows(other, "questions")
    assert _sorted_rows(toy_out, "walks") == _sorted_rows(other, "walks")
    c = toy_config(tmp_path / "x", **{"run.seed": 1, "synth.n_questions": 25})
    shutil.copytree(toy_out, tmp_path / "x", ignore=shutil.ignore_patterns("questions", "walks", "rejects"))
    run_questions(c)
    assert {r["question_id"] for r in _sorted_rows(tmp_path / "x", "questions")}.isdisjoint(
        {r["question_id"] for r in _sorted_rows(toy_out, "questions")})


def test_resume_skips_written_batches(toy_cfg):
    stage, run = QuestionStage(), resolve(toy_cfg, "questions")
    batches = stage.plan(run)
    first = execute_batch(stage, run, batches[0])
    assert first.questions == 20 and first.batches_skipped == 0
    again = execute_batch(stage, run, batches[0])
    assert again.questions == 0 and again.batches_skipped == 1
    assert read_table(toy_cfg.run.out, "questions").num_rows == 20
    # The whole stage run again: every batch skipped, nothing written.
    stats = run_questions(toy_cfg)
    assert stats.batches_skipped == stats.batches == len(batches) and stats.questions == 0
    assert read_table(toy_cfg.run.out, "questions").num_rows == 20


def test_tiny_graph_yields_fewer_distinct_walks_than_asked(toy_out, caplog):
    cfg = toy_config(toy_out, **{"synth.n_questions": 5000, "synth.hops_min": 2, "synth.hops_max": 2})
    batches = plan(cfg)
    n = sum(b.payload[0].size for b in batches)
    assert 0 < n < 5000
    assert "distinct walks" in caplog.text


def test_missing_graph_is_a_clear_error(tmp_path):
    from hopforge.stage import StageError

    cfg = toy_config(tmp_path / "nothing")
    with pytest.raises(StageError, match="needs the output of stage 'graph'.*run `hopforge ingest`"):
        run_questions(cfg)


def test_hub_cap_and_flags_exclude_pages(toy_out):
    # Westshire is linked from Aldmoor, Duskwater Press and Ell: a cap of 2 removes it (and other hubs).
    cfg = toy_config(toy_out, **{"synth.n_questions": 30, "synth.max_in_degree": 2})
    run_questions(cfg)
    nodes = read_table(toy_out, "nodes").to_pylist()
    hubs = {r["title"] for r in nodes if r["in_degree"] > 2}
    assert "Westshire" in hubs
    for q in read_table(toy_out, "questions").to_pylist():
        assert not hubs & set(q["path"])
        assert "List of abbeys" not in q["path"] and "Aldmoor (disambiguation)" not in q["path"]


def test_schema_of_written_questions(toy_cfg):
    run_questions(toy_cfg)
    t = read_table(toy_cfg.run.out, "questions")
    assert t.schema.field("checks").type == pa.list_(pa.struct([("name", pa.string()), ("passed", pa.bool_()),
                                                                ("detail", pa.string())]))


def test_cli_questions_then_sql(toy_out):
    from typer.testing import CliRunner

    from hopforge.cli import app

    runner = CliRunner()
    config = toy_out.parent / "toy.toml"
    config.write_text(f'[run]\nout = "{toy_out}"\n[graph]\ndump = "toy.xml"\n'
                      '[synth]\nn_questions = 12\nhops_min = 2\nhops_max = 2\nmin_clue_pages = 1\n')
    r = runner.invoke(app, ["questions", "--config", str(config)])
    assert r.exit_code == 0, r.output
    assert '"questions": 12' in r.output
    r = runner.invoke(app, ["sql", "--config", str(config), "--format", "csv",
                            "select hops, count(*) as n from questions group by 1"])
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines() == ['"hops","n"', "2,12"]
    r = runner.invoke(app, ["questions", "--config", str(config), "--hops-min", "5", "--hops-max", "3"])
    assert r.exit_code != 0


def test_process_pool_gives_the_same_table(toy_out, tmp_path):
    import shutil

    other = tmp_path / "pool"
    shutil.copytree(toy_out, other)
    from hopforge.stage import LocalExecutor

    run_questions(toy_config(toy_out, **{"synth.n_questions": 24, "synth.batch_size": 6}))
    stats = run_questions(toy_config(other, **{"synth.n_questions": 24, "synth.batch_size": 6, "synth.workers": 2}),
                          executor=LocalExecutor(workers=2))
    assert stats.batches == 4 and stats.questions == 24
    assert _sorted_rows(toy_out, "questions") == _sorted_rows(other, "questions")


def test_llm_composer_without_teacher_is_a_config_error(toy_out, monkeypatch):
    import sys

    from hopforge.errors import ConfigError
    from hopforge.synth.questions import make_composer

    monkeypatch.setitem(sys.modules, "hopforge.llm.client", None)  # import fails like a missing module
    cfg = toy_config(toy_out, **{"synth.composer": "llm"})
    with pytest.raises(ConfigError, match="synth.composer = 'llm'"):
        make_composer(cfg)


def test_unknown_exclude_flag_names_the_key(toy_out):
    from hopforge.errors import ConfigError

    cfg = toy_config(toy_out, **{"synth.exclude_flags": ["stub"]})
    with pytest.raises(ConfigError, match="synth.exclude_flags: unknown flag 'stub'"):
        plan(cfg)


def test_crash_during_commit_leaves_nothing_and_resumes_without_duplicates(toy_cfg, monkeypatch):
    """A batch's walks, questions and rejects are one group: a failure before it is committed
    leaves none of them, and the re-run writes each row once."""
    import hopforge.stage as stage_mod

    real = stage_mod.write_group

    def fail(*a, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(stage_mod, "write_group", fail)
    with pytest.raises(OSError, match="disk full"):
        run_questions(toy_cfg)
    assert read_table(toy_cfg.run.out, "walks").num_rows == 0
    assert read_table(toy_cfg.run.out, "questions").num_rows == 0
    monkeypatch.setattr(stage_mod, "write_group", real)
    stats = run_questions(toy_cfg)
    assert stats.questions == 20 and stats.batches_skipped == 0
    assert read_table(toy_cfg.run.out, "walks").num_rows == 20
    assert read_table(toy_cfg.run.out, "questions").num_rows == 20


def test_no_question_passing_its_checks_is_an_empty_stage_not_an_error(toy_out):
    """With every walk ending on a page the checks reject, the stage records why it produced nothing."""
    cfg = toy_config(toy_out, **{"synth.n_questions": 3, "synth.hops_min": 1, "synth.hops_max": 1})
    stats = run_questions(cfg)
    # 1-hop walks on the toy graph: the start links to (or is linked from) the answer: a shortcut.
    assert sum(read_table(toy_out, "questions", columns=["passed"]).column("passed").to_pylist()) == 0
    assert stats.empty is not None and stats.empty.startswith(f"0 of {stats.questions} questions passed")


def test_a_graph_without_facts_is_an_empty_stage(tmp_path):
    """Links whose sentences state no relation give the walker nothing to walk: an empty stage, named."""
    from .conftest import TOY_PAGES, build_graph

    out = tmp_path / "data"
    links = [(a, b, b, f"See also {b}.", False) for a, b in (("Aldmoor", "Westshire"), ("Westshire", "Aldmoor"))]
    build_graph(out, TOY_PAGES, links)
    stats = run_questions(toy_config(out, **{"synth.n_questions": 5}))
    assert stats.empty is not None and "0 distinct walks" in stats.empty and "over facts" in stats.empty
