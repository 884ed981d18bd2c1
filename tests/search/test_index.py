"""Tests for src/hopforge/search/index.py: page ranks agree with the ranked list the agent sees."""

from __future__ import annotations

from hopforge.search import SearchIndex

TITLES = ["Ostra Optics", "Hanne Lind", "Marren", "Sella (river)", "Quiet page"]
TEXTS = [
    "Ostra Optics is a camera maker founded in 1921 by Hanne Lind in Marren.\n\nIts Quillon camera sold well in Veloria and abroad for decades.",
    "Hanne Lind was an engineer who founded Ostra Optics, a camera maker, in the city of Marren.",
    "Marren is the capital of Veloria, on the river Sella. Its optics industry is famous.",
    "The Sella is a river of Veloria that flows through Marren to the sea.",
    "A page about nothing in particular, long enough to be one passage of the index.",
]


def test_ranks_match_the_deduplicated_search_list():
    index = SearchIndex(TITLES, TEXTS)
    for query in ("camera maker founded", "river through Marren", "Veloria capital optics", "Hanne Lind engineer"):
        listed = [h.title for h in index.search(query, k=len(TITLES))]
        ranks = index.ranks(query, list(range(len(TITLES))))
        for i, title in enumerate(TITLES):
            assert ranks[i] == (listed.index(title) + 1 if title in listed else None), (query, title)


def test_pages_without_the_query_terms_have_no_rank():
    index = SearchIndex(TITLES, TEXTS)
    assert index.ranks("Quillon", [0, 4]) == [1, None]
    assert index.ranks("the of and", [0]) == [None]  # stop words only
    assert index.index_of("Marren") == 2 and index.index_of("Atlantis") is None
