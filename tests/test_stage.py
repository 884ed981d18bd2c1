"""The stage contract (src/hopforge/stage.py): fingerprints keyed by inputs, stats merged over batches,
completion markers as the one skip rule, and stages after an empty one skipping with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from hopforge.config import load_config
from hopforge.stage import STAGES, StageStats, resolve, run_stage, stage_records
from hopforge.storage import read_manifest, read_table
from hopforge.testing.stages import complete_chain


def _cfg(out: Path, **over: object):
    return load_config(None, {"run.out": str(out), "graph.dump": "fixture-wiki.xml", **over})


AFTER_ROLLOUTS = {"rollouts", "filters", "labels", "publish"}


@pytest.mark.parametrize(("key", "value", "changed"), [
    ("export.format", "sharegpt", {"publish"}),
    ("export.push_to_hub", "me/dataset", set()),
    ("flows.max_workers", 9, set()),
    ("graph.workers", 7, set()),
    ("synth.workers", 3, set()),
    ("rollout.max_in_flight", 3, set()),
    ("teacher.base_url", "http://127.0.0.1:9/v1", set()),
    ("teacher.temperature", 0.1, AFTER_ROLLOUTS),
    ("filters.min_tool_calls", 1, {"filters", "labels", "publish"}),
    ("labels.judge", True, {"labels", "publish"}),
    ("screen.minhash_threshold", 0.5, {"screen"} | AFTER_ROLLOUTS),
    ("run.seed", 3, {"questions", "screen"} | AFTER_ROLLOUTS),
    ("graph.batch_pages", 10, set(STAGES)),
    ("run.run_id", "replicate-2", set(STAGES)),
])
def test_a_setting_changes_the_fingerprint_of_the_stage_it_shapes_and_of_every_stage_after_it(
        tmp_path: Path, key: str, value: object, changed: set[str]) -> None:
    base = {name: resolve(_cfg(tmp_path), name).fingerprint for name in STAGES}
    other = {name: resolve(_cfg(tmp_path, **{key: value}), name).fingerprint for name in STAGES}
    assert {name for name in STAGES if base[name] != other[name]} == changed
    assert all(fp.startswith(f"{name}-") for name, fp in other.items())


def test_stats_merge_adds_counts_and_reasons_keeps_the_longest_wall_time_and_the_first_empty_line() -> None:
    a = StageStats(batches=1, rows={"kept": 2}, rejects={"answer_mismatch": 1}, cpu_seconds=1.5, seconds=4.0)
    b = StageStats(batches=1, batches_skipped=1, rows={"kept": 1, "rejects": 3},
                   rejects={"answer_mismatch": 2, "too_few_tool_calls": 1}, cpu_seconds=0.5, seconds=3.0,
                   empty="0 trajectories were written")
    a.merge(b).merge(StageStats(batches=1, empty="a later line"))
    assert (a.batches, a.batches_skipped, a.cpu_seconds, a.seconds) == (3, 1, 2.0, 4.0)
    assert a.rows == {"kept": 3, "rejects": 3}
    assert a.rejects == {"answer_mismatch": 3, "too_few_tool_calls": 1}
    # Batches ran (3, one skipped): the stage did not skip, even though it produced nothing usable.
    assert a.empty == "0 trajectories were written" and not a.skipped
    assert StageStats(empty="the graph has 0 links").skipped  # no batch at all: nothing ran
    assert StageStats(batches=2, batches_skipped=2).skipped and not StageStats(batches=2, batches_skipped=1).skipped
    assert StageStats.from_dict(a.to_dict()) == a


def test_stages_after_an_empty_one_skip_with_its_line_and_are_recorded_complete(tmp_path: Path) -> None:
    """What `hopforge questions`, `hopforge screen`, … do one after another after an empty graph."""
    cfg = _cfg(tmp_path)
    reason = "the graph has 0 links between its 6 pages: no walk can leave its start"
    graph = resolve(cfg, "graph")
    graph.record()
    graph.mark_complete(StageStats(batches=1, empty=reason), 1)
    for name in STAGES[1:]:
        stats = run_stage(name, cfg)  # each finds its input complete (and empty), not missing
        assert (stats.empty, stats.batches, stats.skipped) == (reason, 0, True), name
        assert resolve(cfg, name).complete()["empty"] == reason
    assert [r["stage"] for r in sorted(stage_records(tmp_path), key=lambda r: STAGES.index(r["stage"]))] == \
        list(STAGES)


def test_a_complete_batch_is_skipped_until_its_shards_are_deleted_by_hand(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    same = "Which river flows through the capital of the northern country of Veloria?"
    qs = [{"question_id": f"q{i}", "question": same, "answer": "Sella", "hops": 2, "passed": True} for i in range(2)]
    complete_chain(cfg, {"questions": {"questions": qs}})
    first = run_stage("screen", cfg)
    assert (first.batches, first.batches_skipped, first.rejects) == (1, 0, {"near_duplicate_question": 1})
    again = run_stage("screen", cfg)
    assert (again.batches, again.batches_skipped, again.skipped) == (1, 1, True)
    [shard] = read_manifest(tmp_path, "rejects")
    (tmp_path / "rejects" / shard.path).unlink()  # deleted by hand: the marker names a shard that is gone
    redone = run_stage("screen", cfg)
    assert (redone.batches, redone.batches_skipped) == (1, 0)
    assert read_table(tmp_path, "rejects", columns=["reason"]).column(0).to_pylist() == ["near_duplicate_question"]
