"""``hopforge serve``: the pipeline as a Prefect deployment on a cron schedule.

``flow.serve`` registers a deployment with the Prefect API and then runs, in
this process, every flow run the scheduler creates for it, until interrupted
(Ctrl-C pauses the schedule: nothing fires while nobody serves). Schedules
need a persistent server (``prefect server start``, whose scheduler service
creates the runs), so unlike ``hopforge run`` this refuses the ephemeral API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hopforge import __version__
from hopforge.config import Config
from hopforge.errors import ConfigError


def cron_schedule(cfg: Config) -> Any:
    """``flows.cron`` in ``flows.timezone`` as a Prefect schedule; a bad expression is a ConfigError."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.schedules import Cron

    try:
        CronSchedule(cron=cfg.flows.cron, timezone=cfg.flows.timezone)
    except ValidationError as e:
        raise ConfigError(f"flows.cron / flows.timezone: {cfg.flows.cron!r} in {cfg.flows.timezone!r} is not a "
                          f"valid schedule: {e.errors()[0]['msg']}") from None
    return Cron(cfg.flows.cron, timezone=cfg.flows.timezone)


def deployment_parameters(config_path: str | Path | None, overrides: dict[str, Any],
                          stages: list[str] | None) -> dict[str, Any]:
    """Parameters stored with the deployment: absolute paths, so a scheduled run does
    not depend on the directory the server or worker happens to run in."""
    ov = {k: v for k, v in overrides.items() if v is not None}
    if "run.out" in ov:
        ov["run.out"] = str(Path(ov["run.out"]).resolve())
    return {"config_path": str(Path(config_path).resolve()) if config_path else None,
            "overrides": ov, "stages": stages, "refresh": False}


def serve_pipeline(cfg: Config, config_path: str | Path | None, overrides: dict[str, Any], *,
                   name: str = "hopforge", stages: list[str] | None = None, limit: int | None = None) -> None:
    """Create/update deployment ``pipeline/<name>`` with ``cfg.flows.cron`` and serve it (blocks)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.types.entrypoint import EntrypointType

    from hopforge.flows.pipeline import pipeline
    from hopforge.stage import select_stages

    if not PREFECT_API_URL.value():
        raise ConfigError("hopforge serve needs a running Prefect server for its schedule: start one with "
                          "`prefect server start --host 127.0.0.1` and set "
                          "PREFECT_API_URL=http://127.0.0.1:4200/api (see docs/flows.md)")
    schedule = cron_schedule(cfg)
    if stages:
        select_stages(stages)
    pipeline.serve(
        name=name,
        schedules=[schedule],
        parameters=deployment_parameters(config_path, overrides, stages),
        description=f"hopforge pipeline on {cfg.run.out}",
        tags=["hopforge"],
        version=__version__,
        limit=limit,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
