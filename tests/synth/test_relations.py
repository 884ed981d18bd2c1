"""Tests for src/hopforge/synth/relations.py and factgraph.py: facts from infobox fields and prose, never
from a sentence about someone else; both directions of a fact."""

from __future__ import annotations

from hopforge.synth.relations import best_relation, inverse, relation_of

from .conftest import toy_config, toy_context


def test_infobox_fields_are_facts_about_their_page():
    rel = relation_of("Houston", "birth_place: Houston, Texas, U.S.", subject="Beyoncé", person=True)
    assert (rel.phrase, rel.source) == ("was born in", "infobox:birth_place")
    assert relation_of("Richard Nixon", "president5: Richard Nixon").phrase == "served under"  # numbered key
    assert relation_of("Texas", "state6: Texas", subject="George H. W. Bush", person=True) is None  # a constituency
    assert relation_of("Paris", "map_caption: Paris in France") is None  # not a relation


def test_prose_relation_right_before_the_anchor():
    rel = relation_of("Matt Damon", "In 2006 he worked with Matt Damon, Jack Nicholson and Mark Wahlberg.",
                      subject="Martin Scorsese", person=True)
    assert rel.phrase == "worked with"
    rel = relation_of("heavy metal music", "Black metal is an extreme subgenre of heavy metal music.",
                      subject="Black metal")
    assert rel.phrase == "is a form of"
    assert relation_of("Albert Einstein", "General relativity is the theory published by Albert Einstein in 1915.",
                       subject="General relativity").phrase == "was published by"


def test_sentences_about_someone_else_or_plans_are_not_facts():
    # Hand-checked enwiki-233 sentences that the relation lexicon matches but that state no fact about the page.
    assert relation_of("Queen", "Members of Queen dismissed the activists.", subject="Guns N' Roses") is None
    assert relation_of("Martin Scorsese", "Also in 2002, DiCaprio starred in Martin Scorsese's Gangs of New York.",
                       subject="Leonardo DiCaprio", person=True) is None  # possessive: the object is the film
    assert relation_of("Margaret Thatcher", "In 2007, Giuliani was awarded the Margaret Thatcher Medal of Freedom.",
                       subject="Rudy Giuliani", person=True) is None  # part of a longer name
    assert relation_of("Washington, D.C.", "In 1968, King was planning a national occupation of Washington, D.C., "
                       "to be called the Poor People's Campaign.", subject="Martin Luther King Jr.", person=True) is None
    assert relation_of("Soviet Union", "In 1941, Nazi Germany broke the pact and invaded the Soviet Union.",
                       subject="Iran") is None  # the subject is Nazi Germany


def test_best_relation_prefers_the_infobox_and_inverse_reads_both_ways():
    rows = [{"anchor": "Houston", "sentence": "She grew up in Houston with her sister.", "position": 3},
            {"anchor": "Houston", "sentence": "birth_place: Houston, Texas", "position": 9}]
    assert best_relation(rows, "Beyoncé", person=True).phrase == "was born in"
    assert inverse("was born in") == "is the birthplace of"
    assert inverse("was painted by") == "painted"
    assert inverse("has a rivalry with") == "has a rivalry with"


def test_toy_fact_graph_has_both_directions_and_no_fact_for_plain_links(toy_out):
    ctx = toy_context(toy_config(toy_out))
    t = ctx.view.node_of_title
    vane, press, ell, west = t["Cedric Vane"], t["Duskwater Press (publisher)"], t["Ell (river)"], t["Westshire"]
    fact = ctx.facts.facts[ctx.facts.edge(press, vane)]
    assert (fact.phrase, fact.source) == ("was founded by", "infobox:founder")
    back = ctx.facts.facts[ctx.facts.edge(vane, press)]  # the press's infobox, read from Vane's side
    assert back.phrase == "founded" and back.stated_on == press
    # "The Ell flows through Westshire." states no relation the lexicon knows: no fact, no walk over it.
    assert ctx.facts.edge(ell, west) is None and ctx.facts.edge(west, ell) is None


def test_fact_graph_built_a_few_link_groups_at_a_time_equals_one_pass(enwiki233_graph, monkeypatch):
    """The fact graph turns link rows into Python objects a chunk of (src, dst) groups at a time, and
    streams the links through buckets by source page (memory); on enwiki-233's links, chunks of 7
    rows and buckets of 300 give the same graph as one chunk of one bucket."""
    from hopforge.storage.arrays import latest_run
    from hopforge.synth import factgraph
    from hopforge.synth.graph_view import GraphView, _dataset

    view = GraphView.load(enwiki233_graph, latest_run(enwiki233_graph, "graph"))
    pages = view.pages(int(p) for p in view.page_id)
    links = _dataset(view.out, "links", view.run).to_table(columns=factgraph.LINK_COLUMNS)

    def build():
        return factgraph.build_fact_graph(view.n_nodes, view.node_of_page, view.titles, links, pages)

    monkeypatch.setattr(factgraph, "FACT_CHUNK_ROWS", 10**9)
    whole = build()
    monkeypatch.setattr(factgraph, "FACT_CHUNK_ROWS", 7)
    chunked = build()
    # Buckets of ~300 link rows by source page (streamed from the dataset, not a table): the same graph.
    monkeypatch.setattr(factgraph, "BUCKET_ROWS", 300)
    bucketed = factgraph.build_fact_graph(view.n_nodes, view.node_of_page, view.titles,
                                          _dataset(view.out, "links", view.run), pages)
    assert len(whole.facts) > 100 and links.column("dst_id").null_count < len(links) - 8 * 300  # 8+ buckets
    for other in (chunked, bucketed):
        assert (whole.indptr == other.indptr).all() and (whole.indices == other.indices).all()
        assert (whole.in_lead == other.in_lead).all() and list(whole.facts) == list(other.facts)
