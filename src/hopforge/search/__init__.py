"""search: the BM25 index over a graph run's pages, shared by the stages that search the dump.

The rollout stage's environment serves it to the agent; the question stage measures how
retrievable its questions are with it and replays their chains offline. A shared package,
not a stage: it reads the graph stage's ``pages`` table through :mod:`hopforge.storage`.
"""

from hopforge.search.index import MIN_PASSAGE_CHARS, SNIPPET_CHARS, TOKEN_RE, SearchHit, SearchIndex, cache_key, paginate

__all__ = ["MIN_PASSAGE_CHARS", "SNIPPET_CHARS", "TOKEN_RE", "SearchHit", "SearchIndex", "cache_key", "paginate"]
