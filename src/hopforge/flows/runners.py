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
    (instead of one per stage flow) and closes it afterwards. Otherwise it yields
    the configured address (None = the runner's own default).
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
    if fc.task_runner == "dask":
        yield fc.dask_address
    elif fc.task_runner == "ray":
        yield fc.ray_address
    else:
        yield None


def teacher_is_managed(cfg: Config) -> bool:
    """True when each rollout batch would launch its own local model server on
    ``teacher.host:teacher.port`` (cpu / vllm backends without ``teacher.base_url``)."""
    return cfg.teacher.backend in ("cpu", "vllm") and not cfg.teacher.base_url


def make_task_runner(cfg: Config, address: str | None = None, stage: str | None = None) -> Any:
    """A fresh Prefect task runner for one flow run, as ``cfg.flows.task_runner`` says.

    ``address`` (from :func:`cluster_for`) overrides the configured cluster address.
    Teacher-bound batches (rollouts, LLM-composed questions) with a hopforge-managed
    teacher run one at a time in the flow process: each batch starts the server on
    the same fixed port, so two at once would collide (and two model copies would
    not fit a GPU anyway). To scale rollouts out, start the server once and set
    ``teacher.base_url``.
    """
    fc = cfg.flows
    if stage is not None and get_stage(stage).talks_to_teacher(cfg) and teacher_is_managed(cfg):
        return ThreadPoolTaskRunner(max_workers=1)
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
