"""A failed shard does not fail finished ones; the failure is reported with its reason."""

from __future__ import annotations

from pathlib import Path

from hopforge.config import load_config
from hopforge.flows import run_pipeline
from hopforge.storage import read_table


def test_one_corrupt_ingest_batch_fails_alone_and_is_reported(prefect_harness: str, pipeline_config,
                                                              enwiki_233_module: Path, tmp_path: Path) -> None:
    from hopforge.graph import plan_ingest

    config = pipeline_config(tmp_path / "pipeline.toml", enwiki_233_module)
    out = tmp_path / "data"
    cfg = load_config(config, {"run.out": str(out)})
    batches = plan_ingest(cfg)  # the flow re-uses this plan (it is cached under OUT/_work)
    assert len(batches) >= 3 and all(b.kind == "chunk" for b in batches)
    victim = batches[1]
    # The spilled chunk of batch 1 is damaged, as a full disk or a bad sector would leave it.
    Path(victim.path).write_bytes(b"\x28\xb5\x2f\xfd truncated")

    summary, state = run_pipeline(config, {"run.out": str(out)})

    assert state.is_failed()
    [failure] = summary["failures"]
    assert (failure["stage"], failure["task"], failure["state"]) == ("build_graph", "0001", "Failed")
    assert failure["reason"].split(":")[0].endswith("Error"), failure  # "ExceptionType: message"
    assert "0001" in state.message and failure["reason"][:60] in state.message
    # The other batches finished and their rows are kept.
    stage = summary["stages"][0]
    assert (stage["tasks"], stage["ran"]) == (len(batches), len(batches) - 1)
    assert read_table(out, "pages").num_rows == 233 - victim.pages
    # Downstream stages did not run on an incomplete graph.
    assert "build_graph" not in stage["stats"]
    assert summary["skipped_stages"] == ["compose_questions", "generate_trajectories", "filter_and_label",
                                         "publish"]
