from hopforge.text.titles import SiteInfo

HEADER = b"""<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" xml:lang="ltg"><siteinfo>
<dbname>ltgwiki</dbname><case>first-letter</case><namespaces>
<namespace key="0" case="first-letter" /><namespace key="14" case="first-letter">Kategoreja</namespace>
<namespace key="6" case="first-letter">Fails</namespace>
<namespace key="2302" case="case-sensitive">Gadget definition</namespace>
</namespaces></siteinfo>"""


def test_normalize_underscores_fragment_first_letter():
    site = SiteInfo.from_xml(HEADER)
    assert site.normalize("rīga_pilsāta#Viesture") == ("Rīga pilsāta", "Viesture", 0)
    assert site.normalize(":  Foo__bar ") == ("Foo bar", "", 0)


def test_localised_and_canonical_namespace_prefixes_resolve_to_local_name():
    site = SiteInfo.from_xml(HEADER)
    assert site.dbname == "ltgwiki" and site.lang == "ltg"
    assert site.normalize("kategoreja:latgale") == ("Kategoreja:Latgale", "", 14)
    # The canonical English name is an alias on every wiki.
    assert site.normalize("Category:latgale") == ("Kategoreja:Latgale", "", 14)
    assert site.normalize("Image:X.jpg")[2] == 6


def test_case_sensitive_namespace_keeps_first_letter():
    site = SiteInfo.from_xml(HEADER)
    assert site.normalize("Gadget definition:foo")[0] == "Gadget definition:foo"


def test_colon_in_article_title_is_not_a_namespace():
    site = SiteInfo.from_xml(HEADER)
    assert site.normalize("Star Wars: Episode IV") == ("Star Wars: Episode IV", "", 0)


def test_siteinfo_round_trips_through_dict():
    site = SiteInfo.from_xml(HEADER)
    again = SiteInfo.from_dict(site.to_dict())
    assert again.normalize("kategoreja:x") == site.normalize("kategoreja:x")


def test_normalize_memo_follows_changes_to_the_case_rules():
    import dataclasses

    site = SiteInfo.from_xml(HEADER)
    assert site.normalize("ipod")[0] == "Ipod"
    other = dataclasses.replace(site, case="case-sensitive", ns_case={0: "case-sensitive"})
    assert other.normalize("ipod")[0] == "ipod"  # a copy does not share the memo
    assert site.normalize("ipod")[0] == "Ipod"
    site.ns_case = {0: "case-sensitive"}  # changing a rule drops what was cached under the old one
    assert site.normalize("ipod")[0] == "ipod"
