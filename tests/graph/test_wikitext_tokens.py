"""The token-stream walk (the fast path) must give exactly what the node-tree walk gives.

``extract(..., tree=True)`` walks mwparserfromhell's node tree: the plain, obviously
correct reference. The default walks the tokenizer's output directly and builds nodes
only for the constructs it hands back to the tree code. Both are compared on every
article of the real dumps and on generated wikitext full of the awkward cases.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import asdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hopforge.graph.dump import iter_pages, open_blocks
from hopforge.text.titles import SiteInfo
from hopforge.graph.wikitext import extract
from tests.graph.conftest import wiki_file

SITE = SiteInfo(namespaces={0: "", 6: "File", 14: "Category", 10: "Template"})


def _articles(name: str):
    site = None
    for item in iter_pages(open_blocks(wiki_file(name))):
        if isinstance(item, SiteInfo):
            site = item
            continue
        if not isinstance(item, bytes):
            continue
        el = ET.fromstring(item)
        if el.findtext("ns") != "0" or el.find("redirect") is not None:
            continue
        yield site, el.findtext("title"), el.find("revision").findtext("text") or ""


def _same(title: str, text: str, site: SiteInfo, ns: set[int]) -> None:
    def run(tree: bool):
        try:
            return asdict(extract(title, text, site, ns, tree=tree))
        except Exception as e:  # noqa: BLE001 -- both paths must fail alike, too
            return type(e).__name__
    fast, ref = run(False), run(True)
    assert fast == ref, f"token walk differs from tree walk on {title!r}"


@pytest.mark.parametrize("name", ["enwiki-tiny-70.xml.bz2", "ltgwiki-tiny-8.xml.bz2"])
def test_token_walk_equals_tree_walk_on_small_dumps(name):
    n = 0
    for site, title, text in _articles(name):
        _same(title, text, site, {0})
        n += 1
    assert n >= 6


@pytest.mark.slow
def test_token_walk_equals_tree_walk_on_every_enwiki233_article():
    n = 0
    for site, title, text in _articles("enwiki-233.xml.bz2"):
        _same(title, text, site, {0})
        n += 1
    assert n == 233


# Fragments that exercise every branch of the token walk and each of its fallbacks to the tree code.
FRAGMENTS = [
    "Plain words. ", "Second sentence here! ", "\n\n", "\n", "  spaced\ttext\u00a0nbsp ", "U.S. Army ",
    "[[Alpha]]", "[[alpha beta|Gamma]]", "[[Bus]]es ", "[[Delta#Part|delta]]", "[[#Section|same page]]",
    "[[:Category:Forced]]", "[[Category:Cat One]]", "[[File:X.jpg|thumb|A [[Inner]] caption]]",
    "[[de:Fremd]]", "[[Epsilon|]]", "[[{{tpl}}|computed]]", "[[Zeta|''italic'' anchor]]", "[[ ]]",
    "{{cite web|title=[[Hidden]]}}", "{{nowrap|kept [[Eta]] text}}", "{{lang|fr|bonjour [[Theta]]}}",
    "{{lang|fr|2=keyed [[Iota]]}}", "{{nowrap|1=first|1=second}}", "{{nowrap}}", "{{ {{name}} |x}}",
    "{{sort|key|[[Kappa]] shown}}", "{{convert|10|km}}", "{{disambiguation}}", "{{Short description|A [[thing]]}}",
    ("{{Infobox person\n| name = [[Lambda]] Person\n| birth_date = {{birth date|1900|1|2}}\n"
    "| spouse = {{marriage|[[Mu]]|1920}}\n| other = {{plainlist|\n* [[Nu]]\n* Xi}}\n| 2 = positional\n"
    "| {{k}} = weird key\n| died = {{death date|{{x}}|3}}\n}}"),
    "{{Infobox thing|a=[[Omicron|o [[Pi]] nested]]|b={{ubl|x|[[Rho]]}}|c=&amp; &#x41; &#66;}}",
    "<ref>[[RefLink]]</ref>", "<ref name=x/>", "<!-- [[Commented]] -->", "<br/>", "<p>para</p>",
    "<span style=\"{{x}}\">span [[Sigma]] text</span>", "<div>[[Tau]]</div>", "<small>[[Upsilon]]</small>",
    "<{{t}}>odd</{{t}}>", "&nbsp;&mdash;&#8212;&#x2014;", "''it'' '''bold''' ",
    "\n* item [[Phi]]\n# numbered\n; term : def\n", "\n== Heading [[Chi]] ==\n", "\n=== Sub ===\n",
    "\n{| class=\"wikitable\"\n| [[Psi]] cell\n|}\n", "[http://example.org Ext [[Omega]] title]",
    "http://bare.example.org ", "{{{arg|default}}}", "(; born 1900)", "( )", "<gallery>\nX.jpg|[[G]]\n</gallery>",
    "[[List of things]]", "{{Set index article}}", "<nowiki>[[Not a link]]</nowiki>", "[[Alpha]]s, [[beta]]",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=14), st.sampled_from(["Foo", "List of bars", "1999"]))
def test_token_walk_equals_tree_walk_on_generated_wikitext(parts, title):
    _same(title, "".join(parts), SITE, {0})


@given(st.text(alphabet="[]{}|=<>/!'#*:;&\n -abcXY1", max_size=120))
@settings(max_examples=400, deadline=None)
def test_token_walk_equals_tree_walk_on_markup_soup(text):
    _same("Soup", text, SITE, {0})


# The fast whitespace helpers must do what the plain regexes they replace did.
_WS_ALPHABET = " \t\n_\u00a0\u200e\u200f\u2003\u3000ab"


@given(st.text(alphabet=_WS_ALPHABET, max_size=16))
def test_collapse_ws_equals_the_plain_regex(s):
    import re

    from hopforge.graph.wikitext import _WS, _collapse_ws

    assert _collapse_ws(s) == re.sub(r"[ \t\u00a0]+", " ", s) == _WS.sub(" ", s)


@given(st.text(alphabet=_WS_ALPHABET, max_size=16))
def test_title_space_runs_equal_the_plain_regex(s):
    from hopforge.text.titles import _SPACE_RUNS, _SPACES

    assert _SPACE_RUNS.sub(" ", s) == _SPACES.sub(" ", s)
