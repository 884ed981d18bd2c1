"""The umbrella flow on the real enwiki-233 dump with the scripted teacher, inside the Prefect harness.

Slow: the shared reference run takes about a minute on an idle 2-core VM (ingest of 233 pages in
four batches, five rollout batches each loading the BM25 environment, export + card plots); each
re-run on a copy of it costs the Prefect overhead of seven stage flows plus what it really runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow.compute as pc
import pytest

from hopforge import __version__
from hopforge.config import load_config
from hopforge.flows import run_pipeline
from hopforge.stage import STAGES, get_stage, resolve, stage_records
from hopforge.storage import read_manifest, read_table
from hopforge.storage.schemas import SCHEMAS
from tests.flows.conftest import copy_out, shard_paths_by_table

pytestmark = pytest.mark.slow


def test_umbrella_flow_runs_every_stage_and_summarises_the_funnel(reference, prefect_harness: str) -> None:
    config, out, summary, state = reference
    cfg = load_config(config, {"run.out": str(out)})
    assert state.is_completed(), state.message
    assert summary["ok"] and not summary["failures"] and not summary["skipped_stages"]
    assert summary["empty"] is None and summary["held"] is None
    stages = {s["stage"]: s for s in summary["stages"]}
    assert list(stages) == list(STAGES)
    runs = {name: resolve(cfg, name) for name in STAGES}
    for name, s in stages.items():  # first run: every batch executed, none skipped
        assert s["fingerprint"] == runs[name].fingerprint
        assert s["ran"] == s["tasks"] > 0 and s["skipped"] == 0 and not s["stats"]["skipped"], s
        assert runs[name].complete()["batches"] == s["tasks"]
    assert stages["graph"]["tasks"] == 4  # 233 pages in batches of 64
    assert stages["rollouts"]["tasks"] > 1 and stages["labels"]["tasks"] == stages["rollouts"]["tasks"]

    rows = summary["funnel"]["rows"]
    assert rows["pages"]["run"] == read_table(out, "pages").num_rows == 233
    questions = read_table(out, "questions")
    screened_out = {r["row_id"] for r in read_table(out, "rejects").to_pylist() if r["stage"] == "screen"}
    passed = {q for q, ok in zip(questions["question_id"].to_pylist(), questions["passed"].to_pylist(),
                                 strict=True) if ok} - screened_out
    traj = read_table(out, "trajectories")
    assert sorted(traj["question_id"].to_pylist()) == sorted(passed)  # one attempt per question rolled out
    assert rows["trajectories"]["run"] == traj.num_rows == stages["rollouts"]["stats"]["trajectories"]
    tokens = summary["funnel"]["tokens"]
    assert tokens["tokens_in"] == pc.sum(traj["tokens_in"]).as_py() > 0
    # Every trajectory is either kept or rejected by the filter stage, with a reason.
    kept = set(read_table(out, "kept")["trajectory_id"].to_pylist())
    rej = read_table(out, "rejects")
    filtered = {r for r, st in zip(rej["row_id"].to_pylist(), rej["stage"].to_pylist(), strict=True)
                if st == "filter"}
    assert kept and kept | filtered == set(traj["trajectory_id"].to_pylist()) and not kept & filtered
    assert sum(r["rows"] for r in summary["funnel"]["rejects"]) == rej.num_rows
    labelled = set(read_table(out, "turn_labels")["trajectory_id"].to_pylist())
    assert labelled == kept
    # publish: the dataset and its card, stamped with the publish fingerprint
    dest = out / "export" / cfg.export.format
    assert (dest / "README.md").is_file()
    assert (dest / ".fingerprint").read_text().strip() == runs["publish"].fingerprint
    assert json.loads((dest / "export_manifest.json").read_text())["counts"]["trajectories"] == len(kept)
    # Every shard lives in its stage's partition, carries the hopforge version and a batch id, and is
    # named by that batch's completion marker (graph's whole-table step commits as batch build_graph).
    owners = {run.fingerprint: name for name, run in runs.items()}
    marked = {sh for run in runs.values() for m in (run.dir / "done").glob("*.json")
              for sh in orjson.loads(m.read_bytes())["shards"]}
    for table in SCHEMAS:
        for e in read_manifest(out, table):
            assert e.run in owners and table in get_stage(owners[e.run]).writes, (table, e)
            assert (e.config_hash, e.hopforge_version) == (e.run, __version__), (table, e)
            assert f"{table}/{e.path}" in marked or e.batch == "build_graph", (table, e)


def test_funnel_artifact_is_published(reference, prefect_harness: str) -> None:
    import httpx

    config, out, summary, _ = reference
    cfg = load_config(config, {"run.out": str(out)})
    assert summary["artifact"]["key"] == "hopforge-funnel-data"  # named after OUT's directory
    # Raw REST by id: the 3.8.8 client's read_artifacts / Artifact.get send nulls its own server refuses.
    art = httpx.get(f"{prefect_harness}/artifacts/{summary['artifact']['id']}").raise_for_status().json()
    assert (art["key"], art["type"]) == (summary["artifact"]["key"], "markdown")
    assert "Status: **completed**" in art["data"]
    assert "| pages | 233 | 233 |" in art["data"]
    assert f"| kept | {summary['funnel']['rows']['kept']['run']} |" in art["data"]
    assert f"| graph | `{resolve(cfg, 'graph').fingerprint}` | 4 | 4 | 0 | 0 |" in art["data"]


def test_rerun_skips_every_stage_by_its_completion_markers_without_new_rows(reference, prefect_harness: str,
                                                                           tmp_path: Path) -> None:
    config, ref_out, ref_summary, _ = reference
    out = copy_out(ref_out, tmp_path / "data")
    before = shard_paths_by_table(out)
    records = len(stage_records(out))
    export = out / "export" / "trl" / "export_manifest.json"
    exported_at = export.stat().st_mtime_ns
    summary, state = run_pipeline(config, {"run.out": str(out)})
    assert state.is_completed() and summary["ok"], state.message
    ref = {s["stage"]: s for s in ref_summary["stages"]}
    for s in summary["stages"]:
        assert s["fingerprint"] == ref[s["stage"]]["fingerprint"]
        assert s["ran"] == 0 and s["skipped"] == s["tasks"] == ref[s["stage"]]["tasks"], s
        assert s["stats"]["skipped"] and s["stats"]["batches_skipped"] == s["stats"]["batches"] == s["tasks"], s
    assert shard_paths_by_table(out) == before
    assert len(stage_records(out)) == records  # no new stage run
    assert export.stat().st_mtime_ns == exported_at  # publish did not rewrite the export either


def test_changing_only_the_export_format_reruns_publish_alone(reference, prefect_harness: str,
                                                              tmp_path: Path) -> None:
    config, ref_out, ref_summary, _ = reference
    out = copy_out(ref_out, tmp_path / "data")
    before = shard_paths_by_table(out)
    summary, state = run_pipeline(config, {"run.out": str(out), "export.format": "sharegpt"})
    assert state.is_completed() and summary["ok"], state.message
    ref = {s["stage"]: s for s in ref_summary["stages"]}
    stages = {s["stage"]: s for s in summary["stages"]}
    for name in ("graph", "questions", "screen", "rollouts", "filters", "labels"):
        s = stages[name]
        assert s["fingerprint"] == ref[name]["fingerprint"], name
        assert s["stats"]["skipped"] and s["skipped"] == s["tasks"] == ref[name]["tasks"] and s["ran"] == 0, s
    assert shard_paths_by_table(out) == before  # not one new shard in any table
    pub = stages["publish"]
    assert pub["fingerprint"] != ref["publish"]["fingerprint"]
    assert (pub["ran"], pub["skipped"], pub["stats"]["format"]) == (1, 0, "sharegpt")
    manifest = json.loads((out / "export" / "sharegpt" / "export_manifest.json").read_text())
    assert manifest["format"] == "sharegpt"
    assert manifest["counts"]["trajectories"] == summary["funnel"]["rows"]["kept"]["run"]
    assert (out / "export" / "trl" / "README.md").is_file()  # the trl export stays


def test_a_graph_without_links_ends_the_run_with_exit_0_and_one_line_naming_the_zero(
        prefect_harness: str, enwiki_tiny_70: Path, hopforge_env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(f'[graph]\ndump = "{enwiki_tiny_70}"\nworkers = 1\n[teacher]\nbackend = "scripted"\n')
    out = tmp_path / "data"
    r = subprocess.run([sys.executable, "-m", "hopforge.cli", "run", "--config", str(config), "--out", str(out),
                        "--json", str(tmp_path / "summary.json")], capture_output=True, text=True, timeout=600, check=False,
                       env={**hopforge_env, "PREFECT_API_URL": prefect_harness, "COLUMNS": "250"})
    reason = "the graph has 0 links between its 6 pages: no walk can leave its start"
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stderr.splitlines() == [f"nothing to do: {reason}"]  # the cause and the zero, once; no traceback
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ok"] and summary["empty"] == reason and not summary["failures"]
    stages = {s["stage"]: s for s in summary["stages"]}
    assert list(stages) == list(STAGES)
    assert (stages["graph"]["ran"], stages["graph"]["empty"]) == (1, reason)
    assert stages["graph"]["stats"]["pages"] == 6 and stages["graph"]["stats"]["redirects"] == 64
    for name in STAGES[1:]:  # the later stages are skipped with the same line, and recorded so
        s = stages[name]
        assert (s["tasks"], s["ran"], s["empty"]) == (0, 0, reason), s
        line = next(x for x in r.stdout.splitlines() if x.startswith(f"│ {name} "))
        assert f"skipped: {reason}" in line, line
    records = {rec["stage"]: rec for rec in stage_records(out)}
    assert {name: rec["complete"]["empty"] for name, rec in records.items()} == {name: reason for name in STAGES}
    assert read_manifest(out, "questions") == [] and read_table(out, "pages").num_rows == 6
