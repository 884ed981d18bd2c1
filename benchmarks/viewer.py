"""Viewer benchmark: page latency of `hopforge view` over a 1M-question run.

    PYTHONPATH=src .venv/bin/python benchmarks/viewer.py [--questions 1000000] [--work DIR] [--repeat 5]

Builds synthetic tables column-wise with pyarrow (ids are 20-hex content-hash-like strings in
random order, as real ids are), then times full
HTTP requests through FastAPI's TestClient: SQL + Jinja rendering, median of --repeat after one
warm-up. Sizes: N questions with 2-4 evidence sentences each, N trajectories (one per question),
N/4 kept, N/5 rejects, N difficulty rows, and a turns table of --turn-trajectories x 20 turns
plus one 300-turn trajectory to render.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from hopforge.storage import ShardWriter
from hopforge.storage.schemas import EVIDENCE, schema_for

CHUNK = 250_000
WORDS = np.array("the of river town castle was built by and in a to north county museum station first "
                 "school church founded near league island bridge author painter".split())


_POOLS: dict[int, pa.Array] = {}


def _text(rng: np.random.Generator, n: int, words: int) -> pa.Array:
    """``n`` strings of ``words`` random words, drawn from a pool of 20k (joining per row is too slow at 1M)."""
    if words not in _POOLS:
        picks = WORDS[rng.integers(0, len(WORDS), (20_000, words))]
        _POOLS[words] = pa.array([" ".join(row) for row in picks])
    return _POOLS[words].take(pa.array(rng.integers(0, 20_000, n)))


def _ids(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.array([f"{x:020x}" for x in rng.integers(0, 2**63, n, dtype=np.int64)])


def _table(name: str, n: int, cols: dict[str, pa.Array]) -> pa.Table:
    schema = schema_for(name)
    return pa.table({f.name: cols.get(f.name, pa.nulls(n, f.type)) for f in schema}, schema=schema)


def build(out: Path, n: int, turn_trajectories: int, seed: int = 0) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    qids = _ids(rng, n)
    tids = _ids(rng, n)
    with ShardWriter(out, "questions", run_id="bench", rows_per_shard=CHUNK) as w:
        for s in range(0, n, CHUNK):
            m = min(CHUNK, n - s)
            hops = rng.integers(2, 5, m).astype(np.int32)
            offsets = np.concatenate([[0], np.cumsum(hops)]).astype(np.int32)
            k = int(offsets[-1])
            ev = pa.StructArray.from_arrays(
                [pa.array(np.tile(np.arange(1, 5, dtype=np.int32), k)[:k]), _text(rng, k, 2), _text(rng, k, 2),
                 _text(rng, k, 2), _text(rng, k, 25)], fields=list(EVIDENCE))
            w.write_table(_table("questions", m, {
                "question_id": pa.array(qids[s:s + m]), "walk_id": pa.array(qids[s:s + m]),
                "question": _text(rng, m, 22), "answer": _text(rng, m, 2), "hops": pa.array(hops),
                "evidence": pa.ListArray.from_arrays(pa.array(offsets), ev),
                "path": pa.ListArray.from_arrays(pa.array(offsets + np.arange(m + 1, dtype=np.int32)),
                                                 _text(rng, k + m, 2)),
                "passed": pa.array(rng.random(m) > 0.1), "composer": pa.array(["template"] * m)}))
    with ShardWriter(out, "trajectories", run_id="bench", rows_per_shard=CHUNK) as w:
        for s in range(0, n, CHUNK):
            m = min(CHUNK, n - s)
            w.write_table(_table("trajectories", m, {
                "trajectory_id": pa.array(tids[s:s + m]), "question_id": pa.array(qids[s:s + m]),
                "attempt": pa.array(np.zeros(m, np.int32)), "status": pa.array(["answered"] * m),
                "num_turns": pa.array(rng.integers(4, 300, m).astype(np.int32))}))
    kept = rng.choice(n, n // 4, replace=False)
    with ShardWriter(out, "kept", run_id="bench", rows_per_shard=CHUNK) as w:
        w.write_table(_table("kept", len(kept), {"trajectory_id": pa.array(tids[kept]),
                                                 "question_id": pa.array(qids[kept]),
                                                 "correct": pa.array(np.ones(len(kept), bool))}))
    rej = rng.choice(n, n // 5, replace=False)
    reasons = np.array(["answer_mismatch", "too_few_tool_calls", "repeated_call_loop", "turn_limit_reached"])
    with ShardWriter(out, "rejects", run_id="bench", rows_per_shard=CHUNK) as w:
        w.write_table(_table("rejects", len(rej), {
            "stage": pa.array(["filter"] * len(rej)), "step": pa.array(["answer_match"] * len(rej)),
            "reason": pa.array(reasons[rng.integers(0, 4, len(rej))]), "row_table": pa.array(["trajectories"] * len(rej)),
            "row_id": pa.array(tids[rej])}))
    with ShardWriter(out, "difficulty", run_id="bench", rows_per_shard=CHUNK) as w:
        w.write_table(_table("difficulty", n, {"question_id": pa.array(qids), "k": pa.array(np.full(n, 4, np.int32)),
                                               "solve_rate_tools": pa.array(rng.integers(0, 5, n) / 4),
                                               "solve_rate_no_tools": pa.array(rng.integers(0, 5, n) / 4)}))
    roles = np.array(["assistant", "tool"])
    with ShardWriter(out, "turns", run_id="bench", rows_per_shard=CHUNK) as w:
        long_id = str(tids[0])
        lengths = [300] + [20] * turn_trajectories
        traj = np.repeat(np.concatenate([[long_id], tids[1:turn_trajectories + 1]]), lengths)
        idx = np.concatenate([np.arange(L, dtype=np.int32) for L in lengths])
        for s in range(0, len(traj), CHUNK):
            m = min(CHUNK, len(traj) - s)
            w.write_table(_table("turns", m, {
                "trajectory_id": pa.array(traj[s:s + m]), "question_id": pa.array(np.full(m, qids[0])),
                "turn_index": pa.array(idx[s:s + m]), "role": pa.array(roles[idx[s:s + m] % 2]),
                "content": _text(rng, m, 120), "reasoning": _text(rng, m, 30),
                "latency_ms": pa.array(rng.random(m) * 1000), "context_action": pa.array(["none"] * m)}))
    return {"deep_page": str(int(n * 0.9) // 50), "question": str(qids[0]), "trajectory": long_id}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=1_000_000)
    ap.add_argument("--turn-trajectories", type=int, default=50_000)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--reuse", action="store_true", help="reuse the tables a previous run left in --work")
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    from hopforge.viewer import create_app

    work = args.work or Path(tempfile.mkdtemp(prefix="hopforge-viewer-bench-"))
    out = work / "data"
    t0 = time.perf_counter()
    if args.reuse and (work / "ids.json").exists():
        ids = json.loads((work / "ids.json").read_text())
    else:
        ids = build(out, args.questions, args.turn_trajectories)
        (work / "ids.json").write_text(json.dumps(ids))
    build_s = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in out.rglob("*.parquet"))
    cases = [
        ("overview (funnel + rejects by reason; cached after first)", "/"),
        ("question list, first page", "/questions"),
        ("question list, page at 50%", f"/questions?page={int(ids['deep_page']) * 5 // 9}"),
        ("question list, page at 90%", f"/questions?page={ids['deep_page']}"),
        ("question list, last page", f"/questions?page={-(-args.questions // 50)}"),
        ("filter hops=3", "/questions?hops=3"),
        ("filter hops=3, page at 90% of its pages", f"/questions?hops=3&page={int(ids['deep_page']) // 3}"),
        ("filter status=kept", "/questions?status=kept"),
        ("filter status=rejected", "/questions?status=rejected"),
        ("filter reason=answer_mismatch", "/questions?reason=answer_mismatch"),
        ("filter solve rate 0.25..0.75", "/questions?solve_min=0.25&solve_max=0.75"),
        ("filter turns >= 250", "/questions?turns_min=250"),
        ("filter text contains 'castle museum'", "/questions?text=castle+museum"),
        ("one question (walk, trajectories, rejects)", f"/q/{ids['question']}"),
        ("one 300-turn trajectory", f"/t/{ids['trajectory']}"),
        ("SQL box: count by hops", "/sql?q=SELECT+hops,+count(*)+FROM+questions+GROUP+BY+1"),
    ]
    results = []
    with TestClient(create_app(out), base_url="http://127.0.0.1:8765") as client:  # the Host check wants 127.0.0.1
        t0 = time.perf_counter()
        client.get("/sql?q=SELECT+1")
        open_s = time.perf_counter() - t0
        for label, url in cases:
            times, cpu = [], []
            for _ in range(args.repeat + 1):
                t0, c0 = time.perf_counter(), time.process_time()
                r = client.get(url)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                assert r.status_code == 200, (url, r.status_code, r.text[:500])
            results.append((label, times[0], statistics.median(times[1:]), statistics.median(cpu[1:]),
                            len(r.content)))
    print(f"# viewer benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()})")
    print(f"{args.questions:,} questions, {args.questions:,} trajectories, {args.questions // 4:,} kept, "
          f"{args.questions // 5:,} rejects, {args.turn_trajectories * 20 + 300:,} turns; "
          f"{size / 2**20:.0f} MiB Parquet built in {build_s:.1f}s; first request (opens catalog) {open_s * 1000:.0f} ms")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (2 cores)")
    print("\n| request | first (ms) | median wall (ms) | median CPU, all threads (ms) | page bytes |")
    print("|---|---:|---:|---:|---:|")
    for label, first, med, cpu_med, nbytes in results:
        print(f"| {label} | {first * 1000:.0f} | {med * 1000:.0f} | {cpu_med * 1000:.0f} | {nbytes:,} |")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
