"""Scale-out: the graph and question stages on a local Dask cluster of 2 worker processes."""

from __future__ import annotations

import importlib.util
import sys

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("prefect_dask") is None, reason="needs prefect-dask")]


def test_stages_on_a_two_worker_local_dask_cluster_match_the_thread_run(reference, prefect_harness,
                                                                        table_keys, tmp_path) -> None:
    from distributed import Client, LocalCluster

    from hopforge.flows import run_pipeline

    config, ref_out, _, _ = reference
    out = tmp_path / "data"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        _summary, state = run_pipeline(config, {"run.out": str(out), "flows.task_runner": "dask",
                                               "flows.dask_address": cluster.scheduler_address},
                                      stages=["graph", "questions"])
        # Stage modules are imported inside the tasks, so a worker that imported the
        # ingest module ran ingest batches itself.
        ran_there = client.run(lambda: "hopforge.graph.ingest" in sys.modules)
    assert state.is_completed(), state.message
    assert len(ran_there) == 2 and any(ran_there.values()), ran_there
    for table in ("pages", "links", "nodes", "walks", "questions"):
        assert table_keys(out, table) == table_keys(ref_out, table), table


def test_multistream_ingest_on_local_dask_one_task_per_stream_range_equals_one_process(
        scale_dump, scale_single, prefect_harness, table_keys, tmp_path) -> None:
    """The scale generator's multistream dump through the Prefect graph flow on a 2-worker local
    Dask cluster: one task per range of bz2 streams, tables identical to a single-process run."""
    from distributed import Client, LocalCluster

    from hopforge.flows import run_pipeline

    out = tmp_path / "dask"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        _summary, state = run_pipeline(None, {"run.out": str(out), "graph.dump": str(scale_dump),
                                              "graph.batch_pages": 400, "flows.task_runner": "dask",
                                              "flows.dask_address": cluster.scheduler_address},
                                       stages=["graph"])
        ran_there = client.run(lambda: "hopforge.graph.ingest" in sys.modules)
    assert state.is_completed(), state.message
    assert all(ran_there.values()), ran_there  # both workers parsed stream ranges
    assert_same_graph(out, scale_single, table_keys)


def assert_same_graph(out, single, table_keys) -> None:
    from hopforge.storage import query_arrow

    for table in ("pages", "links", "redirects", "links_raw", "nodes"):
        assert table_keys(out, table) == table_keys(single, table), table
    for q in ("SELECT src_id, position, dst_id, anchor, sentence FROM links ORDER BY 1, 2",
              "SELECT page_id, title, text, infobox FROM pages ORDER BY 1"):
        assert query_arrow(out, q).to_pylist() == query_arrow(single, q).to_pylist(), q
