"""The managed server launcher: command lines (no GPU needed) and the health/restart/stop logic,
exercised on a real stand-in process (the scripted server as a subprocess)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hopforge.config import load_config
from hopforge.errors import TeacherError
from hopforge.llm.servers import ManagedServer, _healthy, llama_cpp_command, scripted_command, vllm_command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_vllm_command_line_from_config() -> None:
    cfg = load_config(None, {"teacher.backend": "vllm", "teacher.model": "Qwen/Qwen3-8B", "teacher.port": 8400,
                             "teacher.gpu_memory_utilization": 0.85, "teacher.tensor_parallel_size": 2,
                             "teacher.context_tokens": 32768, "teacher.extra_args": ["--max-num-seqs", "512"],
                             "run.seed": 3})
    assert vllm_command(cfg) == [
        "vllm", "serve", "Qwen/Qwen3-8B", "--host", "127.0.0.1", "--port", "8400",
        "--gpu-memory-utilization", "0.85", "--tensor-parallel-size", "2", "--max-model-len", "32768",
        "--seed", "3", "--enable-auto-tool-choice", "--tool-call-parser", "hermes", "--max-num-seqs", "512"]


def test_llama_cpp_command_line_from_config() -> None:
    cfg = load_config(None, {"teacher.port": 8411, "teacher.threads": 2, "teacher.context_tokens": 4096})
    cmd = llama_cpp_command(cfg, model_path="/models/g.gguf")
    assert cmd[:3] == [sys.executable, "-m", "llama_cpp.server"]
    assert cmd[3:] == ["--model", "/models/g.gguf", "--model_alias", "gemma-3-270m", "--host", "127.0.0.1",
                       "--port", "8411", "--n_ctx", "4096", "--n_threads", "2"]


def test_health_restart_and_stop_with_a_real_process(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/health"
    server = ManagedServer(scripted_command(port, policy="loop"), url, startup_timeout_s=30, max_restarts=1,
                           log_path=tmp_path / "server.log", poll_s=0.1)

    async def go() -> tuple[int, int]:
        async with server:
            first = server.pid
            assert first is not None and _healthy(url)
            os.kill(first, signal.SIGKILL)  # the server dies under us
            deadline = time.monotonic() + 30
            while (server.pid == first or not _healthy(url)) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert server.restarts == 1 and _healthy(url)
            return first, server.pid  # type: ignore[return-value]

    first, second = asyncio.run(go())
    assert first != second
    assert server.proc is None and not _healthy(url)  # stopped on exit
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)
    assert "scripted server listening" in (tmp_path / "server.log").read_text()


def test_gives_up_after_max_restarts() -> None:
    port = free_port()
    server = ManagedServer(scripted_command(port, policy="loop"), f"http://127.0.0.1:{port}/health",
                           startup_timeout_s=30, max_restarts=0)
    with server:
        os.kill(server.pid, signal.SIGKILL)  # type: ignore[arg-type]
        server.proc.wait(5)  # type: ignore[union-attr]
        with pytest.raises(TeacherError, match="died 1 times; giving up"):
            server.check()


def test_startup_failure_and_timeout_are_clear_errors() -> None:
    port = free_port()
    bad = ManagedServer([sys.executable, "-c", "import sys; sys.exit(3)"], f"http://127.0.0.1:{port}/health",
                        startup_timeout_s=10)
    with pytest.raises(TeacherError, match="exited with code 3 during startup"):
        bad.start()
    silent = ManagedServer([sys.executable, "-c", "import time; time.sleep(60)"], f"http://127.0.0.1:{port}/health",
                           startup_timeout_s=1)
    with pytest.raises(TeacherError, match="not healthy .* after 1s"):
        silent.start()
    assert silent.proc is None
    with pytest.raises(TeacherError, match="cannot start teacher server"):
        ManagedServer(["/nonexistent/vllm"], "http://127.0.0.1:1/health").start()


def test_stop_during_startup_ends_the_wait_at_once() -> None:
    # The watchdog restarts a server in a thread; a teacher that closes meanwhile stops it. The
    # restart must then give up at once, not poll until startup_timeout_s (asyncio.run waits for it).
    import threading

    port = free_port()
    server = ManagedServer([sys.executable, "-c", "import time; time.sleep(60)"], f"http://127.0.0.1:{port}/health",
                           startup_timeout_s=30)
    errors: list[BaseException] = []

    def start() -> None:
        try:
            server.start()
        except TeacherError as e:
            errors.append(e)

    t = threading.Thread(target=start)
    t.start()
    while server.proc is None:
        time.sleep(0.01)
    t0 = time.monotonic()
    server.stop()
    t.join(10)
    assert not t.is_alive() and time.monotonic() - t0 < 5
    assert len(errors) == 1 and "stopped during startup" in str(errors[0])


class _RestartRace:
    """A transport whose first request fails the way a request in flight during a restart does;
    ``during`` says what the managed server is doing when the client sees the failure."""

    def __init__(self, server: ManagedServer, during: str) -> None:
        self.server, self.during, self.calls = server, during, 0

    async def post(self, path: str, body: bytes) -> dict:
        from hopforge.llm.client import EndpointDownError
        self.calls += 1
        if self.calls > 1:
            return {"ok": True}
        loop = asyncio.get_running_loop()
        if self.during == "restart already done":  # the failure is seen late, after a whole restart
            self.server.generation += 1
        else:  # the process is not reaped yet: the watchdog starts the restart half a poll later
            def begin() -> None:
                self.server.restarting = True
                self.server.generation += 1
                loop.call_later(0.2, lambda: setattr(self.server, "restarting", False))
            loop.call_later(self.server.poll_s / 2, begin)
        raise EndpointDownError("POST /v1/chat/completions: connection failed: nothing listens")

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize("during", ["restart already done", "process not reaped yet"])
def test_a_request_failed_by_a_restart_does_not_spend_a_retry(during: str) -> None:
    # Under load the client can see its connection drop before the watchdog has noticed the death,
    # or only after the restart is over; neither is the endpoint's fault, so neither costs a retry.
    from hopforge.llm.client import Retry, Teacher
    server = ManagedServer([sys.executable, "-c", "import time; time.sleep(60)"], "http://127.0.0.1:1/health",
                           poll_s=0.1)
    server.proc = subprocess.Popen(server.cmd, start_new_session=True)
    try:
        transport = _RestartRace(server, during)
        teacher = Teacher(transport, "chat", backend="vllm", model="m", retry=Retry(0, 0.01, 0.02),  # type: ignore[arg-type]
                          server=server)
        resp, retries, _ = asyncio.run(teacher.post("/v1/chat/completions", b"{}"))
        assert resp == {"ok": True} and retries == 0 and transport.calls == 2
    finally:
        server.stop()


def test_a_failure_of_a_live_server_still_spends_retries() -> None:
    from hopforge.llm.client import EndpointDownError, Retry, Teacher

    class Down:
        calls = 0

        async def post(self, path: str, body: bytes) -> dict:
            Down.calls += 1
            raise EndpointDownError("POST /x: connection failed: nothing listens")

        async def aclose(self) -> None:
            pass

    server = ManagedServer([sys.executable, "-c", "import time; time.sleep(60)"], "http://127.0.0.1:1/health",
                           poll_s=0.05)
    server.proc = subprocess.Popen(server.cmd, start_new_session=True)
    try:
        teacher = Teacher(Down(), "chat", backend="vllm", model="m", retry=Retry(2, 0.01, 0.02),  # type: ignore[arg-type]
                          server=server)
        with pytest.raises(TeacherError, match="gave up after 2 retries"):
            asyncio.run(teacher.post("/x", b"{}"))
        assert Down.calls == 3
    finally:
        server.stop()
