import json
import sys
from pathlib import Path

import orjson
import pytest
from tests.filters.trajectory_builders import GOOD_ACTIONS, FakeTeacher, make_episode, question, write_dataset

from hopforge.config import load_config
from hopforge.errors import ConfigError, TeacherError
from hopforge.filters import run_filters
from hopforge.labels.stage import run_labels
from hopforge.storage import query_arrow, read_table

LOOP = ("search", "Zorblax", "nothing")


def dataset(out: Path) -> None:
    q2 = question("q2", question="Who wrote the novel adapted into the film directed by the Quux director?",
                  answer="Jane Doe", answer_aliases=[], path=["Quux", "Film", "Jane Doe"])
    q_dup = question("q3", question=question()["question"].replace("capital", "main city"))  # near-duplicate of q1
    eps = [
        make_episode(GOOD_ACTIONS, tid="good"),
        make_episode([*GOOD_ACTIONS[:-1], ("answer", "donau")], tid="alias"),  # alias, other case
        make_episode(GOOD_ACTIONS, tid="dup-of-good"),  # identical action sequence
        make_episode([*GOOD_ACTIONS[:-1], ("answer", "Rhine")], tid="wrong"),
        make_episode([LOOP, LOOP, LOOP, *GOOD_ACTIONS], tid="loop"),
        make_episode([("search", "x", "y"), ("answer", "Danube")], tid="lazy"),
        make_episode(GOOD_ACTIONS[:-1], tid="unfinished"),
        make_episode([("bad", "{oops", "no JSON"), *GOOD_ACTIONS], tid="unparseable"),
        make_episode([("search", "Quux film", "Film by a director. The novel is by Jane Doe."),
                      ("visit", "Film", "Adapted from Jane Doe's novel."), ("visit", "Jane Doe", "Writer."),
                      ("answer", "Jane Doe")], tid="other-q", q=q2),
        make_episode(GOOD_ACTIONS, tid="on-dup-q", q=q_dup),
    ]
    # q0 duplicates q1 and sorts first, but has no trajectory: it must not shadow q1.
    q_unused = question("q0", question=question()["question"])
    write_dataset(out, [q_unused, question(), q2, q_dup], eps, turns_per_shard=25)


def cfg_for(out: Path, **overrides):
    return load_config(None, {"run.out": str(out), "filters.minhash_threshold": 0.5, **overrides})


def test_run_filters_routes_every_trajectory_and_funnel_adds_up(out):
    dataset(out)
    report = run_filters(cfg_for(out))
    kept = {r["trajectory_id"]: r for r in read_table(out, "kept").to_pylist()}
    rejects = {r["row_id"]: r for r in read_table(out, "rejects").to_pylist()}
    assert set(kept) == {"good", "alias", "other-q"}
    assert {k: (v["step"], v["reason"]) for k, v in rejects.items()} == {
        "on-dup-q": ("near_duplicate_question", "near_duplicate_question"),
        "dup-of-good": ("duplicate_trajectory", "duplicate_trajectory"),
        "wrong": ("answer", "answer_mismatch"),
        "loop": ("degeneration", "repeated_call_loop"),
        "lazy": ("effort", "too_few_tool_calls"),
        "unfinished": ("format", "status_turn_limit"),
        "unparseable": ("format", "unparseable_call"),
    }
    assert all(r["stage"] == "filter" and r["row_table"] == "kept" for r in rejects.values())
    assert kept["alias"]["correct"] and kept["alias"]["f1"] == 1.0 and kept["alias"]["action_hash"]
    assert report["in"] == 10 and report["kept"] == 3 and report["rejected"] == 7
    steps = report["steps"]
    for i, s in enumerate(steps):
        assert s["in"] == s["kept"] + s["rejected"]
        assert sum(n for _, n in s["top_reasons"]) == s["rejected"]
        if i:
            assert s["in"] == steps[i - 1]["kept"]
    saved = json.loads(Path(report["report_path"]).read_text())
    assert saved["steps"] == steps and Path(report["report_path"]).parent == out / "reports"


