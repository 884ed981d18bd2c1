"""Search backends side by side: bm25s (in memory, and its ``mmap=True`` load) against tantivy (one
index, and sharded), on enwiki-233's real passages and on synthetic corpora of 1M and 10M passages.

    python benchmarks/search_scale.py [--sizes real,1000000,10000000] [--work /work/bench-search]

For each corpus and backend, in a fresh process each: build seconds and the build's peak RSS, disk
size, open seconds and RSS after open, then the p50/p99 latency of ``search(q, k=5)`` over 1,000
queries on one thread (after 50 warm-up queries). Results go to ``benchmarks/results/search_scale.md``
and ``.json``. Built corpora and indexes stay under ``--work`` so a rerun skips building (their
build figures are read back from the ``build.json`` written beside them).

Synthetic passages are made of enwiki-233's real sentences, recombined, with every capitalised
word after a sentence's first (the entity names) replaced by a synthetic name: a new name with
Heaps'-law probability (``K n^0.6`` distinct names after ``n`` entity tokens), otherwise an earlier
name drawn with a skew toward old ones, so the vocabulary keeps growing with the corpus like
Wikipedia's. Pages hold 3-15 paragraphs of 2-6 sentences (about 9 passages per page, the
full-English-Wikipedia ratio). Queries are what the agent types: 2-6 words of one passage,
half of them led by the page's title.

bm25s at 10M passages runs only if the 1M build's peak RSS, scaled by 10, fits in 80 % of RAM.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DUMP = (REPO / ".." / "shared" / "wiki" / "enwiki-233.xml.bz2").resolve()
RESULTS = REPO / "benchmarks" / "results"
N_QUERIES = 1000
WARMUP = 50
SHARDS = 4  # the sharded tantivy variant: the corpus in this many shards

_SYL = ["ka", "ro", "lin", "ve", "tor", "mar", "sel", "dun", "qui", "bra", "sto", "nel", "fa", "gor", "ith", "ul",
        "zen", "pa", "ris", "mo", "ta", "ven", "ly", "osk", "er", "an", "tul", "hel", "vor", "bi", "cas", "dra"]
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CAP = re.compile(r"\b[A-Z][a-z]+\b")


def _name(i: int) -> str:
    parts = []
    i += len(_SYL)  # at least two syllables
    while i:
        i, r = divmod(i, len(_SYL))
        parts.append(_SYL[r])
    return "".join(parts).capitalize()


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss it does not count the parent's pages before exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def du_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


# ----------------------------------------------------------------------------- corpora

def real_pages(work: Path) -> list[tuple[int, str, str]]:
    from hopforge.config import load_config
    from hopforge.graph import run_ingest
    from hopforge.stage import resolve
    from hopforge.storage import read_table
    from hopforge.storage.arrays import latest_run
    out = work / "enwiki233-out"
    cfg = load_config(None, {"run.out": str(out), "graph.dump": str(DUMP), "graph.workers": 1})
    if resolve(cfg, "graph").complete() is None:
        run_ingest(cfg)
    pages = read_table(out, "pages", run=latest_run(out, "graph"), columns=["page_id", "title", "text"])
    pages = pages.sort_by("page_id")
    return list(zip(pages.column("page_id").to_pylist(), pages.column("title").to_pylist(),
                    [t or "" for t in pages.column("text").to_pylist()], strict=True))


def synth_pages(base: list[tuple[int, str, str]], n_passages: int, seed: int = 17):
    """Pages (page_id, title, text) with about ``n_passages`` passages in all (see the module doc)."""
    from hopforge.search.base import MIN_PASSAGE_CHARS
    rng = random.Random(seed)
    sentences = [s.strip() for _, _, text in base for para in text.split("\n\n") if len(para) >= MIN_PASSAGE_CHARS
                 for s in _SENT.split(para) if len(s.strip()) >= 20]
    names: list[str] = []
    occ = 0
    k_heaps, beta = 30.0, 0.6

    def new_or_old() -> str:
        nonlocal occ
        occ += 1
        if not names or rng.random() < k_heaps * beta * occ ** (beta - 1):
            names.append(_name(len(names)))
            return names[-1]
        return names[int(len(names) * rng.random() ** 3)]

    made = 0
    page_id = 0
    while made < n_passages:
        page_id += 1
        mapping: dict[str, str] = {}

        def rename(m: re.Match[str], mapping: dict[str, str] = mapping) -> str:
            w = m.group(0)
            if w not in mapping:
                mapping[w] = new_or_old()
            return mapping[w]

        title = " ".join(new_or_old() for _ in range(rng.choice((1, 2, 2, 3))))
        paras = []
        for _ in range(min(rng.randint(3, 15), n_passages - made)):
            sents = [rng.choice(sentences) for _ in range(rng.randint(2, 6))]
            paras.append(" ".join(s[:1] + _CAP.sub(rename, s[1:]) for s in sents))
        made += len(paras)
        yield page_id, title, "\n\n".join(paras)


def corpus_dir(work: Path, size: str) -> Path:
    return work / ("real" if size == "real" else f"synth-{int(size) // 1000}k")


def materialize(work: Path, size: str) -> Path:
    """The corpus as an Arrow file of pages (page_id, title, text) plus queries.json; built once."""
    import pyarrow as pa

    from hopforge.search.base import TOKEN_RE, passages_of
    d = corpus_dir(work, size)
    if (d / "queries.json").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    base = real_pages(work)
    pages = iter(base) if size == "real" else synth_pages(base, int(size))
    rng = random.Random(5)
    schema = pa.schema([("page_id", pa.int64()), ("title", pa.string()), ("text", pa.large_string())])
    queries: list[str] = []
    n_passages = 0
    t0 = time.perf_counter()
    with pa.OSFile(str(d / "pages.arrow.tmp"), "wb") as sink, pa.ipc.new_file(sink, schema) as w:
        buf: list[tuple[int, str, str]] = []
        for page in pages:
            buf.append(page)
            for _, passage in passages_of(page[1], page[2]):
                n_passages += 1
                # Reservoir-ish: keep a passage for a query with probability ~ 4 * N_QUERIES / size.
                if rng.random() < 4 * N_QUERIES / max(int(size) if size != "real" else 32_000, 1):
                    words = TOKEN_RE.findall(passage[len(page[1]) + 2:])
                    n = rng.randint(2, 6)
                    lead = page[1].split() if rng.random() < 0.5 else []
                    lead = lead[:max(n - 2, 1)] if lead else []
                    if len(words) > n:
                        i = rng.randrange(len(words) - n)
                        queries.append(" ".join(lead + words[i:i + n - len(lead)]))
            if len(buf) == 2048:
                w.write_batch(pa.record_batch(list(map(list, zip(*buf, strict=True))), schema=schema))
                buf = []
        if buf:
            w.write_batch(pa.record_batch(list(map(list, zip(*buf, strict=True))), schema=schema))
    os.replace(d / "pages.arrow.tmp", d / "pages.arrow")
    rng.shuffle(queries)
    (d / "queries.json").write_text(json.dumps({"passages": n_passages, "generate_s": time.perf_counter() - t0,
                                                "queries": queries[:N_QUERIES + WARMUP]}))
    return d


def read_pages(d: Path):
    import pyarrow as pa
    reader = pa.ipc.open_file(pa.memory_map(str(d / "pages.arrow")))
    for b in range(reader.num_record_batches):
        batch = reader.get_batch(b)
        yield from zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), batch.column(2).to_pylist(),
                       strict=True)


# ----------------------------------------------------------------------------- one measurement per process

def _bm25s_dir(d: Path) -> Path:
    return d / "bm25s"


def child_build(d: Path, backend: str) -> dict:
    from hopforge.search import SearchIndex
    from hopforge.search.tantivy_index import TantivyIndex
    t0 = time.perf_counter()
    if backend == "bm25s":
        pages = list(read_pages(d))
        index = SearchIndex([p[1] for p in pages], [p[2] for p in pages], [p[0] for p in pages])
        build_s = time.perf_counter() - t0
        shutil.rmtree(_bm25s_dir(d), ignore_errors=True)
        index.save(_bm25s_dir(d).with_name("bm25s.new"))
        os.replace(_bm25s_dir(d).with_name("bm25s.new"), _bm25s_dir(d))
        target = _bm25s_dir(d)
    else:
        passages = json.loads((d / "queries.json").read_text())["passages"]
        shard = passages + 1 if backend == "tantivy" else -(-passages // SHARDS)
        target = d / backend
        TantivyIndex.build(target, read_pages(d), shard_passages=shard)
        build_s = time.perf_counter() - t0
    res = {"build_s": build_s, "build_peak_rss_mib": peak_mib(), "disk_mib": du_mib(target)}
    (target / "build.json").write_text(json.dumps(res))
    return res


def child_query(d: Path, backend: str, mmap: bool) -> dict:
    import bm25s
    import numpy as np
    import orjson
    import pyarrow.parquet as pq

    from hopforge.search import SearchIndex
    from hopforge.search.tantivy_index import TantivyIndex
    queries = json.loads((d / "queries.json").read_text())["queries"]
    rss0 = rss_mib()
    t0 = time.perf_counter()
    if backend == "bm25s":
        c = _bm25s_dir(d)
        retriever = bm25s.BM25.load(str(c), mmap=mmap, show_progress=False, verbosity=0)
        meta = pq.read_table(c / "passages.parquet")
        passages = (meta.column("page").to_numpy().astype(np.int32), meta.column("para").to_numpy().astype(np.int32))
        vocab = orjson.loads((c / "vocab.json").read_bytes())
        pages = list(read_pages(d))  # bm25s keeps titles and texts in RAM: part of its cost
        index = SearchIndex([p[1] for p in pages], [p[2] for p in pages], [p[0] for p in pages], retriever=retriever,
                            passages=passages, vocab=vocab)
        del pages
    else:
        index = TantivyIndex(d / backend)
    open_s = time.perf_counter() - t0
    rss_open = rss_mib()
    for q in queries[:WARMUP]:
        index.search(q, 5)
    lat = []
    empty = 0
    for q in queries[WARMUP:]:
        t = time.perf_counter()
        hits = index.search(q, 5)
        lat.append((time.perf_counter() - t) * 1000)
        empty += not hits
    lat.sort()
    return {"open_s": open_s, "rss_after_open_mib": rss_open, "rss_before_open_mib": rss0,
            "rss_after_queries_mib": rss_mib(), "queries": len(lat), "empty_results": empty,
            "p50_ms": statistics.median(lat), "p99_ms": lat[int(0.99 * (len(lat) - 1))]}


def run_child(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    r = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env, check=False)
    if r.returncode:
        raise RuntimeError(f"child {args} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- driver

VARIANTS = [("bm25s (in memory)", "bm25s", False), ("bm25s (mmap=True load)", "bm25s", True),
            ("tantivy (1 index)", "tantivy", False), (f"tantivy ({SHARDS} shards)", "tantivy-sharded", False)]


def measure(work: Path, size: str, skip_bm25s: bool) -> list[dict]:
    d = materialize(work, size)
    info = json.loads((d / "queries.json").read_text())
    rows = []
    built: dict[str, dict] = {}
    for label, backend, mmap in VARIANTS:
        row = {"corpus": "enwiki-233 (real)" if size == "real" else f"synthetic {int(size):,}", "size": size,
               "passages": info["passages"], "backend": label}
        if backend == "bm25s" and skip_bm25s:
            rows.append({**row, "skipped": "bm25s would not fit in RAM (see the 1M build's peak RSS)"})
            continue
        target = _bm25s_dir(d) if backend == "bm25s" else d / backend
        if backend not in built:
            if (target / "build.json").exists():
                built[backend] = {**json.loads((target / "build.json").read_text()), "reused": True}
            else:
                built[backend] = run_child("build", str(d), backend)
        row.update(built[backend])
        row.update(run_child("query", str(d), backend, str(int(mmap))))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def write_results(rows: list[dict], cmd: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"command": cmd, "machine": "2-core x86_64 VM, 24 GiB", "date": "2026-11-29",
            "python": platform.python_version(), "queries": N_QUERIES, "k": 5}
    (RESULTS / "search_scale.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = ["# Search backends at scale: bm25s vs tantivy", "",
             f"Command: `{cmd}`  ", f"Machine: {meta['machine']}  ", f"Date: {meta['date']}  ",
             (f"Queries: {N_QUERIES} per row, `search(q, k=5)`, one thread, after {WARMUP} warm-up queries. "
              "Build and open each run in a fresh process; peak RSS is the build process's maximum resident set, "
              "RSS after open includes the Python interpreter and pyarrow (~100 MiB). Rows marked * reuse a build "
              "kept on disk from an earlier run of the same command (same code)."), "",
             ("| corpus | passages | backend | build s | build peak RSS MiB | disk MiB | open s | RSS after open MiB "
              "| p50 ms | p99 ms |"), "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['corpus']} | {r['passages']:,} | {r['backend']} | skipped: {r['skipped']} "
                         "| | | | | | |")
            continue
        star = "*" if r.get("reused") else ""
        lines.append(f"| {r['corpus']} | {r['passages']:,} | {r['backend']} | {_fmt(r['build_s'], '.1f')}{star} | "
                     f"{_fmt(r['build_peak_rss_mib'], ',.0f')} | {_fmt(r['disk_mib'], ',.0f')} | "
                     f"{_fmt(r['open_s'], '.2f')} | {_fmt(r['rss_after_open_mib'], ',.0f')} | "
                     f"{_fmt(r['p50_ms'], '.2f')} | {_fmt(r['p99_ms'], '.2f')} |")
    (RESULTS / "search_scale.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="real,1000000,10000000")
    ap.add_argument("--work", default="/work/bench-search")
    ap.add_argument("--child", nargs="+")
    ap.add_argument("--skip-bm25s-above", type=int, default=None,
                    help="skip bm25s on corpora larger than this (e.g. 1000000 when running 10M alone)")
    ap.add_argument("--render", nargs="+", metavar="LOG",
                    help="only write the results from the JSON rows these runs printed (one table from several runs)")
    a = ap.parse_args()
    if a.render:
        rows = [json.loads(line) for log in a.render for line in Path(log).read_text().splitlines()
                if line.startswith("{")]
        for size in {r["size"] for r in rows} - {r["size"] for r in rows if r["backend"].startswith("bm25s")}:
            first = next(r for r in rows if r["size"] == size)
            rows += [{"corpus": first["corpus"], "size": size, "passages": first["passages"], "backend": label,
                      "skipped": "the 1M build's peak RSS x 10 exceeds 80 % of RAM"} for label, b, _ in VARIANTS
                     if b == "bm25s"]
        order = {"real": 0}
        rows.sort(key=lambda r: (order.get(r["size"], 1), int(r["size"]) if r["size"] != "real" else 0))
        write_results(rows, "python benchmarks/search_scale.py --sizes real,1000000,10000000 (rows from "
                      f"{len(a.render)} runs of it, merged with --render)")
        return
    if a.child:
        kind, d, backend, *rest = a.child
        res = child_build(Path(d), backend) if kind == "build" else child_query(Path(d), backend, rest[0] == "1")
        print(json.dumps(res))
        return
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    ram_mib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    rows: list[dict] = []
    bm25s_peak: dict[int, float] = {}
    for size in a.sizes.split(","):
        skip = False
        if size != "real" and int(size) > 1_000_000 and 1_000_000 in bm25s_peak:
            skip = bm25s_peak[1_000_000] * int(size) / 1_000_000 > 0.8 * ram_mib
        if size != "real" and a.skip_bm25s_above is not None and int(size) > a.skip_bm25s_above:
            skip = True
        rows += measure(work, size, skip)

        for r in rows:
            if r["size"] == size and r["backend"].startswith("bm25s") and "build_peak_rss_mib" in r:
                bm25s_peak[int(size) if size != "real" else 0] = r["build_peak_rss_mib"]
        write_results(rows, "python benchmarks/search_scale.py " + " ".join(sys.argv[1:]))
    shutil.rmtree(work / "tmp", ignore_errors=True)
    print(f"wrote {RESULTS / 'search_scale.md'} at {datetime.now(UTC):%H:%M}")


if __name__ == "__main__":
    main()
