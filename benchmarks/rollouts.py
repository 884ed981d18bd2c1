"""Rollout benchmarks: engine CPU per turn, turns/s, lean client vs openai SDK, search latency,
per-turn CPU at turns 10 / 300 / 600 of one long trajectory, and the re-sent ratio of the history.

The teacher is the scripted server in a *separate process* (zero latency, LoopPolicy), so the
engine process's CPU time (``time.process_time``: engine + HTTP client + environment + shard
writes) is measured apart from the server's. turns/s is bounded by that single-threaded Python
server on a shared 2-core VM, not by the engine.

    PYTHONPATH=src:. python benchmarks/rollouts.py [--quick] [--wiki OUT_WITH_ENWIKI_PAGES [--search-only]]
    PYTHONPATH=src:. python benchmarks/rollouts.py --resent-only      # the re-sent ratio only

Re-sent ratio: for every request of a trajectory but its first, the prompt bytes outside the
prefix it shares with the trajectory's previous request (what a server with prefix caching
must prefill again), summed, over the bytes the turns added (the model's reply and the tool
result). 1.0 means purely append-only. The scripted server measures it (``/_control/stats``).
The server always runs from *this* tree's ``src``, so the engine of another checkout can be
measured against it: ``PYTHONPATH=/path/to/old/src:. python benchmarks/rollouts.py --resent-only``.

``--wiki`` takes an OUT directory holding enwiki-233 ``pages`` (
``hopforge ingest ../shared/wiki/enwiki-233.xml.bz2 --out OUT``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson

import hopforge
from hopforge.config import RolloutConfig, load_config
from hopforge.rollouts.environment import Environment
from hopforge.llm.servers import ManagedServer
from hopforge.rollouts.engine import RolloutEngine, LiveStats, TrajectorySink
from hopforge.llm.client import make_teacher
from hopforge.storage import write_group
from tests.rollouts.rollout_fixtures import write_wiki

# The scripted server (and its prefix measurement) always comes from this tree, whichever engine runs.
THIS_SRC = Path(__file__).resolve().parents[1] / "src"
LONG_TITLES = ["Long page"]  # ~500-token page visits and ~5-passage searches: ~400 tokens a turn


def server(port: int, *, loop_turns: int, titles: list[str] | None = None) -> ManagedServer:
    cmd = [sys.executable, "-m", "hopforge.testing.scripted", "--port", str(port), "--policy", "loop",
           "--loop-turns", str(loop_turns)]
    if titles:
        cmd += ["--loop-titles", ",".join(titles)]
    return ManagedServer(cmd, f"http://127.0.0.1:{port}/health", startup_timeout_s=60,
                         env={"PYTHONPATH": str(THIS_SRC)})


def server_stats(url: str) -> dict:
    with urllib.request.urlopen(url + "/_control/stats", timeout=10) as r:
        return orjson.loads(r.read())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine_run(out: Path, url: str, env: Environment, *, in_flight: int, trajectories: int, turns: int,
               client: str = "lean", write: bool = True, shared: bool = False) -> dict:
    """``shared``: as the rollout stage runs a batch, on the stage run's teacher service (llm/service.py:
    the batch coroutine runs on the service's loop thread); else a Teacher on the engine's own loop."""
    cfg = load_config(None, {"run.out": str(out), "run.run_id": f"bench-{in_flight}-{client}",
                             "teacher.backend": "scripted", "teacher.base_url": url, "teacher.client": client,
                             "teacher.model": "scripted", "teacher.context_tokens": 1_000_000,
                             "rollout.max_in_flight": in_flight, "rollout.max_turns": turns + 5,
                             "rollout.flush_every": 256})

    async def go(teacher) -> tuple[LiveStats, float, float]:  # type: ignore[no-untyped-def]
        stats = LiveStats()
        sink = TrajectorySink(lambda tables: write_group(out, tables, run_id=cfg.run.run_id, batch="bench"),
                              flush_every=cfg.rollout.flush_every, flush_seconds=cfg.rollout.flush_seconds)
        engine = RolloutEngine(cfg, teacher, env, sink if write else None, stats)
        items = [(f"q{i}", f"Bench question {i}?", 0) for i in range(trajectories)]
        c0, w0 = time.process_time(), time.perf_counter()
        await engine.run(items)
        return stats, time.process_time() - c0, time.perf_counter() - w0

    async def own() -> tuple[LiveStats, float, float]:
        async with make_teacher(cfg) as teacher:
            return await go(teacher)

    if shared:
        from hopforge.llm.service import release_teachers, shared_teacher

        teacher = shared_teacher(cfg, scope=f"bench-{in_flight}")
        try:
            stats, cpu, wall = teacher.run(go(teacher))
        finally:
            release_teachers(f"bench-{in_flight}")
    else:
        stats, cpu, wall = asyncio.run(own())
    return {"in_flight": in_flight, "client": client, "shared_service": shared, "turns": stats.turns,
            "trajectories": stats.trajectories, "cpu_ms_per_turn": 1e3 * cpu / max(1, stats.turns),
            "turns_per_s": stats.turns / wall, "errors": stats.errors, "wall_s": wall}


def long_cfg(out: Path, url: str, run_id: str, turns: int, context_tokens: int):  # type: ignore[no-untyped-def]
    over = {"run.out": str(out), "run.run_id": run_id, "teacher.backend": "scripted", "teacher.base_url": url,
            "teacher.model": "scripted", "teacher.context_tokens": context_tokens, "teacher.max_tokens": 256,
            "rollout.max_turns": turns, "rollout.token_budget": 100_000_000}
    return load_config(None, over)


def turn_cpu_profile(out: Path, url: str, env: Environment, turns: int, context_tokens: int) -> dict:
    """CPU of the engine between consecutive requests of ONE trajectory, by turn index."""
    cfg = long_cfg(out, url, f"bench-long-{context_tokens}", turns, context_tokens)
    marks: list[tuple[float, float]] = []
    stats = LiveStats()

    async def go() -> None:
        async with make_teacher(cfg) as teacher:
            post = teacher.post

            async def timed(path: str, body: bytes, *a):  # type: ignore[no-untyped-def]
                c = time.process_time()
                r = await post(path, body, *a)
                marks.append((c, time.process_time()))  # CPU before the send, after the reply
                return r

            teacher.post = timed  # type: ignore[method-assign]
            engine = RolloutEngine(cfg, teacher, env, None, stats)
            await engine.run([("long", "Long horizon question?", 0)])

    asyncio.run(go())
    # per-turn engine CPU = CPU from one request's send to the next send (includes the client's own
    # send/receive work, parse, environment, appending, folding); server time is in another process.
    per_turn = [1e3 * (marks[i + 1][0] - marks[i][0]) for i in range(len(marks) - 1)]

    def around(t: int, how=statistics.median) -> float:  # type: ignore[no-untyped-def]
        return how(per_turn[max(0, t - 10): t + 10])

    last = len(per_turn) - 10
    out_d: dict = {"context_tokens": context_tokens, "turns": len(marks), "context_events": stats.context_events}
    for t in (10, 300, 600):
        tt = min(t, last)
        out_d[f"cpu_ms_turn_{t}"] = round(around(tt), 3)
        out_d[f"mean_cpu_ms_turns_{tt - 10}_{tt + 10}"] = round(around(tt, statistics.fmean), 3)
    out_d["ratio_600_vs_10"] = round(out_d["cpu_ms_turn_600"] / out_d["cpu_ms_turn_10"], 2)
    out_d["mean_cpu_ms_all_turns"] = round(statistics.fmean(per_turn), 3)
    return out_d


def resent_ratio(out: Path, env: Environment, turns: int, context_tokens: int) -> dict:
    """One trajectory of ``turns`` turns (alternating searches and page visits of ~2,000 characters)
    through a ``context_tokens`` window against a fresh scripted server; the server's prefix stats."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with server(port, loop_turns=turns - 1, titles=LONG_TITLES):
        cfg = long_cfg(out, url, f"resent-{turns}-{context_tokens}", turns, context_tokens)
        stats = LiveStats()

        async def go() -> None:
            async with make_teacher(cfg) as teacher:
                await RolloutEngine(cfg, teacher, env, None, stats).run([("resent", f"Resent {turns}?", 0)])

        asyncio.run(go())
        st = server_stats(url)
    tok = 1 / 4  # the scripted server's usage: 4 bytes a token
    return {"turns": stats.turns, "context_tokens": context_tokens, "status": stats.status,
            "context_events": stats.context_events,
            "resent_ratio": round(st["resent_ratio"], 3), "requests": st["requests"],
            "prompt_tokens_total": int(st["prompt_bytes"] * tok),
            "outside_prefix_tokens": int(st["outside_prefix_bytes"] * tok), "new_tokens": int(st["new_bytes"] * tok),
            "fold_to": "context_fold_to" in RolloutConfig.model_fields}


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
    ap.add_argument("--resent-only", action="store_true", help="only the re-sent ratio (works with an older engine)")
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--context", type=int, default=32768, help="context window of the long-trajectory runs")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hopforge-bench-"))
    out = tmp / "out"
    write_wiki(out)
    env = Environment.from_tables(out)
    print(f"# rollout benchmark  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  "
          f"{platform.machine()} python {platform.python_version()}  engine {Path(hopforge.__file__).parent}  "
          f"load {os.getloadavg()[0]:.1f}")
    if a.resent_only:
        for turns in (100, 600):
            for ctx in (a.context, 8192):
                print("resent", resent_ratio(out, env, turns, ctx))
        return
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
    with server(port, loop_turns=a.turns):
        levels = [(64, 256), (256, 512), (1024, 1024)] if not a.quick else [(64, 128), (256, 256)]
        for in_flight, n in levels:
            print(engine_run(out, url, env, in_flight=in_flight, trajectories=n, turns=a.turns))
            print(engine_run(out, url, env, in_flight=in_flight, trajectories=n, turns=a.turns, shared=True))
    # lean vs SDK: 256 trajectories x 3 turns, all 256 in flight at once, no shard writes.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with server(port, loop_turns=2):
        for client in ("lean", "sdk"):
            print(engine_run(out, url, env, in_flight=256, trajectories=256, turns=2, client=client, write=False))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with server(port, loop_turns=599, titles=LONG_TITLES):
        print("turn cpu", turn_cpu_profile(out, url, env, 600, a.context))
    for turns in (100, 600):
        print("resent", resent_ratio(out, env, turns, a.context))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