def test_run_filters_is_idempotent(out):
    dataset(out)
    run_filters(cfg_for(out))
    again = run_filters(cfg_for(out))
    assert again["in"] == 0 and again["skipped_already_decided"] == 10
    assert read_table(out, "kept").num_rows == 3 and read_table(out, "rejects").num_rows == 7
    # A new trajectory duplicating an already-kept one is caught through kept.action_hash.
    from hopforge.storage import ShardWriter
    late = make_episode(GOOD_ACTIONS, tid="late-dup")
    with ShardWriter(out, "trajectories", run_id="rollout2") as w:
        w.write(late.trajectory)
    with ShardWriter(out, "turns", run_id="rollout2") as w:
        w.write_many(late.turns)
    third = run_filters(cfg_for(out))
    assert third["in"] == 1 and third["steps"][-1]["top_reasons"] == [["duplicate_trajectory", 1]]


def test_decontamination_and_difficulty_steps(out, tmp_path):
    dataset(out)
    bench = tmp_path / "bench.txt"
    bench.write_text("Who wrote the novel adapted into the film directed by the Quux director?\n", encoding="utf-8")

    async def closed_book(q, attempt):
        return "Danube" if q["question_id"] == "q1" else "no idea"

    report = run_filters(cfg_for(out, **{"filters.decontaminate": str(bench), "filters.decontam_ngram": 8,
                                          "filters.difficulty_k": 2}), solver=closed_book)
    rejects = {r["row_id"]: r for r in read_table(out, "rejects").to_pylist()}
    assert rejects["other-q"]["reason"] == "benchmark_overlap" and "bench.txt line 1" in rejects["other-q"]["detail"]
    assert rejects["good"]["reason"] == "solvable_without_tools"
    diff = {r["question_id"]: r for r in read_table(out, "difficulty").to_pylist()}
    assert diff["q1"]["solve_rate_no_tools"] == 1.0 and diff["q1"]["k"] == 2
    # With tools: the first k=2 recorded rollout attempts of q1 (attempt 0, by id: "alias", "dup-of-good").
    assert diff["q1"]["solve_rate_tools"] == 1.0
    assert diff["q2"]["solve_rate_tools"] == 1.0 and diff["q2"]["solve_rate_no_tools"] == 0.0
    assert [s["step"] for s in report["steps"]][:3] == ["decontaminate", "near_duplicate_question", "difficulty"]
    assert report["difficulty"] == {"calibrated": 3, "already_calibrated": 0}

    async def must_not_run(q, attempt):
        raise AssertionError("questions already calibrated must not be asked again")

    again = run_filters(cfg_for(out, **{"filters.decontaminate": str(bench), "filters.decontam_ngram": 8,
                                         "filters.difficulty_k": 2}), solver=must_not_run)
    assert again["difficulty"] == {"calibrated": 0, "already_calibrated": 3}
    assert read_table(out, "difficulty").num_rows == 3


def test_crash_mid_run_loses_no_decision_and_resume_completes(out, monkeypatch):
    from hopforge.filters.correctness import AnswerFilter

    dataset(out)
    real = AnswerFilter.filter
    monkeypatch.setattr(AnswerFilter, "filter", lambda self, ep: (_ for _ in ()).throw(RuntimeError("judge bug")))
    with pytest.raises(RuntimeError, match="judge bug"):
        run_filters(cfg_for(out))
    # Rejections made before the crash were flushed; nothing reached kept.
    early = {r["row_id"] for r in read_table(out, "rejects").to_pylist()}
    assert early == {"on-dup-q", "loop", "lazy", "unfinished", "unparseable"}
    monkeypatch.setattr(AnswerFilter, "filter", real)
    resumed = run_filters(cfg_for(out))
    assert resumed["skipped_already_decided"] == 5 and resumed["in"] == 5
    assert {r["trajectory_id"] for r in read_table(out, "kept").to_pylist()} == {"good", "alias", "other-q"}
    assert read_table(out, "rejects").num_rows == 7


def test_llm_judge_without_teacher_module_is_a_config_error(out, monkeypatch):
    dataset(out)
    monkeypatch.setitem(sys.modules, "hopforge.llm.client", None)  # a build without the rollout stage
    with pytest.raises(ConfigError, match="filters.llm_judge needs the teacher client"):
        run_filters(cfg_for(out, **{"filters.llm_judge": True}))
    assert read_table(out, "kept").num_rows == 0  # failed before writing anything


