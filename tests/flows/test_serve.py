"""hopforge serve: cron schedule from config, registered with a real `prefect server start`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hopforge.config import load_config
from hopforge.errors import ConfigError
from hopforge.flows.serve import cron_schedule, deployment_parameters


def test_cron_schedule_from_config() -> None:
    cfg = load_config(None, {"flows.cron": "17 4 * * 1", "flows.timezone": "Europe/Riga"})
    sched = cron_schedule(cfg)
    assert (sched.cron, sched.timezone) == ("17 4 * * 1", "Europe/Riga")


@pytest.mark.parametrize(("key", "value"), [("flows.cron", "61 * * * *"), ("flows.timezone", "Mars/Olympus")])
def test_bad_schedule_is_a_config_error_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match="flows.cron / flows.timezone"):
        cron_schedule(load_config(None, {key: value}))


def test_deployment_parameters_are_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    p = deployment_parameters("demo.toml", {"run.out": "data", "run.seed": None}, ["graph"])
    assert p == {"config_path": str(tmp_path / "demo.toml"), "overrides": {"run.out": str(tmp_path / "data")},
                 "stages": ["graph"], "refresh": False}


def test_serve_refuses_the_ephemeral_api(tmp_path: Path, hopforge_env: dict[str, str]) -> None:
    env = {k: v for k, v in hopforge_env.items() if k != "PREFECT_API_URL"}
    r = subprocess.run([sys.executable, "-m", "hopforge.cli", "serve", "--out", str(tmp_path / "o")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "needs a running Prefect server" in r.stderr


def _wait_http(url: str, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"process exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - 127.0.0.1
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not up after {timeout}s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.mark.slow
def test_serve_registers_deployment_with_cron_on_a_real_server(tmp_path: Path, free_port: int,
                                                                hopforge_env: dict[str, str]) -> None:
    from prefect.client.orchestration import PrefectClient

    api = f"http://127.0.0.1:{free_port}/api"
    env = {**hopforge_env, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api}
    config = tmp_path / "serve.toml"
    config.write_text('[flows]\ncron = "17 4 * * 1"\ntimezone = "UTC"\n')
    server = subprocess.Popen(["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(free_port)],
                              env={**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    served = None
    try:
        _wait_http(f"{api}/health", 150, server)
        served = subprocess.Popen([sys.executable, "-m", "hopforge.cli", "serve", "--config", str(config),
                                   "--out", str(tmp_path / "data"), "--name", "nightly"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  start_new_session=True)

        async def read() -> object:
            async with PrefectClient(api=api) as client:
                deadline = time.monotonic() + 90
                while True:
                    assert served.poll() is None, served.stderr.read().decode()[-2000:]
                    try:
                        return await client.read_deployment_by_name("pipeline/nightly")
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(1)

        dep = asyncio.run(read())
        assert [s.schedule.cron for s in dep.schedules] == ["17 4 * * 1"]
        assert dep.schedules[0].active
        assert dep.entrypoint == "hopforge.flows.pipeline.pipeline"
        assert dep.parameters["config_path"] == str(config)
        assert dep.parameters["overrides"] == {"run.out": str(tmp_path / "data")}
    finally:
        if served is not None:
            _stop(served)
        _stop(server)
