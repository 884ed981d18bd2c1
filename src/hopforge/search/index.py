"""BM25 over the paragraph passages of one graph run's pages: the index the agent searches.

Shared by the rollout stage's search environment (``search``) and the question stage's
retrieval gates and offline replay (the question stage must measure difficulty with the
very index the agent will use, and no stage imports another). bm25s is a sparse,
precomputed-score BM25 whose query is a sparse row sum (~0.1 ms on a few thousand
passages; pure numpy/scipy, so no JVM like Pyserini and no per-query Python loop over
documents like rank_bm25).

Passages are paragraphs of at least ``MIN_PASSAGE_CHARS`` with the page title prepended,
grouped by page in page order. A page's score for a query is its best passage's score, and
its rank is its place in the de-duplicated ranked list :meth:`SearchIndex.search` returns
(one hit per page), so :meth:`SearchIndex.ranks` agrees with what the agent sees (up to the
order of exactly tied scores, which ``ranks`` breaks by passage order).

The index is built once per graph run and cached under ``OUT/_cache/bm25-<key>/``, where the
key hashes the pages/redirects shards' checksums and the tokenizer settings, so a changed
graph rebuilds it and a re-run loads it in milliseconds.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import bm25s
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from hopforge.errors import StorageError
from hopforge.search.base import (
    MIN_PASSAGE_CHARS,
    SNIPPET_CHARS,
    TOKEN_RE,
    SearchBackend,
    SearchHit,
    cut_snippet,
    paginate,
    passages_of,
)
from hopforge.storage import read_manifest, read_table
from hopforge.storage.arrays import latest_run

log = logging.getLogger(__name__)
# bm25s logs every index build at DEBUG through its own handler; keep it out of our CLI output.
logging.getLogger("bm25s").setLevel(logging.WARNING)

INDEX_VERSION = 2  # 2: passages in page-id order

__all__ = ["MIN_PASSAGE_CHARS", "SNIPPET_CHARS", "TOKEN_RE", "SearchHit", "SearchIndex", "cache_key", "paginate"]


class SearchIndex(SearchBackend):
    """BM25 over title-prefixed paragraphs; ``texts[i]`` is page ``titles[i]``'s whole text.

    Thread-safe for reads. ``retriever``/``passages``/``vocab`` are a loaded index (from
    :meth:`from_tables`' cache); without them the index is built from ``texts``. ``redirects`` maps
    normalised titles to targets (the environment's ``visit`` follows them)."""

    backend = "bm25s"

    def __init__(self, titles: list[str], texts: list[str], page_ids: list[int] | None = None, *,
                 retriever: bm25s.BM25 | None = None, passages: tuple[np.ndarray, np.ndarray] | None = None,
                 vocab: dict[str, int] | None = None, rank_depth: int | None = None,
                 redirects: dict[str, str] | None = None) -> None:
        self.titles = titles
        self.texts = texts
        self.page_ids = page_ids if page_ids is not None else list(range(len(titles)))
        self.rank_depth = rank_depth
        self.redirects = redirects or {}
        self._paras_cache: dict[int, list[str]] = {}  # page index -> paragraphs, for snippets
        self._index_of = {t: i for i, t in enumerate(titles)}
        self._lower: dict[str, int] | None = None  # lowercased title -> page index, on first use
        self._pages_index: tuple[bm25s.BM25, dict[str, int]] | None = None  # whole pages, built on first use
        if retriever is None or passages is None or vocab is None:
            retriever, passages, vocab = self._build(titles, texts)
        self._bm25 = retriever
        self._passage_page, self._passage_para = passages
        self._vocab = vocab
        self._stop = set(bm25s.stopwords.STOPWORDS_EN)
        # Passages are grouped by page in page order: the first passage of each page with any.
        self._page_starts = np.flatnonzero(np.r_[True, np.diff(self._passage_page) != 0]) if len(
            self._passage_page) else np.zeros(0, np.int64)
        self._pages_with_passages = self._passage_page[self._page_starts] if len(self._passage_page) else \
            np.zeros(0, np.int32)
        self._slot = np.full(len(titles), -1, np.int64)  # page index -> its slot among pages with passages
        self._slot[self._pages_with_passages] = np.arange(len(self._pages_with_passages))

    @staticmethod
    def _build(titles: list[str], texts: list[str]) -> tuple[bm25s.BM25, tuple[np.ndarray, np.ndarray],
                                                            dict[str, int]]:
        corpus: list[str] = []
        page_of: list[int] = []
        para_of: list[int] = []
        for i, text in enumerate(texts):
            for j, passage in passages_of(titles[i], text):
                corpus.append(passage)
                page_of.append(i)
                para_of.append(j)
        if not corpus:
            raise StorageError("cannot build the search index: no page has a paragraph of text")
        tok = bm25s.tokenize(corpus, stopwords="en", show_progress=False)
        retriever = bm25s.BM25()
        retriever.index(tok, show_progress=False)
        return retriever, (np.asarray(page_of, np.int32), np.asarray(para_of, np.int32)), dict(tok.vocab)

    @classmethod
    def from_tables(cls, out: str | Path, run: str | None = None, *, cache: bool = True,
                    rank_depth: int | None = None) -> SearchIndex:
        """Pages of graph stage run ``run`` (default: the latest complete graph) and their index, from
        the cache under ``OUT/_cache`` (or built and cached). One run only: two ingests in one OUT never
        give duplicate passages."""
        t0 = time.perf_counter()
        run = run or latest_run(out, "graph")
        pages = read_table(out, "pages", run=run, columns=["page_id", "title", "text"]) if run else None
        if pages is None or pages.num_rows == 0:
            raise StorageError(f"no pages under {Path(out) / 'pages'} (graph run {run}): run `hopforge ingest` first")
        # In page-id order, not shard order (which follows the order ingest batches happened to finish):
        # passages tied on score then rank the same in every run of the same graph.
        pages = pages.sort_by("page_id")
        titles = pages.column("title").to_pylist()
        texts = [t or "" for t in pages.column("text").to_pylist()]
        page_ids = pages.column("page_id").to_pylist()
        cache_dir = Path(out) / "_cache" / f"bm25-{cache_key(out, run)}"
        if cache and (cache_dir / "done").exists():
            try:
                retriever = bm25s.BM25.load(str(cache_dir), mmap=False, show_progress=False, verbosity=0)
                meta = pq.read_table(cache_dir / "passages.parquet")
                passages = (meta.column("page").to_numpy().astype(np.int32),
                            meta.column("para").to_numpy().astype(np.int32))
                vocab = orjson.loads((cache_dir / "vocab.json").read_bytes())
                if len(passages[0]) != retriever.scores["num_docs"] or not len(passages[0]) or (
                        len(passages[0]) and int(passages[0].max()) >= len(titles)):
                    raise ValueError(f"{len(passages[0])} passages over {len(titles)} pages, the index has "
                                     f"{retriever.scores['num_docs']} documents")
            except (OSError, ValueError, KeyError, pa.ArrowException, orjson.JSONDecodeError) as e:
                log.error("search index cache %s is corrupt, rebuilding it: %s", cache_dir, e)
                shutil.rmtree(cache_dir, ignore_errors=True)
            else:
                index = cls(titles, texts, page_ids, retriever=retriever, passages=passages, vocab=vocab,
                            rank_depth=rank_depth)
                log.info("search index loaded from %s in %.2fs", cache_dir, time.perf_counter() - t0)
                return index
        index = cls(titles, texts, page_ids, rank_depth=rank_depth)
        if cache:
            index.save(cache_dir)
        log.info("search index over %d passages built in %.2fs", index.num_passages, time.perf_counter() - t0)
        return index

    def save(self, cache_dir: Path) -> None:
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

    def _query_ids(self, query: str) -> list[int]:
        return [self._vocab[w] for w in TOKEN_RE.findall(query.lower()) if w not in self._stop and w in self._vocab]

    # ------------------------------------------------------------------ ranked passages

    def search(self, query: str, k: int = 5) -> list[SearchHit]:
        """Top-``k`` passages for ``query`` (at most one per page, best first)."""
        ids = self._query_ids(query)
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
            hits.append(SearchHit(f"{self.page_ids[page]}:{para}", self.titles[page], self.snippet(page, para), s))
            if len(hits) == k:
                break
        return hits

    def snippet(self, page: int, para: int) -> str:
        paras = self._paras_cache.get(page)
        if paras is None:  # split once per page, not once per hit (pages run to 100+ KB)
            paras = self._paras_cache[page] = self.texts[page].split("\n\n")
        return cut_snippet(paras[para])

    def text(self, page: int) -> str:
        return self.texts[page]

    # ------------------------------------------------------------------ ranks of given pages

    def ranks(self, query: str, pages: Sequence[int], *, whole_pages: bool = False) -> list[int | None]:
        """1-based rank of each page (index into ``titles``) in the de-duplicated hit list for
        ``query``, as :meth:`search` would list it with an unbounded ``k``; None when the page
        scores 0 (no query term in it), has no passage or ranks deeper than ``rank_depth``.

        ``whole_pages`` ranks pages in a second BM25 index with one document per page (title +
        text), as a page-level web search engine would: a page that mentions every clue in a
        different paragraph comes first there though no single passage does. It is built on
        first use, in memory."""
        if whole_pages:
            return self._page_ranks(query, pages)
        ids = self._query_ids(query)
        if not ids or not len(self._page_starts):
            return [None] * len(pages)
        scores = self._bm25.get_scores(ids)
        best = np.maximum.reduceat(scores, self._page_starts)  # per page with passages: its best passage
        out: list[int | None] = []
        for page in pages:
            j = int(self._slot[page]) if 0 <= page < len(self._slot) else -1
            if j < 0 or best[j] <= 0:
                out.append(None)
                continue
            s = best[j]
            ahead = int(np.count_nonzero(best > s))
            tied = np.flatnonzero(best == s)
            if len(tied) > 1:  # exact ties: the page whose best passage comes first is listed first
                ahead += sum(1 for t in tied.tolist() if t != j and self._first_at(scores, t, s) <
                             self._first_at(scores, j, s))
            out.append(self._bounded(ahead + 1))
        return out

    def _page_ranks(self, query: str, pages: Sequence[int]) -> list[int | None]:
        if self._pages_index is None:
            tok = bm25s.tokenize([f"{t}. {x}" for t, x in zip(self.titles, self.texts, strict=True)], stopwords="en",
                                 show_progress=False)
            retriever = bm25s.BM25()
            retriever.index(tok, show_progress=False)
            self._pages_index = (retriever, dict(tok.vocab))
        retriever, vocab = self._pages_index
        ids = [vocab[w] for w in TOKEN_RE.findall(query.lower()) if w not in self._stop and w in vocab]
        if not ids:
            return [None] * len(pages)
        scores = retriever.get_scores(ids)
        out: list[int | None] = []
        for page in pages:
            s = scores[page] if 0 <= page < len(scores) else 0.0
            out.append(None if s <= 0 else self._bounded(int(np.count_nonzero(scores > s)) + int(np.count_nonzero(
                scores[:page] == s)) + 1))
        return out

    def _first_at(self, scores: np.ndarray, slot: int, s: float) -> int:
        lo = int(self._page_starts[slot])
        hi = int(self._page_starts[slot + 1]) if slot + 1 < len(self._page_starts) else len(scores)
        return lo + int(np.argmax(scores[lo:hi] >= s))

    def index_of(self, title: str) -> int | None:
        """The page index of an exact title (None if absent)."""
        return self._index_of.get(title)

    def index_of_casefold(self, title: str) -> int | None:
        if self._lower is None:
            self._lower = {t.lower(): i for i, t in enumerate(self.titles)}
        return self._lower.get(title.lower())

    def redirect(self, title: str) -> str | None:
        return self.redirects.get(title)


def cache_key(out: str | Path, run: str) -> str:
    """Hash of the run's pages/redirects shards' checksums + index settings."""
    h = hashlib.sha256(f"v{INDEX_VERSION}|{TOKEN_RE.pattern}|{MIN_PASSAGE_CHARS}|bm25s{bm25s.__version__}".encode())
    for table in ("pages", "redirects"):
        for info in read_manifest(out, table):
            if info.run == run:
                h.update(f"{table}:{info.path}:{info.sha256}".encode())
    return h.hexdigest()[:16]
