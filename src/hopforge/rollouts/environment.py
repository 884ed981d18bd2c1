"""The offline Wikipedia environment the teacher searches: ``search``, ``visit``, ``answer``.

Built from the ``pages`` and ``redirects`` tables. ``search`` is BM25 over paragraph
passages: the index lives in :mod:`hopforge.search` (shared with the question stage, which
measures retrieval difficulty with the very index the agent searches) and is cached under
``OUT/_cache/bm25-<key>/``. ``visit`` returns a page's cleaned text split into pages of
``page_chars``.

Observations are data: the environment only returns strings; nothing in page
text is ever parsed for actions (the protocol parses model output only).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import bm25s
import numpy as np

from hopforge.config import SearchConfig
from hopforge.search.base import SearchBackend
from hopforge.search.index import TOKEN_RE, SearchHit, SearchIndex, paginate
from hopforge.search.open import open_index
from hopforge.storage import read_table
from hopforge.storage.arrays import latest_run
from hopforge.text.titles import normalize_title

log = logging.getLogger(__name__)

__all__ = ["TOKEN_RE", "Environment", "SearchHit", "paginate"]

PAGES_CACHED = 4096  # paginated pages kept (the oldest dropped first): visits repeat, the dump is large


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
        index = SearchIndex(titles, texts, page_ids, retriever=retriever, passages=passages, vocab=vocab,
                            redirects={normalize_title(k): v for k, v in (redirects or {}).items()})
        self._init(index, page_chars)

    @classmethod
    def from_index(cls, index: SearchBackend, *, page_chars: int = 2000) -> Environment:
        env = cls.__new__(cls)
        env._init(index, page_chars)
        return env

    @classmethod
    def from_tables(cls, out: str | Path, run: str | None = None, *, page_chars: int = 2000,
                    cache: bool = True, search: SearchConfig | None = None) -> Environment:
        """Load pages + redirects of graph stage run ``run`` (default: the latest complete graph) and
        the index ``search`` (``[search]``) asks for, from its cache (or build it). One run only: two
        ingests in one OUT never give duplicate passages."""
        t0 = time.perf_counter()
        run = run or latest_run(out, "graph")
        index = open_index(out, run, search, cache=cache)
        if isinstance(index, SearchIndex):  # bm25s keeps redirects in memory too; tantivy has them on disk
            redirects = read_table(out, "redirects", run=run, columns=["title", "target"])
            index.redirects = {normalize_title(k): v for k, v in zip(
                redirects.column("title").to_pylist(), redirects.column("target").to_pylist(), strict=True) if v}
        env = cls.from_index(index, page_chars=page_chars)
        log.info("environment over %d passages (%s) ready in %.2fs", env.num_passages, index.backend,
                 time.perf_counter() - t0)
        return env

    def _init(self, index: SearchBackend, page_chars: int) -> None:
        self.page_chars = page_chars
        self.titles = index.titles
        self.page_ids = index.page_ids
        self._pages_cache: dict[str, list[str]] = {}  # small: the pages visited, bounded below
        self.index = index

    @property
    def num_passages(self) -> int:
        return self.index.num_passages

    # ------------------------------------------------------------------ tools

    def search(self, query: str, k: int = 5) -> list[SearchHit]:
        """Top-``k`` passages for ``query`` (at most one per page, best first)."""
        return self.index.search(query, k)

    def resolve(self, title: str) -> str | None:
        """The canonical title for ``title`` (exact, normalised, redirect, then case-insensitive)."""
        index = self.index
        if index.index_of(title) is not None:
            return title
        t = normalize_title(title)
        if index.index_of(t) is not None:
            return t
        target = index.redirect(t)
        if target is not None and index.index_of(target) is not None:
            return target
        i = index.index_of_casefold(t)
        return None if i is None else index.titles[i]

    def pages_of(self, title: str) -> list[str]:
        pages = self._pages_cache.get(title)
        if pages is None:
            i = self.index.index_of(title)
            if i is None:
                raise KeyError(title)
            pages = paginate(self.index.text(i), self.page_chars)
            if len(self._pages_cache) >= PAGES_CACHED:
                self._pages_cache.pop(next(iter(self._pages_cache)))
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
