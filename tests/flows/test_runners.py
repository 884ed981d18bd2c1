"""Task runner selection: thread (default), dask, ray; clear errors for a missing extra."""

from __future__ import annotations

import importlib.util

import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from hopforge.config import load_config
from hopforge.errors import ConfigError
from hopforge.flows.runners import make_task_runner, teacher_is_managed
from hopforge.stage import select_stages


def test_thread_runner_uses_max_workers() -> None:
    r = make_task_runner(load_config(None, {"flows.max_workers": 3, "teacher.backend": "scripted"}), stage="rollouts")
    assert isinstance(r, ThreadPoolTaskRunner) and r._max_workers == 3


def test_managed_teacher_batches_share_one_server_in_the_flow_process() -> None:
    # One teacher per stage run (hopforge.llm.service): batches run concurrently against it; with
    # Dask selected, a teacher stage with a managed server still runs on the flow's threads.
    cfg = load_config(None, {"flows.max_workers": 8, "teacher.backend": "cpu", "flows.task_runner": "dask"})
    assert teacher_is_managed(cfg)
    r = make_task_runner(cfg, stage="rollouts")
    assert isinstance(r, ThreadPoolTaskRunner) and r._max_workers == 8
    shared = load_config(None, {"teacher.backend": "vllm", "teacher.base_url": "http://127.0.0.1:8000/v1"})
    assert not teacher_is_managed(shared)
    assert not teacher_is_managed(load_config(None, {"teacher.backend": "vllm",
                                                     "teacher.base_urls": ["http://a:8000", "http://b:8000"]}))


@pytest.mark.skipif(importlib.util.find_spec("prefect_dask") is None, reason="prefect-dask not installed")
def test_dask_runner_connects_to_a_given_address() -> None:
    from prefect_dask import DaskTaskRunner

    cfg = load_config(None, {"flows.task_runner": "dask", "flows.dask_address": "tcp://127.0.0.1:8786"})
    r = make_task_runner(cfg, stage="graph")
    assert isinstance(r, DaskTaskRunner) and r.address == "tcp://127.0.0.1:8786"


@pytest.mark.skipif(importlib.util.find_spec("prefect_ray") is not None, reason="prefect-ray is installed")
def test_ray_without_the_extra_is_a_config_error_naming_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"flows.task_runner = 'ray' needs .*prefect-ray.*hopforge\[ray\]"):
        make_task_runner(load_config(None, {"flows.task_runner": "ray"}), stage="graph")


def test_stage_selection_is_ordered_and_validated() -> None:
    assert select_stages(["publish", "graph"]) == ["graph", "publish"]
    assert select_stages(None) == ["graph", "questions", "screen", "rollouts", "filters", "labels", "publish"]
    with pytest.raises(ConfigError, match="unknown stage.*rollout;"):
        select_stages(["rollout"])
