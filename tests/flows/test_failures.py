"""A failed batch does not fail finished ones; the failure is reported with its reason, and a
re-run of the same command runs only the failed batch."""

from __future__ import annotations

from pathlib import Path

from hopforge.config import load_config
from hopforge.flows import run_pipeline
from hopforge.stage import STAGES, resolve
from hopforge.storage import read_table


def test_one_corrupt_ingest_batch_fails_alone_is_reported_and_rerun_alone(
        prefect_harness: str, pipeline_config, enwiki_233_module: Path, tmp_path: Path) -> None:
    from hopforge.graph import plan_ingest

    config = pipeline_config(tmp_path / "pipeline.toml", enwiki_233_module)
    out = tmp_path / "data"
    cfg = load_config(config, {"run.out": str(out)})
    batches = plan_ingest(cfg)  # the flow re-uses this plan (it is cached under OUT/_work)
    assert len(batches) >= 3 and all(b.kind == "chunk" for b in batches)
    victim = batches[1]
    # The spilled chunk of batch 1 is damaged, as a full disk or a bad sector would leave it.
    chunk = Path(victim.path)
    good = chunk.read_bytes()
    chunk.write_bytes(b"\x28\xb5\x2f\xfd truncated")

    summary, state = run_pipeline(config, {"run.out": str(out)})

    assert state.is_failed()
    [failure] = summary["failures"]
    assert (failure["stage"], failure["task"], failure["state"]) == ("graph", "graph[00001]", "Failed")
    assert failure["reason"].split(":")[0].endswith("Error"), failure  # "ExceptionType: message"
    assert "graph[00001]" in state.message and failure["reason"][:60] in state.message
    assert "re-run the same command" in state.message
    # The other batches finished, their rows are kept and their completion markers written.
    [stage] = summary["stages"]
    assert (stage["stage"], stage["tasks"], stage["ran"], stage["skipped"]) == ("graph", len(batches),
                                                                               len(batches) - 1, 0)
    assert read_table(out, "pages").num_rows == 233 - victim.pages
    graph = resolve(cfg, "graph")
    assert graph.complete() is None  # the whole-table step did not run on an incomplete graph
    assert sorted(p.stem for p in (graph.dir / "done").glob("*.json")) == sorted(
        b.batch_id for b in batches if b is not victim)
    # Downstream stages did not run.
    assert summary["skipped_stages"] == list(STAGES[1:])
    assert read_table(out, "nodes").num_rows == 0 and read_table(out, "questions").num_rows == 0

    chunk.write_bytes(good)  # the disk is fixed; the same command again
    summary, state = run_pipeline(config, {"run.out": str(out)}, stages=["graph"])
    assert state.is_completed(), state.message
    [stage] = summary["stages"]
    assert (stage["tasks"], stage["ran"], stage["skipped"]) == (len(batches), 1, len(batches) - 1)
    assert read_table(out, "pages").num_rows == 233 and read_table(out, "nodes").num_rows == 233
    assert graph.complete()["batches"] == len(batches)
