"""The offline Wikipedia environment the teacher searches: ``search``, ``visit``, ``answer``.

Built from the ``pages`` and ``redirects`` tables. ``search`` is BM25 over
paragraph passages (bm25s: a sparse, precomputed-score BM25 whose query is a
sparse row sum, ~0.1 ms on a few thousand passages; pure numpy/scipy, so no
JVM like Pyserini and no per-query Python loop over documents like rank_bm25).
``visit`` returns a page's cleaned text split into pages of ``page_chars``.

Observations are data: the environment only returns strings; nothing in page
text is ever parsed for actions (the protocol parses model output only).

The index is built once per run and cached under ``OUT/_cache/bm25-<key>/``,
where the key hashes the pages/redirects shards' checksums and the tokenizer
settings, so a changed graph rebuilds it and a re-run loads it in milliseconds.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import bm25s
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from hopforge.errors import StorageError
from hopforge.storage import read_manifest, read_table
from hopforge.storage.arrays import latest_run
from hopforge.text.titles import normalize_title

log = logging.getLogger(__name__)
# bm25s logs every index build at DEBUG through its own handler; keep it out of our CLI output.
logging.getLogger("bm25s").setLevel(logging.WARNING)

INDEX_VERSION = 2  # 2: passages in page-id order
# bm25s' own default token pattern; queries are split with the same regex so
# query and corpus tokens agree.
TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")
SNIPPET_CHARS = 240
MIN_PASSAGE_CHARS = 40  # headings and stubs alone are noise in a ranked list


@dataclass(frozen=True, slots=True)
class SearchHit:
    passage_id: str  # "<page_id>:<paragraph index>"
    title: str
    snippet: str
    score: float


def paginate(text: str, page_chars: int) -> list[str]:
    """Split ``text`` into chunks of at most ``page_chars``, cutting at paragraph,
    then line, then word boundaries so a visit never ends mid-word when avoidable."""
    chunks: list[str] = []
    rest = text.strip()
    while len(rest) > page_chars:
        window = rest[:page_chars]
        cut = max(window.rfind("\n\n"), window.rfind("\n"))
        if cut < page_chars // 3:
            cut = window.rfind(" ")
        if cut < page_chars // 3:
            cut = page_chars
        chunks.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest or not chunks:
        chunks.append(rest)
    return chunks


class Environment:
    """Search and read an ingested Wikipedia snapshot. Thread-safe for reads."""

    def __init__(
        self,
        titles: list[str],
        texts: list[str],
        redirects: dict[str, str] | None = None,
        *,
        page_chars: int = 2000,
        page_ids: list[int] | None = None,
        retriever: bm25s.BM25 | None = None,
        passages: tuple[np.ndarray, np.ndarray] | None = None,
        vocab: dict[str, int] | None = None,
    ) -> None:
        self.page_chars = page_chars
        self.titles = titles
        self.page_ids = page_ids if page_ids is not None else list(range(len(titles)))
        self._text = dict(zip(titles, texts, strict=True))
        self._lower = {t.lower(): t for t in titles}
        self._redirects = {normalize_title(k): v for k, v in (redirects or {}).items()}
        self._pages_cache: dict[str, list[str]] = {}
        self._paras_cache: dict[int, list[str]] = {}  # page index -> paragraphs, for snippets
        if retriever is None or passages is None or vocab is None:
            retriever, passages, vocab = self._build(texts)
        self._bm25 = retriever
        self._passage_page, self._passage_para = passages
        self._vocab = vocab
        self._stop = set(bm25s.stopwords.STOPWORDS_EN)

    # ------------------------------------------------------------------ build / cache

    def _build(self, texts: list[str]) -> tuple[bm25s.BM25, tuple[np.ndarray, np.ndarray], dict[str, int]]:
        corpus: list[str] = []
        page_of: list[int] = []
        para_of: list[int] = []
        for i, text in enumerate(texts):
            for j, para in enumerate(text.split("\n\n")):
                if len(para.strip()) >= MIN_PASSAGE_CHARS:
                    # The title is prepended so a query naming the entity finds its page.
                    corpus.append(f"{self.titles[i]}. {para}")
                    page_of.append(i)
                    para_of.append(j)
        if not corpus:
            raise StorageError("cannot build the search index: no page has a paragraph of text")
        tok = bm25s.tokenize(corpus, stopwords="en", show_progress=False)
        retriever = bm25s.BM25()
        retriever.index(tok, show_progress=False)
        return retriever, (np.asarray(page_of, np.int32), np.asarray(para_of, np.int32)), dict(tok.vocab)

    @classmethod
    def from_tables(cls, out: str | Path, run: str | None = None, *, page_chars: int = 2000,
                    cache: bool = True) -> Environment:
        """Load pages + redirects of graph stage run ``run`` (default: the latest complete graph) and
        the BM25 index from its cache (or build it). One run only: two ingests in one OUT never
        give duplicate passages."""
        t0 = time.perf_counter()
        run = run or latest_run(out, "graph")
        pages = read_table(out, "pages", run=run, columns=["page_id", "title", "text"]) if run else None
        if pages is None or pages.num_rows == 0:
            raise StorageError(f"no pages under {Path(out) / 'pages'} (graph run {run}): run `hopforge ingest` first")
        # In page-id order, not shard order (which follows the order ingest batches happened to finish):
        # passages tied on score then rank the same in every run of the same graph.
        pages = pages.sort_by("page_id")
        redirects = read_table(out, "redirects", run=run, columns=["title", "target"])
        titles = pages.column("title").to_pylist()
        texts = [t or "" for t in pages.column("text").to_pylist()]
        page_ids = pages.column("page_id").to_pylist()
        red = {k: v for k, v in zip(redirects.column("title").to_pylist(), redirects.column("target").to_pylist(),
                                    strict=True) if v}
        key = _cache_key(out, run)
        cache_dir = Path(out) / "_cache" / f"bm25-{key}"
        if cache and (cache_dir / "done").exists():
            retriever = bm25s.BM25.load(str(cache_dir), mmap=False, show_progress=False, verbosity=0)
            meta = pq.read_table(cache_dir / "passages.parquet")
            passages = (meta.column("page").to_numpy().astype(np.int32), meta.column("para").to_numpy().astype(np.int32))
            vocab = orjson.loads((cache_dir / "vocab.json").read_bytes())
            env = cls(titles, texts, red, page_chars=page_chars, page_ids=page_ids, retriever=retriever,
                      passages=passages, vocab=vocab)
            log.info("search index loaded from %s in %.2fs", cache_dir, time.perf_counter() - t0)
            return env
        env = cls(titles, texts, red, page_chars=page_chars, page_ids=page_ids)
        if cache:
            env._save(cache_dir)
        log.info("search index over %d passages built in %.2fs", env.num_passages, time.perf_counter() - t0)
        return env

    def _save(self, cache_dir: Path) -> None:
        tmp = cache_dir.with_name(cache_dir.name + f".tmp{time.monotonic_ns()}")
        tmp.mkdir(parents=True)
        self._bm25.save(str(tmp), show_progress=False)
        pq.write_table(pa.table({"page": self._passage_page, "para": self._passage_para}), tmp / "passages.parquet")
        (tmp / "vocab.json").write_bytes(orjson.dumps(self._vocab))
        (tmp / "done").write_text("ok\n")
        try:
            tmp.rename(cache_dir)  # atomic; a concurrent builder that won first keeps its copy
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)

    @property
    def num_passages(self) -> int:
        return len(self._passage_page)

    # ------------------------------------------------------------------ tools

    def search(self, query: str, k: int = 5) -> list[SearchHit]:
        """Top-``k`` passages for ``query`` (at most one per page, best first)."""
        ids = [self._vocab[w] for w in TOKEN_RE.findall(query.lower()) if w not in self._stop and w in self._vocab]
        if not ids:
            return []
        scores = self._bm25.get_scores(ids)
        n = min(len(scores), k * 4)
        top = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        hits: list[SearchHit] = []
        seen: set[int] = set()
        for p in top:
            s = float(scores[p])
            if s <= 0:
                break
            page = int(self._passage_page[p])
            if page in seen:
                continue
            seen.add(page)
            para = int(self._passage_para[p])
            title = self.titles[page]
            paras = self._paras_cache.get(page)
            if paras is None:  # split once per page, not once per hit (pages run to 100+ KB)
                paras = self._paras_cache[page] = self._text[title].split("\n\n")
            text = paras[para].strip()
            snippet = text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS].rsplit(" ", 1)[0] + " …"
            hits.append(SearchHit(f"{self.page_ids[page]}:{para}", title, snippet, s))
            if len(hits) == k:
                break
        return hits

    def resolve(self, title: str) -> str | None:
        """The canonical title for ``title`` (exact, normalised, redirect, then case-insensitive)."""
        if title in self._text:
            return title
        t = normalize_title(title)
        if t in self._text:
            return t
        target = self._redirects.get(t)
        if target is not None and target in self._text:
            return target
        return self._lower.get(t.lower())

    def pages_of(self, title: str) -> list[str]:
        pages = self._pages_cache.get(title)
        if pages is None:
            pages = paginate(self._text[title], self.page_chars)
            self._pages_cache[title] = pages
        return pages

    def render_search(self, query: str, k: int) -> str:
        hits = self.search(query, k)
        if not hits:
            return f"No results for {query!r}. Try other keywords."
        lines = [f"Search results for {query!r}:"]
        for i, h in enumerate(hits, 1):
            lines.append(f"[{i}] {h.title} (passage {h.passage_id})\n{h.snippet}")
        return "\n\n".join(lines)

    def render_visit(self, title: str, page: int = 0) -> str:
        canonical = self.resolve(title)
        if canonical is None:
            return f"No page titled {title!r} exists in this Wikipedia snapshot. Use search to find the right title."
        pages = self.pages_of(canonical)
        if page < 0 or page >= len(pages):
            return f"Page {canonical!r} has pages 0 to {len(pages) - 1}; page {page} does not exist."
        via = f" (redirected from {title!r})" if normalize_title(title) != canonical else ""
        more = f" Call visit with page={page + 1} for more." if page + 1 < len(pages) else ""
        return f"Page: {canonical}{via} [page {page} of 0-{len(pages) - 1}]{more}\n\n{pages[page]}"


def _cache_key(out: str | Path, run: str) -> str:
    """Hash of the run's pages/redirects shards' checksums + index settings."""
    h = hashlib.sha256(f"v{INDEX_VERSION}|{TOKEN_RE.pattern}|{MIN_PASSAGE_CHARS}|bm25s{bm25s.__version__}".encode())
    for table in ("pages", "redirects"):
        for info in read_manifest(out, table):
            if info.run == run:
                h.update(f"{table}:{info.path}:{info.sha256}".encode())
    return h.hexdigest()[:16]
