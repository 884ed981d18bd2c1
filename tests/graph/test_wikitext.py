from hopforge.text.titles import SiteInfo
from hopforge.graph.wikitext import extract

SITE = SiteInfo(namespaces={0: "", 6: "File", 14: "Category", 10: "Template"})

WIKITEXT = """{{Short description|Test city in Testland}}
{{Infobox settlement
| name = Fooville
| country = [[Testland]]
| population_total = {{formatnum:12345}}
}}
[[File:Fooville.jpg|thumb|A [[Bar river|river]] view]]
'''Fooville''' is a city in [[testland|the Testland]] on the [[Bar_River#Course|Bar]].<ref>{{cite web|title=[[Hidden]]}}</ref> It has many [[bus]]es.

It was founded in 1900.<!-- [[Comment link]] --> Its mayor is [[Jane Doe]].

== History ==
Settlers came from [[Baz]].
{| class="wikitable"
| [[Table link]]
|}
[[Category:Cities in Testland]]
[[de:Fooville]]
"""


def test_plain_text_strips_templates_refs_files_tables_comments():
    p = extract("Fooville", WIKITEXT, SITE, {0})
    assert p.text.startswith("Fooville is a city in the Testland on the Bar. It has many buses.")
    assert "\n\nIt was founded in 1900. Its mayor is Jane Doe." in p.text
    for absent in ("cite web", "Hidden", "Comment link", "Table link", "thumb", "Fooville.jpg", "de:Fooville"):
        assert absent not in p.text
    assert p.lead == "Fooville is a city in the Testland on the Bar. It has many buses."


def test_links_have_normalised_targets_anchor_sentence_and_lead_flag():
    p = extract("Fooville", WIKITEXT, SITE, {0})
    by_target = {lk.target: lk for lk in p.links}
    bar = by_target["Bar River"]
    assert (bar.raw_target, bar.anchor, bar.in_lead) == ("Bar_River#Course", "Bar", True)
    assert bar.sentence == "Fooville is a city in the Testland on the Bar."
    assert by_target["Testland"].anchor in ("Testland", "the Testland")
    assert by_target["Bus"].anchor == "buses"  # link trail
    jane = by_target["Jane Doe"]
    assert jane.sentence == "Its mayor is Jane Doe." and jane.in_lead
    baz = by_target["Baz"]
    assert baz.sentence == "Settlers came from Baz." and not baz.in_lead
    # Not links of the graph: files (and links inside their captions), categories, interlanguage, refs, tables.
    for absent in ("Bar river", "Hidden", "Table link", "De:Fooville", "Fooville.jpg", "Comment link"):
        assert absent not in by_target
    positions = [lk.position for lk in p.links]
    assert positions == list(range(len(p.links)))


def test_infobox_short_description_categories():
    p = extract("Fooville", WIKITEXT, SITE, {0})
    assert p.short_description == "Test city in Testland"
    assert p.infobox_type == "settlement"
    facts = {kv["key"]: kv["value"] for kv in p.infobox}
    assert facts["name"] == "Fooville" and facts["country"] == "Testland"
    assert p.categories == ["Cities in Testland"]
    infobox_link = next(lk for lk in p.links if lk.sentence == "country: Testland")
    assert infobox_link.target == "Testland"


def test_flags_disambiguation_list_date():
    assert extract("Mercury", "'''Mercury''' may refer to:\n* [[Mercury (planet)]]\n{{disambiguation}}",
                   SITE, {0}).is_disambiguation
    assert extract("List of rivers", "x", SITE, {0}).is_list
    assert extract("1066", "x", SITE, {0}).is_date
    assert extract("March 3", "x", SITE, {0}).is_date
    plain = extract("Fooville", WIKITEXT, SITE, {0})
    assert not (plain.is_disambiguation or plain.is_list or plain.is_date)
