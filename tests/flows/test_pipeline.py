"""The umbrella flow on the real enwiki-233 dump with the scripted teacher, inside the Prefect harness.

Slow: the shared reference run takes ~2 minutes on an idle 2-core VM (ingest of 233 pages,
four rollout batches each loading the BM25 environment, export + card plots).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest

from hopforge import __version__
from hopforge.config import load_config
from hopforge.flows import run_pipeline
from hopforge.storage import read_manifest, read_table
from hopforge.storage.schemas import SCHEMAS

pytestmark = pytest.mark.slow


def test_umbrella_flow_runs_every_stage_and_summarises_the_funnel(reference, prefect_harness: str) -> None:
    config, out, summary, state = reference
    cfg = load_config(config, {"run.out": str(out)})
    assert state.is_completed(), state.message
    assert summary["ok"] and not summary["failures"] and not summary["skipped_stages"]
    stages = {s["stage"]: s for s in summary["stages"]}
    assert list(stages) == ["build_graph", "compose_questions", "generate_trajectories", "filter_and_label",
                            "publish"]
    for s in stages.values():  # first run: every task executed, none replayed
        assert s["ran"] == s["tasks"] > 0 and s["cached"] == 0, s
    assert stages["build_graph"]["tasks"] > 2  # several ingest batches + build_graph
    assert stages["generate_trajectories"]["tasks"] > 1  # several rollout batches

    rows = summary["funnel"]["rows"]
    assert rows["pages"]["run"] == read_table(out, "pages").num_rows == 233
    questions = read_table(out, "questions")
    passed = {q for q, ok in zip(questions["question_id"].to_pylist(), questions["passed"].to_pylist(),
                                 strict=True) if ok is not False}
    traj = read_table(out, "trajectories")
    assert set(traj["question_id"].to_pylist()) == passed  # one attempt per passed question
    assert rows["trajectories"]["run"] == traj.num_rows == len(passed)
    tokens = summary["funnel"]["tokens"]
    assert tokens["tokens_in"] == pc.sum(traj["tokens_in"]).as_py() > 0
    # Every trajectory is either kept or rejected by the filter stage, with a reason.
    kept = set(read_table(out, "kept")["trajectory_id"].to_pylist())
    rej = read_table(out, "rejects")
    filtered = {r for r, st in zip(rej["row_id"].to_pylist(), rej["row_table"].to_pylist(), strict=True)
                if st == "trajectories"}
    assert kept and kept | filtered == set(traj["trajectory_id"].to_pylist())
    assert sum(r["rows"] for r in summary["funnel"]["rejects"]) == rej.num_rows
    # publish: the dataset and its card
    dest = out / "export" / cfg.export.format
    assert (dest / "README.md").is_file()
    # Every manifest line records this run id, the config hash and the package version.
    for table in SCHEMAS:
        for e in read_manifest(out, table):
            assert (e.run, e.config_hash, e.hopforge_version) == (cfg.run_id, cfg.config_hash(), __version__), \
                (table, e)


def test_funnel_artifact_is_published(reference, prefect_harness: str) -> None:
    import httpx

    config, out, summary, _ = reference
    cfg = load_config(config, {"run.out": str(out)})
    assert summary["artifact"]["key"] == f"hopforge-funnel-{cfg.run_id}"
    # Raw REST by id: the 3.8.8 client's read_artifacts / Artifact.get send nulls its own server refuses.
    art = httpx.get(f"{prefect_harness}/artifacts/{summary['artifact']['id']}").raise_for_status().json()
    assert (art["key"], art["type"]) == (summary["artifact"]["key"], "markdown")
    assert "| pages | 233 | 233 |" in art["data"]
    assert f"| kept | {summary['funnel']['rows']['kept']['run']} |" in art["data"]


def test_rerun_replays_every_task_from_cache_without_new_rows(reference, prefect_harness: str) -> None:
    config, out, _, _ = reference
    before = {t: [e.path for e in read_manifest(out, t)] for t in SCHEMAS}
    summary, state = run_pipeline(config, {"run.out": str(out)})
    assert state.is_completed()
    for s in summary["stages"]:
        assert s["ran"] == 0 and s["cached"] == s["tasks"], s
    assert {t: [e.path for e in read_manifest(out, t)] for t in SCHEMAS} == before
