"""Task runner selection: where a stage's batch tasks execute.

``thread`` (default) runs tasks in a thread pool of the flow process: right for
teacher-bound rollout batches, which spend their time waiting on HTTP. ``dask``
and ``ray`` run tasks in other processes or machines; they are optional extras
(``pip install 'hopforge[dask]'`` / ``'hopforge[ray]'``) and are imported only
when selected, so a missing extra is a clear :class:`ConfigError`, not an
ImportError deep inside Prefect.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner

from hopforge.config import Config
from hopforge.errors import ConfigError
from hopforge.stage import get_stage


def _missing_extra(runner: str, package: str, err: ImportError) -> ConfigError:
    return ConfigError(
        f"flows.task_runner = {runner!r} needs the optional dependency {package!r} "
        f"(install it with: pip install 'hopforge[{runner}]'): {err}"
    )


@contextlib.contextmanager
def cluster_for(cfg: Config) -> Iterator[str | None]:
    """Yield the address task runners of this run should connect to.

    For ``dask`` without ``flows.dask_address`` this starts one LocalCluster of
    ``flows.dask_workers`` worker processes on 127.0.0.1 for the whole pipeline
    (instead of one per stage flow) and closes it afterwards; likewise ``ray``
    without ``flows.ray_address`` starts one local Ray instance (no dashboard) that
    every stage's RayTaskRunner joins, unless this process already joined one.
    Otherwise it yields the configured address (None = the runner's own default).
    """
    fc = cfg.flows
    if fc.task_runner == "dask" and not fc.dask_address:
        try:
            from distributed import LocalCluster
        except ImportError as e:
            raise _missing_extra("dask", "prefect-dask", e) from None
        # One thread per worker process: stage batches are CPU- or teacher-bound and
        # each batch already parallelises its own teacher requests.
        with LocalCluster(n_workers=fc.dask_workers, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None) as cluster:
            yield cluster.scheduler_address
        return
    if fc.task_runner == "ray" and not fc.ray_address:
        try:
            import ray
        except ImportError as e:
            raise _missing_extra("ray", "prefect-ray", e) from None
        if ray.is_initialized():  # e.g. a test or notebook that started Ray itself
            yield None
            return
        ray.init(include_dashboard=False, log_to_driver=False)
        try:
            yield None
        finally:
            ray.shutdown()
        return
    if fc.task_runner == "dask":
        yield fc.dask_address
    elif fc.task_runner == "ray":
        yield fc.ray_address
    else:
        yield None


def teacher_is_managed(cfg: Config) -> bool:
    """True when hopforge launches the model server itself on ``teacher.host:teacher.port``
    (cpu / vllm backends without ``teacher.base_url`` or ``teacher.base_urls``)."""
    return cfg.teacher.backend in ("cpu", "vllm") and not cfg.teacher.endpoints()


def make_task_runner(cfg: Config, address: str | None = None, stage: str | None = None) -> Any:
    """A fresh Prefect task runner for one flow run, as ``cfg.flows.task_runner`` says.

    ``address`` (from :func:`cluster_for`) overrides the configured cluster address.
    Batches of one stage run share one teacher per process (:mod:`hopforge.llm.service`):
    with the thread runner, ``flows.max_workers`` batches run at once against the one
    server. A teacher-bound stage with a hopforge-managed server (cpu / vllm without
    ``base_url(s)``) runs on threads of the flow process even when Dask or Ray is selected:
    worker processes would each launch a model on the same port and GPU. To spread
    rollouts over Dask/Ray workers, serve the model yourself and list the endpoints in
    ``teacher.base_urls``.
    """
    fc = cfg.flows
    if stage is not None and get_stage(stage).talks_to_teacher(cfg) and teacher_is_managed(cfg):
        return ThreadPoolTaskRunner(max_workers=fc.max_workers)
    if fc.task_runner == "thread":
        return ThreadPoolTaskRunner(max_workers=fc.max_workers)
    if fc.task_runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as e:
            raise _missing_extra("dask", "prefect-dask", e) from None
        address = address or fc.dask_address
        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                              cluster_kwargs={"n_workers": fc.dask_workers, "threads_per_worker": 1,
                                              "processes": True, "host": "127.0.0.1",
                                              "dashboard_address": None})
    if fc.task_runner == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as e:
            raise _missing_extra("ray", "prefect-ray", e) from None
        return RayTaskRunner(address=address or fc.ray_address)
    raise ConfigError(f"flows.task_runner: unknown runner {fc.task_runner!r}")  # pydantic already restricts it
