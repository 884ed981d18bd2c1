"""search: the BM25 index over a graph run's pages, shared by the stages that search the dump.

The rollout stage's environment serves it to the agent; the question stage measures how
retrievable its questions are with it and replays their chains offline. A shared package,
not a stage: it reads the graph stage's ``pages`` table through :mod:`hopforge.storage`.
Two backends behind one interface (:class:`SearchBackend`): bm25s in memory
(:class:`SearchIndex`, small dumps) and tantivy on disk (:class:`TantivyIndex`, large dumps);
:func:`open_index` picks one as ``[search]`` says.
"""

from hopforge.search.base import SearchBackend, tokens
from hopforge.search.index import (
           MIN_PASSAGE_CHARS,
           SNIPPET_CHARS,
           TOKEN_RE,
           SearchHit,
           SearchIndex,
           cache_key,
           paginate,
)
from hopforge.search.open import open_index
from hopforge.search.tantivy_index import CorruptIndexError, TantivyIndex

__all__ = ["MIN_PASSAGE_CHARS", "SNIPPET_CHARS", "TOKEN_RE", "CorruptIndexError", "SearchBackend", "SearchHit",
           "SearchIndex", "TantivyIndex", "cache_key", "open_index", "paginate", "tokens"]
