"""Rollout benchmarks: engine CPU per turn, turns/s, lean client vs openai SDK, search latency,
and per-turn CPU at turn 10 vs turn 300 of one long trajectory.

The teacher is the scripted server in a *separate process* (zero latency, LoopPolicy), so the
engine process's CPU time (``time.process_time``: engine + HTTP client + environment + shard
writes) is measured apart from the server's. turns/s is bounded by that single-threaded Python
server on a shared 2-core VM, not by the engine.

    PYTHONPATH=src:. python benchmarks/rollouts.py [--quick] [--wiki OUT_WITH_ENWIKI_PAGES [--search-only]]

``--wiki`` takes an OUT directory holding enwiki-233 ``pages`` (
``hopforge ingest ../shared/wiki/enwiki-233.xml.bz2 --out OUT``).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hopforge.config import load_config
from hopforge.rollouts.environment import Environment
from hopforge.llm.servers import ManagedServer, scripted_command
from hopforge.rollouts.engine import RolloutEngine, LiveStats, TrajectorySink
from hopforge.llm.client import make_teacher
from hopforge.storage import write_group
from tests.rollouts.rollout_fixtures import write_wiki


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine_run(out: Path, url: str, env: Environment, *, in_flight: int, trajectories: int, turns: int,
               client: str = "lean", write: bool = True) -> dict:
    cfg = load_config(None, {"run.out": str(out), "run.run_id": f"bench-{in_flight}-{client}",
                             "teacher.backend": "scripted", "teacher.base_url": url, "teacher.client": client,
                             "teacher.model": "scripted", "teacher.context_tokens": 1_000_000,
                             "rollout.max_in_flight": in_flight, "rollout.max_turns": turns + 5,
                             "rollout.flush_every": 256})

    async def go() -> tuple[LiveStats, float, float]:
        stats = LiveStats()
        async with make_teacher(cfg) as teacher:
            sink = TrajectorySink(lambda tables: write_group(out, tables, run_id=cfg.run.run_id, batch="bench"),
                                  flush_every=cfg.rollout.flush_every, flush_seconds=cfg.rollout.flush_seconds)
            engine = RolloutEngine(cfg, teacher, env, sink if write else None, stats)
            items = [(f"q{i}", f"Bench question {i}?", 0) for i in range(trajectories)]
            c0, w0 = time.process_time(), time.perf_counter()
            await engine.run(items)
            return stats, time.process_time() - c0, time.perf_counter() - w0

    stats, cpu, wall = asyncio.run(go())
    return {"in_flight": in_flight, "client": client, "turns": stats.turns, "trajectories": stats.trajectories,
            "cpu_ms_per_turn": 1e3 * cpu / max(1, stats.turns), "turns_per_s": stats.turns / wall,
            "errors": stats.errors, "wall_s": wall}


def turn_cpu_profile(out: Path, url: str, env: Environment, turns: int) -> dict:
    """CPU of the engine between consecutive requests of ONE trajectory, by turn index."""
    cfg = load_config(None, {"run.out": str(out), "run.run_id": "bench-long", "teacher.backend": "scripted",
                             "teacher.base_url": url, "teacher.model": "scripted",
                             "teacher.context_tokens": 10_000_000, "rollout.max_turns": turns + 5,
                             "rollout.token_budget": 100_000_000})
    marks: list[tuple[float, float]] = []

    async def go() -> None:
        async with make_teacher(cfg) as teacher:
            post = teacher.post

            async def timed(path: str, body: bytes):  # type: ignore[no-untyped-def]
                c = time.process_time()
                r = await post(path, body)
                marks.append((c, time.process_time()))  # CPU before the send, after the reply
                return r

            teacher.post = timed  # type: ignore[method-assign]
            engine = RolloutEngine(cfg, teacher, env, None)
            await engine.run([("long", "Long horizon question?", 0)])

    asyncio.run(go())
    # per-turn engine CPU = CPU from one request's send to the next send (includes the client's own
    # send/receive work, parse, environment, appending); server time is in another process.
    per_turn = [1e3 * (marks[i + 1][0] - marks[i][0]) for i in range(len(marks) - 1)]

    def around(t: int) -> float:
        return statistics.median(per_turn[max(0, t - 5): t + 5])

    return {"turns": len(marks), "cpu_ms_turn_10": around(10), "cpu_ms_turn_300": around(min(300, len(per_turn) - 5))}


def search_latency(env: Environment, n: int = 2000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    words = [w for t in env.titles for w in t.split() if len(w) > 3]
    queries = [" ".join(rng.choice(words, size=int(rng.integers(1, 5)))) for _ in range(n)]
    for q in queries[:50]:
        env.search(q, 5)
    lat = []
    for q in queries:
        t = time.perf_counter()
        env.search(q, 5)
        lat.append((time.perf_counter() - t) * 1e3)
    return {"queries": n, "passages": env.num_passages, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "mean_ms": float(np.mean(lat))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wiki", type=Path, help="OUT directory holding enwiki-233 pages (for search latency)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--search-only", action="store_true", help="only the search latency (needs --wiki)")
    ap.add_argument("--turns", type=int, default=8)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hopforge-bench-"))
    out = tmp / "out"
    write_wiki(out)
    env = Environment.from_tables(out)
    print(f"# rollout benchmark  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  "
          f"{platform.machine()} python {platform.python_version()}")
    if a.wiki:
        wenv = Environment.from_tables(a.wiki)
        print("search on", a.wiki, search_latency(wenv))
        t = time.perf_counter()
        Environment.from_tables(a.wiki, cache=False)
        print(f"index build (no cache): {time.perf_counter() - t:.2f}s")
        t = time.perf_counter()
        Environment.from_tables(a.wiki)
        print(f"index load (cache): {time.perf_counter() - t:.2f}s")
    if a.search_only:
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with ManagedServer(scripted_command(port, policy="loop", loop_turns=a.turns), url + "/health",
                       startup_timeout_s=60):
        levels = [(64, 256), (256, 512), (1024, 1024)] if not a.quick else [(64, 128), (256, 256)]
        for in_flight, n in levels:
            print(engine_run(out, url, env, in_flight=in_flight, trajectories=n, turns=a.turns))
    # lean vs SDK: 256 trajectories x 3 turns, all 256 in flight at once, no shard writes.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with ManagedServer(scripted_command(port, policy="loop", loop_turns=2), url + "/health", startup_timeout_s=60):
        for client in ("lean", "sdk"):
            print(engine_run(out, url, env, in_flight=256, trajectories=256, turns=2, client=client, write=False))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with ManagedServer(scripted_command(port, policy="loop", loop_turns=320), url + "/health", startup_timeout_s=60):
        print(turn_cpu_profile(out, url, env, 320))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
