"""Load: 1,024 requests in flight against the scripted server on 127.0.0.1, memory flat.

The server runs as its own process (so its memory is not counted as the engine's)
with 300 ms latency per reply, which keeps every admitted request in flight long
enough for the engine to reach its ``rollout.max_in_flight`` bound. The engine
runs 3 x 1,024 trajectories of 5 requests each (15,360 requests); the highest RSS
while the 2nd block of 1,024 finishes is compared with the highest while the 3rd does. After the first 1,024 the engine
holds its steady-state population (2 x max_in_flight coroutines, bounded sink
buffer), so memory must stay flat from there on: no unbounded queue, no per-turn
or per-trajectory leak.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hopforge.llm.client import make_teacher
from hopforge.rollouts.engine import LiveStats, RolloutEngine, TrajectorySink
from hopforge.rollouts.environment import Environment
from hopforge.stage import resolve
from hopforge.storage import read_table
from tests.reliability.conftest import peak_rss_bytes, rss_bytes
from tests.rollouts.rollout_fixtures import rollout_cfg, write_wiki

SRC = Path(__file__).resolve().parents[2] / "src"
IN_FLIGHT = 1024
N = 1024
MiB = 1024 * 1024


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_1024_in_flight_memory_stays_flat(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_wiki(out)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "hopforge.testing.scripted", "--port", str(port), "--policy",
                               "loop", "--loop-turns", "4", "--latency-ms", "300"],
                              env={**os.environ, "PYTHONPATH": str(SRC)}, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        cfg = rollout_cfg(out, f"http://127.0.0.1:{port}", **{
            "rollout.max_in_flight": IN_FLIGHT, "rollout.request_timeout_s": 60.0, "rollout.retries": 4,
            "rollout.flush_every": 256, "rollout.flush_seconds": 5.0})
        stats = LiveStats()
        rss: dict[int, int] = {}
        peak_in_flight = 0

        async def go() -> None:
            nonlocal peak_in_flight
            stage_run = resolve(cfg, "rollouts")
            env = Environment.from_tables(out, stage_run.partition("graph"))
            sink = TrajectorySink(lambda tables: stage_run.commit(tables, "load"), flush_every=cfg.rollout.flush_every,
                                  flush_seconds=cfg.rollout.flush_seconds)
            async with make_teacher(cfg) as teacher:
                engine = RolloutEngine(cfg, teacher, env, sink, stats)
                items = [(f"load-{i:05d}", f"Load question {i}?", 0) for i in range(3 * N)]
                run = asyncio.create_task(engine.run(items))
                while not run.done():
                    peak_in_flight = max(peak_in_flight, teacher.in_flight)
                    # Highest RSS seen while the 2nd / 3rd block of N trajectories finishes: peaks include a
                    # sink flush in every block alike, so comparing them is not at the mercy of flush timing.
                    block = stats.trajectories // N
                    if block in (1, 2):
                        rss[block] = max(rss.get(block, 0), rss_bytes())
                    await asyncio.sleep(0.02)
                await run
                rss[3] = rss_bytes()

        t0 = time.monotonic()
        asyncio.run(go())
        seconds = time.monotonic() - t0
        server_peak = peak_rss_bytes(server.pid)
    finally:
        server.terminate()
        server.wait(10)
        log.close()
    assert stats.trajectories == 3 * N and stats.status == {"answered": 3 * N}, stats
    assert stats.turns == 3 * N * 5 and stats.retries == 0
    assert peak_in_flight >= IN_FLIGHT * 0.95, peak_in_flight  # the bound was reached ...
    ids = read_table(out, "trajectories", columns=["trajectory_id"]).column(0).to_pylist()
    assert len(ids) == len(set(ids)) == 3 * N  # ... and everything was written once
    growth = max(rss[2], rss[3]) - rss[1]
    print(f"\n[reliability] load: {3 * N} trajectories, {stats.turns} requests in {seconds:.1f}s, peak in flight "
          f"{peak_in_flight}; engine RSS max while trajectories {N}-{2 * N} / {2 * N}-{3 * N} finished, at the end: "
          f"{rss[1] / MiB:.0f} / {rss[2] / MiB:.0f} / {rss[3] / MiB:.0f} MiB, peak {peak_rss_bytes() / MiB:.0f} MiB; "
          f"server peak {server_peak / MiB:.0f} MiB")
    # Flat: the third block of 1,024 trajectories needs no more memory than the second (allocator noise only).
    # 16 MiB over 1,024 trajectories = 16 KiB each: keeping each trajectory's turn rows would exceed it.
    assert growth < 16 * MiB, (rss, growth)
