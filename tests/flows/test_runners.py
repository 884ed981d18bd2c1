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


def test_managed_teacher_rollouts_run_one_batch_at_a_time() -> None:
    cfg = load_config(None, {"flows.max_workers": 8, "teacher.backend": "cpu"})
    assert teacher_is_managed(cfg)
    assert make_task_runner(cfg, stage="rollouts")._max_workers == 1
    assert make_task_runner(cfg, stage="graph")._max_workers == 8
    assert make_task_runner(cfg, stage="labels")._max_workers == 8  # rule labels: no teacher
    # Every stage that talks to the teacher under these settings shares its one managed server.
    judged = load_config(None, {"flows.max_workers": 8, "teacher.backend": "vllm", "synth.composer": "llm",
                                "screen.difficulty_k": 2, "filters.llm_judge": True, "labels.judge": True})
    for stage in ("questions", "screen", "rollouts", "filters", "labels"):
        assert make_task_runner(judged, stage=stage)._max_workers == 1, stage
    shared = load_config(None, {"teacher.backend": "vllm", "teacher.base_url": "http://127.0.0.1:8000/v1"})
    assert not teacher_is_managed(shared)


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
