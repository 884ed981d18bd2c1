"""Storage benchmark: write and scan synthetic trajectory turns as zstd Parquet vs JSONL vs gzip JSONL.

    .venv/bin/python benchmarks/storage.py [--rows 1000000] [--work DIR]

Rows follow the `turns` schema with realistic sizes: a few KB of text per row (Zipf-distributed words
from a 30k-word vocabulary, so compression is neither trivial nor hopeless), typed tool arguments and
token counts. Every format gets the same rows, generated in chunks so memory stays bounded.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import resource
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import orjson
import pyarrow as pa

from hopforge.storage import ShardWriter, query_arrow
from hopforge.storage.schemas import schema_for

ROLES = np.array(["assistant", "tool", "assistant", "tool", "user"])
TOOLS = np.array(["search", "visit", "search", "visit", "answer"])


def make_vocab(rng: np.random.Generator, n: int = 30_000) -> np.ndarray:
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    lengths = rng.integers(2, 11, n)
    return np.array(["".join(rng.choice(letters, size=L)) for L in lengths])


def chunk_rows(rng: np.random.Generator, vocab: np.ndarray, start: int, n: int) -> list[dict]:
    words_per_row = rng.integers(250, 650, n)  # ~2-4 KB of text
    idx = (rng.zipf(1.3, words_per_row.sum()) - 1) % len(vocab)
    words = vocab[idx]
    bounds = np.concatenate([[0], np.cumsum(words_per_row)])
    rows = []
    for i in range(n):
        k = start + i
        role = ROLES[k % 5]
        tool = TOOLS[k % 5] if role == "assistant" else None
        rows.append({
            "trajectory_id": f"t{k // 50:08d}", "question_id": f"q{k // 200:08d}", "turn_index": k % 50,
            "role": role, "content": " ".join(words[bounds[i]:bounds[i + 1]]),
            "tool_name": tool,
            "tool_args": {"query": " ".join(words[bounds[i]:bounds[i] + 4]), "k": 5, "title": None, "page": None,
                          "text": None} if tool == "search" else None,
            "tokens_in": int(words_per_row[i] * 1.3), "tokens_out": int(rng.integers(5, 200)),
            "latency_ms": float(rng.gamma(2.0, 40.0)), "context_action": "none",
        })
    return rows


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=50_000)
    ap.add_argument("--work", type=Path, default=Path(__file__).parent / "_work" / "storage")
    ap.add_argument("--results", type=Path, default=None, help="append a markdown row here")
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    out = args.work / "data"
    rng = np.random.default_rng(0)
    vocab = make_vocab(rng)

    t_gen = t_pq = t_jsonl = t_gz = 0.0  # CPU seconds of this process (robust on a shared machine)
    jsonl = open(args.work / "turns.jsonl", "wb")
    gz = gzip.open(args.work / "turns.jsonl.gz", "wb", compresslevel=6)
    schema = schema_for("turns")
    with ShardWriter(out, "turns", run_id="bench", rows_per_shard=10**9) as w:
        for start in range(0, args.rows, args.chunk):
            n = min(args.chunk, args.rows - start)
            t0 = time.process_time()
            rows = chunk_rows(rng, vocab, start, n)
            t1 = time.process_time()
            w.write_table(pa.Table.from_pylist(rows, schema=schema))  # one shard per chunk
            t2 = time.process_time()
            blob = b"".join(orjson.dumps(r) + b"\n" for r in rows)
            jsonl.write(blob)
            t3 = time.process_time()
            gz.write(blob)
            t4 = time.process_time()
            t_gen += t1 - t0
            t_pq += t2 - t1
            t_jsonl += t3 - t2
            t_gz += (t3 - t2) + (t4 - t3)
    jsonl.close()
    gz.close()
    pq_bytes = sum(p.stat().st_size for p in (out / "turns").rglob("part-*.parquet"))
    jsonl_bytes = (args.work / "turns.jsonl").stat().st_size
    gz_bytes = (args.work / "turns.jsonl.gz").stat().st_size

    t0 = time.perf_counter()
    agg = query_arrow(out, "SELECT role, tool_name, count(*) AS n, avg(tokens_in) AS tin, "
                           "sum(length(content)) AS chars, quantile_cont(latency_ms, 0.99) AS p99 "
                           "FROM turns GROUP BY ALL ORDER BY n DESC")
    t_agg = time.perf_counter() - t0
    t0 = time.perf_counter()
    con = duckdb.connect()
    con.sql(f"SELECT role, tool_name, count(*), avg(json_extract(j, '$.tokens_in')::DOUBLE) FROM "
            f"read_json_objects('{args.work / 'turns.jsonl'}') t(j), "
            f"LATERAL (SELECT json_extract_string(j, '$.role') AS role, json_extract_string(j, '$.tool_name') "
            f"AS tool_name) GROUP BY ALL").fetchall()
    t_agg_json = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_scan = query_arrow(out, "SELECT count(*) AS n, sum(length(content)) AS c FROM turns").to_pylist()[0]
    t_scan = time.perf_counter() - t0
    assert n_scan["n"] == args.rows and sum(agg.column("n").to_pylist()) == args.rows

    R = args.rows
    lines = [
        f"### Storage: {R:,} synthetic turn rows ({jsonl_bytes / R / 1024:.1f} KB JSON per row)",
        "",
        f"- Command: `.venv/bin/python benchmarks/storage.py --rows {R}`",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"DuckDB {duckdb.__version__}, pyarrow {pa.__version__}; date {datetime.now(UTC).date()}",
        "",
        "Write rates are rows per CPU-second of the writing process (pyarrow conversion from Python dicts,",
        "zstd, fsync, sha256 and manifest included for Parquet; serialisation included for both JSONL forms).",
        "Query times are wall seconds (DuckDB uses both cores).",
        "",
        "| format | write rows per CPU-s | bytes per row | size vs JSONL |",
        "|---|---:|---:|---:|",
        f"| hopforge zstd Parquet (ShardWriter, sha256 + manifest) | {R / t_pq:,.0f} | {pq_bytes / R:,.0f} | "
        f"{pq_bytes / jsonl_bytes:.2f} |",
        f"| JSONL (orjson) | {R / t_jsonl:,.0f} | {jsonl_bytes / R:,.0f} | 1.00 |",
        f"| gzip JSONL (level 6) | {R / t_gz:,.0f} | {gz_bytes / R:,.0f} | {gz_bytes / jsonl_bytes:.2f} |",
        "",
        "| query | seconds |",
        "|---|---:|",
        f"| DuckDB GROUP BY role, tool (count, avg tokens, sum chars, p99 latency) over Parquet | {t_agg:.2f} |",
        f"| same GROUP BY over the JSONL (DuckDB json) | {t_agg_json:.2f} |",
        f"| full scan `count(*), sum(length(content))` over Parquet | {t_scan:.2f} |",
        "",
        f"Row generation (excluded above): {t_gen:.1f} s. Peak RSS: {peak_rss_mb():,.0f} MB.",
    ]
    lines.append(f"Load average during the run: {os.getloadavg()[0]:.1f} (1 min, at the end).")
    text = "\n".join(lines)
    print(text)
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(text + "\n")


if __name__ == "__main__":
    main()
