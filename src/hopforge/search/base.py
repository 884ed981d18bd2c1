"""What every search backend offers the stages that search the dump, and the pieces they share.

:class:`SearchBackend` is the interface the rollout environment, the question stage's retrieval
gates and its offline replay use; :mod:`hopforge.search.index` (bm25s, in memory) and
:mod:`hopforge.search.tantivy_index` (on disk, sharded) implement it. Pages are addressed by
their *page index*: the position of the page in page-id order, the same in both backends.

Ranks are bounded: :meth:`SearchBackend.ranks` returns None for a page that does not match the
query **or** that ranks below ``rank_depth`` (``[search] rank_depth``). Every caller treats None
as "nowhere" (worse than any number), and every threshold they apply (``one_shot_k``, the replay's
``replay_k``, rank 1 for a giveaway clue) is checked to lie within the depth (config validation),
so a bounded rank never changes a gate's decision; the stored ``*_rank`` columns read null for a
page that is deeper than the depth.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import bm25s

# bm25s' own default token pattern; queries are split with the same regex so
# query and corpus tokens agree.
TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")
STOPWORDS = frozenset(bm25s.stopwords.STOPWORDS_EN)
SNIPPET_CHARS = 240
MIN_PASSAGE_CHARS = 40  # headings and stubs alone are noise in a ranked list


@dataclass(frozen=True, slots=True)
class SearchHit:
    passage_id: str  # "<page_id>:<paragraph index>"
    title: str
    snippet: str
    score: float


def tokens(text: str) -> list[str]:
    """The terms bm25s indexes for ``text``: lowercased ``TOKEN_RE`` words minus English stop words,
    no stemming. The tantivy backend indexes and queries exactly these terms."""
    return [w for w in TOKEN_RE.findall(text.lower()) if w not in STOPWORDS]


def passages_of(title: str, text: str) -> list[tuple[int, str]]:
    """(paragraph index, passage text) of a page: paragraphs of at least ``MIN_PASSAGE_CHARS``, the title
    prepended so a query naming the entity finds its page."""
    return [(j, f"{title}. {para}") for j, para in enumerate(text.split("\n\n"))
            if len(para.strip()) >= MIN_PASSAGE_CHARS]


def cut_snippet(paragraph: str) -> str:
    text = paragraph.strip()
    return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS].rsplit(" ", 1)[0] + " …"


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


class SearchSettings(Protocol):
    """What the index needs of ``[search]`` (``hopforge.config.SearchConfig`` has these; the search
    package reads no config itself)."""

    backend: str  # auto | bm25s | tantivy
    auto_tantivy_passages: int
    shard_passages: int
    rank_depth: int


class SearchBackend(ABC):
    """Passage search over one graph run's pages, one hit per page. Thread-safe for reads.

    ``titles``/``page_ids`` are sequences indexed by page index (a list for bm25s, a view of a file
    on disk for tantivy); ``text(page)`` is the page's whole cleaned text."""

    backend: str = ""
    rank_depth: int | None = None  # ranks deeper than this are None; None: unbounded
    titles: Sequence[str]
    page_ids: Sequence[int]

    @property
    @abstractmethod
    def num_passages(self) -> int: ...

    @property
    def num_pages(self) -> int:
        return len(self.titles)

    @abstractmethod
    def search(self, query: str, k: int = 5) -> list[SearchHit]:
        """Top-``k`` passages for ``query`` (at most one per page, best first)."""

    @abstractmethod
    def ranks(self, query: str, pages: Sequence[int], *, whole_pages: bool = False) -> list[int | None]:
        """1-based rank of each page in the de-duplicated hit list :meth:`search` would give with an
        unbounded ``k`` (``whole_pages``: in a page-level index, one document per page); None when the
        page does not match or ranks deeper than ``rank_depth``."""

    @abstractmethod
    def text(self, page: int) -> str: ...

    @abstractmethod
    def index_of(self, title: str) -> int | None:
        """The page index of an exact title (None if absent)."""

    @abstractmethod
    def index_of_casefold(self, title: str) -> int | None:
        """The page index of a title compared lowercased (the last such page in page order)."""

    @abstractmethod
    def redirect(self, title: str) -> str | None:
        """The target title of redirect ``title`` (a normalised title), if the index knows redirects."""

    def snippet(self, page: int, para: int) -> str:
        return cut_snippet(self.text(page).split("\n\n")[para])

    def _bounded(self, rank: int | None) -> int | None:
        return None if rank is None or (self.rank_depth is not None and rank > self.rank_depth) else rank