def test_run_labels_rules_then_judge_and_catalog_view(out):
    dataset(out)
    run_filters(cfg_for(out))
    stats = run_labels(cfg_for(out))
    assert stats["trajectories"] == 3 and stats["assistant_turn_policies"] == {"rules-v1": 12}
    labels = read_table(out, "turn_labels").to_pylist()
    assert {r["trajectory_id"] for r in labels} == {"good", "alias", "other-q"}
    # The catalog's turns view joins the labels: loss_weight is queryable beside the turn text.
    rows = query_arrow(out, "SELECT role, sum(loss_weight) AS w FROM turns WHERE trajectory_id = 'good' "
                            "GROUP BY role ORDER BY role").to_pylist()
    assert rows == [{"role": "assistant", "w": 4.0}, {"role": "system", "w": 0.0}, {"role": "tool", "w": 0.0},
                    {"role": "user", "w": 0.0}]
    assert run_labels(cfg_for(out))["trajectories"] == 0  # idempotent


def test_run_labels_with_judge_batches_per_window(out):
    dataset(out)
    run_filters(cfg_for(out))

    def reply(prompt):
        line = prompt.rsplit("Label every assistant turn among ", 1)[1].split(":", 1)[0]
        return orjson.dumps([{"turn": int(t.strip()[1:]), "label": "essential", "rationale": "needed"}
                             for t in line.split(",")]).decode()

    teacher = FakeTeacher(reply)
    stats = run_labels(cfg_for(out, **{"filters.label_judge": True, "filters.judge_window": 3}), judge=teacher)
    assert stats["judge_requests"] == len(teacher.requests) == 6  # 3 trajectories x ceil(4 / 3) windows
    assert stats["judge_labels"] == {"essential": 12} and stats["judge_fallback_windows"] == 0


def test_labels_with_another_config_relabel_everything_and_the_view_follows(out):
    dataset(out)
    run_filters(cfg_for(out))
    run_labels(cfg_for(out))  # rules-v1 under the default run id
    judged = cfg_for(out, **{"filters.label_judge": True})
    assert judged.run_id != cfg_for(out).run_id

    def reply(prompt):
        line = prompt.rsplit("Label every assistant turn among ", 1)[1].split(":", 1)[0]
        return orjson.dumps([{"turn": int(t.strip()[1:]), "label": "harmful", "rationale": "bad"}
                             for t in line.split(",")]).decode()

    stats = run_labels(judged, judge=FakeTeacher(reply))
    assert stats["trajectories"] == 3 and stats["skipped_already_labelled"] == 0
    rows = query_arrow(out, "SELECT DISTINCT label_policy, loss_weight FROM turns "
                            "WHERE trajectory_id = 'good' AND role = 'assistant'").to_pylist()
    assert rows == [{"label_policy": "judge-v1", "loss_weight": 0.0}]  # the latest labelling run


def test_empty_dataset_gives_an_empty_funnel(out):
    report = run_filters(cfg_for(out))
    assert report["in"] == report["kept"] == report["rejected"] == 0
    assert all(s["in"] == 0 for s in report["steps"])
    assert run_labels(cfg_for(out))["trajectories"] == 0


def test_unreachable_answer_judge_stops_without_rejecting_and_resume_finishes(out):
    dataset(out)

    def down(prompt):
        raise ConnectionError("connection refused")

    with pytest.raises(TeacherError, match="answer judge request failed for trajectory wrong"):
        run_filters(cfg_for(out, **{"filters.llm_judge": True}), judge=FakeTeacher(down))
    assert "wrong" not in {r["row_id"] for r in read_table(out, "rejects").to_pylist()}
    up = FakeTeacher(lambda p: '{"verdict": "incorrect", "rationale": "The Rhine is another river."}')
    report = run_filters(cfg_for(out, **{"filters.llm_judge": True}), judge=up)
    assert report["answer_judge_requests"] == 1 and len(up.requests) == 1
    wrong = next(r for r in read_table(out, "rejects").to_pylist() if r["row_id"] == "wrong")
    assert wrong["reason"] == "answer_mismatch" and "judge incorrect: The Rhine is another river." in wrong["detail"]
