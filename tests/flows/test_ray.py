"""Scale-out on Ray: the graph and question stages on a local Ray instance of 2 CPUs, the same
pipeline test the Dask runner passes (tests/flows/test_dask.py), compared with the thread run."""

from __future__ import annotations

import importlib.util
import sys

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("prefect_ray") is None,
                                 reason="needs prefect-ray: pip install 'hopforge[ray]' (make install does)")]


def test_stages_on_a_local_ray_instance_match_the_thread_run(reference, prefect_harness, table_keys,
                                                             tmp_path) -> None:
    import ray

    from hopforge.flows import run_pipeline

    config, ref_out, _, _ = reference
    out = tmp_path / "data"
    # Workers inherit this process's environment (PYTHONPATH), so they import the same hopforge.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary, state = run_pipeline(config, {"run.out": str(out), "flows.task_runner": "ray"},
                                      stages=["graph", "questions"])

        @ray.remote(num_cpus=1)
        def imported_ingest() -> tuple[int, bool]:
            import os

            return os.getpid(), "hopforge.graph.ingest" in sys.modules

        # Stage modules are imported inside the tasks, so a worker that imported the ingest module
        # ran ingest batches itself (Ray reuses this job's idle workers for these probes).
        probes = ray.get([imported_ingest.remote() for _ in range(8)])
    finally:
        ray.shutdown()
    assert state.is_completed(), state.message
    stages = {s["stage"]: s for s in summary["stages"]}
    assert stages["graph"]["ran"] >= 2 and not stages["graph"]["failures"]
    assert any(ran for _, ran in probes), probes
    import os

    assert all(pid != os.getpid() for pid, _ in probes)
    for table in ("pages", "links", "nodes", "walks", "questions"):
        assert table_keys(out, table) == table_keys(ref_out, table), table


def test_without_an_address_the_pipeline_starts_and_stops_one_local_ray(reference, prefect_harness, table_keys,
                                                                        tmp_path) -> None:
    import ray

    from hopforge.flows import run_pipeline

    config, ref_out, _, _ = reference
    out = tmp_path / "data"
    assert not ray.is_initialized()
    summary, state = run_pipeline(config, {"run.out": str(out), "flows.task_runner": "ray"}, stages=["graph"])
    assert state.is_completed(), state.message
    assert not ray.is_initialized()  # cluster_for shut down the instance it started for the run
    for table in ("pages", "links", "nodes"):
        assert table_keys(out, table) == table_keys(ref_out, table), table


def test_multistream_ingest_on_local_ray_equals_one_process(scale_dump, scale_single, prefect_harness,
                                                            table_keys, tmp_path) -> None:
    """The scale generator's multistream dump through the Prefect graph flow on a local Ray of
    2 CPUs: one task per range of bz2 streams, tables identical to a single-process run."""
    import ray

    from hopforge.flows import run_pipeline

    from .test_dask import assert_same_graph

    out = tmp_path / "ray"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary, state = run_pipeline(None, {"run.out": str(out), "graph.dump": str(scale_dump),
                                             "graph.batch_pages": 400, "flows.task_runner": "ray"},
                                      stages=["graph"])
    finally:
        ray.shutdown()
    assert state.is_completed(), state.message
    graph = {s["stage"]: s for s in summary["stages"]}["graph"]
    assert graph["ran"] == 8 and not graph["failures"], graph
    assert_same_graph(out, scale_single, table_keys)
