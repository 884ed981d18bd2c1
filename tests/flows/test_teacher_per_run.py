"""The Prefect stage flow on the thread runner: a managed teacher is launched once for all the
rollout batches (which run concurrently), and stopped when the stage flow ends."""

from __future__ import annotations

from pathlib import Path

from hopforge.llm import service
from tests.llm.test_launch_once import managed_cfg, server_stats, stand_in  # noqa: F401 - the fixture
from tests.rollouts.rollout_fixtures import write_wiki


def test_thread_runner_batches_share_one_managed_server(prefect_harness: str, tmp_path: Path,
                                                        stand_in) -> None:  # noqa: F811
    from hopforge.flows.pipeline import stage_flow
    from hopforge.flows.runners import make_task_runner

    launches, stats = stand_in
    out = tmp_path / "out"
    cfg = write_wiki(out, cfg=managed_cfg(out, **{"flows.max_workers": 3}))
    runner = make_task_runner(cfg, None, "rollouts")
    assert runner._max_workers == 3  # no longer one batch at a time for a managed teacher
    state = stage_flow.with_options(task_runner=runner)("rollouts", cfg, return_state=True)
    assert state.is_completed(), state.message
    report = state.result()
    assert report["tasks"] == 6 and report["ran"] == 6 and not report["failures"]
    assert len(launches.read_text().splitlines()) == 1
    assert service.open_services() == []
    (st,) = server_stats(stats)
    assert st["requests"] == 12 * 5 and st["peak_in_flight"] <= 3
