"""Wikitext -> plain text, links (anchor + sentence), infobox, categories, flags.

One mwparserfromhell parse per page, then a single walk over the node tree that
writes plain text and records every internal link at its character offset, so
the sentence around a link is cut from the same text a reader sees.

Stripped: templates (except a few that render inline text, e.g. ``{{nowrap}}``),
``<ref>``, tables, files/images, categories, interlanguage links, comments.
Kept: link anchors, bold/italic contents, headings (as their own paragraph).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

import mwparserfromhell
from mwparserfromhell.nodes import (
    Argument,
    Comment,
    ExternalLink,
    Heading,
    HTMLEntity,
    Tag,
    Template,
    Text,
    Wikilink,
)

from hopforge.graph.titles import NS_CATEGORY, NS_FILE, NS_MEDIA, SiteInfo

# Tags whose contents are never prose.
_DROP_TAGS = {"ref", "references", "table", "gallery", "math", "chem", "score", "timeline", "graph", "syntaxhighlight",
              "source", "imagemap", "mapframe", "maplink", "templatedata", "templatestyles", "noinclude", "style",
              "script", "hiero", "inputbox", "categorytree", "div"}
_BREAK_TAGS = {"br", "p", "hr"}
# Templates that render (part of) their arguments inline; value = which positional arg holds the text.
_INLINE_TEMPLATES = {"nowrap": 1, "lang": 2, "nobr": 1, "small": 1, "big": 1, "transl": 2, "vanchor": 1,
                     "ill": 1, "interlanguage link": 1, "lang-fr": 1, "lang-de": 1, "script": 2, "sic": 1,
                     "visible anchor": 1, "linktext": 1, "abbr": 1, "sort": 2}
_DISAMBIG_TEMPLATES = {"disambiguation", "disambig", "dab", "disamb", "hndis", "geodis", "hospitaldis", "mathdab",
                       "numberdis", "roaddis", "schooldis", "shipindex", "set index article", "surname",
                       "given name", "disambiguation cleanup", "letter-number combination disambiguation"}
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9ĀČĒĢĪĶĻŅŌŖŠŪŽÄÖÜÉÈ])")
_WS = re.compile(r"[ \t\u00a0]+")
_PARA = re.compile(r"\n\s*\n+")
_LIST_TITLE = re.compile(r"^(List|Lists|Index|Outline|Timeline) of ", re.I)
_MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|December")
_DATE_TITLE = re.compile(rf"^(\d{{1,4}}( BC| BCE| AD| CE)?|\d{{1,4}}0s( BC)?|\d{{1,2}}(st|nd|rd|th) century( BC)?|"
                         rf"({_MONTHS}) \d{{1,2}}|\d{{1,2}} ({_MONTHS})|({_MONTHS}) \d{{4}})$")
# References and comments are dropped from the text anyway; cutting them before the parse
# roughly halves mwparserfromhell's time on enwiki articles (citation templates are ~40% of
# the wikitext). Self-closing <ref/> first; comments in the same pass so a commented-out
# "<ref" cannot open a match.
_PRESTRIP = re.compile(r"<!--.*?(?:-->|\Z)|<ref\b[^>]*?/>|<ref\b[^>]*>.*?</ref\s*>", re.S | re.I)
_DATE_TEMPLATES = ("birth date", "death date", "start date", "end date", "birth-date", "death-date", "dob",
                   "film date", "released", "date")


def _template_date(t: Template) -> str:
    """{{birth date and age|1879|3|14}} -> "1879-03-14" (the first year|month|day positional args)."""
    nums = [str(p.value).strip() for p in t.params if not p.showkey][:3]
    if len(nums) == 3 and all(n.isdigit() for n in nums):
        return f"{int(nums[0]):04d}-{int(nums[1]):02d}-{int(nums[2]):02d}"
    return " ".join(n for n in nums if n)


# Innermost (no nested braces) templates that never render prose: citations outside <ref>
# (bibliographies), maintenance tags. The walk would drop them anyway; cutting them before
# the parse saves another ~25 % of parser time on enwiki articles.
_NOISE_TEMPLATES = re.compile(
    r"\{\{\s*(?:[Cc]ite[ _][^{}|]*|[Cc]itation|[Ss]fnp?|[Ss]fnm|[Hh]arv(?:nb|txt|p|colnb)?|[Rr]p|[Ww]ebarchive|"
    r"[Dd]ead link|[Cc]itation needed|[Cc]n|[Rr]eflist|[Uu]se (?:dmy|mdy) dates|[Aa]uthority control|"
    r"[Pp]p-[^{}|]*|[Cc]larify|[Ff]ailed verification|[Bb]etter source needed)\s*(?:\|[^{}]*)?\}\}")
_TRAIL = re.compile(r"^[a-zà-ÿāčēģīķļņōŗšūž]+")


@dataclass
class LinkRow:
    target: str
    raw_target: str
    anchor: str
    sentence: str
    position: int
    in_lead: bool


@dataclass
class ParsedPage:
    text: str = ""
    lead: str = ""
    short_description: str | None = None
    infobox_type: str | None = None
    infobox: list[dict[str, str]] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    is_disambiguation: bool = False
    is_list: bool = False
    is_date: bool = False
    links: list[LinkRow] = field(default_factory=list)


def _template_name(t: Template) -> str:
    return _WS.sub(" ", str(t.name).replace("_", " ")).strip().lower()


class _Writer:
    """Accumulates plain text and links with their offsets while walking the tree."""

    def __init__(self, site: SiteInfo, link_ns: set[int], expand_templates: bool = False) -> None:
        self.site = site
        self.expand_templates = expand_templates
        self.link_ns = link_ns
        self.parts: list[str] = []
        self.size = 0
        self.links: list[tuple[int, int, str, str]] = []  # start, end, target, raw (anchor = text[start:end])
        self.categories: list[str] = []
        self.templates: list[Template] = []
        self.lead_end: int | None = None

    def emit(self, s: str) -> None:
        if s:
            self.parts.append(s)
            self.size += len(s)

    def walk(self, nodes, depth: int = 0) -> None:
        nodes = list(nodes)
        skip_trail = 0
        for i, node in enumerate(nodes):
            if isinstance(node, Text):
                value = str(node.value)
                if skip_trail:
                    value, skip_trail = value[skip_trail:], 0
                self.emit(value)
            elif isinstance(node, Wikilink):
                skip_trail = self.link(node, nodes[i + 1] if i + 1 < len(nodes) else None)
            elif isinstance(node, Template):
                if depth == 0:
                    self.templates.append(node)
                name = _template_name(node)
                argn = _INLINE_TEMPLATES.get(name)
                if argn and node.has(argn):
                    self.walk(node.get(argn).value.nodes, depth + 1)
                elif self.expand_templates and name.startswith(_DATE_TEMPLATES):
                    self.emit(_template_date(node))
                elif self.expand_templates:
                    # Infobox values wrap lists in {{plainlist}}, {{ubl|a|b}}, {{marriage|X|1900}}...
                    for k, prm in enumerate(p for p in node.params if not p.showkey):
                        if k:
                            self.emit(", ")
                        self.walk(prm.value.nodes, depth + 1)
            elif isinstance(node, Tag):
                tag = str(node.tag).lower()
                if tag in _DROP_TAGS or node.wiki_markup == "{|":
                    continue
                if tag in _BREAK_TAGS:
                    self.emit("\n")
                    continue
                if tag in ("li", "dt", "dd"):
                    self.emit("\n")
                if node.contents is not None:
                    self.walk(node.contents.nodes, depth + 1)
            elif isinstance(node, Heading):
                if self.lead_end is None:
                    self.lead_end = self.size
                self.emit("\n\n")
                self.walk(node.title.nodes, depth + 1)
                self.emit("\n\n")
            elif isinstance(node, HTMLEntity):
                try:
                    self.emit(node.normalize())
                except (ValueError, OverflowError):
                    pass
            elif isinstance(node, ExternalLink):
                if node.title is not None:
                    self.walk(node.title.nodes, depth + 1)
            elif isinstance(node, (Comment, Argument)):
                continue

    def link(self, node: Wikilink, nxt) -> int:
        raw = str(node.title).strip()
        if not raw or raw.startswith("#"):  # same-page section link: text only
            if node.text is not None:
                self.walk(node.text.nodes, 1)
            return 0
        target, _frag, ns = self.site.normalize(raw)
        forced = raw.startswith(":")
        if ns == NS_CATEGORY and not forced:
            self.categories.append(target.split(":", 1)[1])
            return 0
        if ns in (NS_FILE, NS_MEDIA) and not forced:
            return 0
        if not forced and ":" in raw and ns == 0 and re.match(r"^[a-z]{2,3}(-[a-z]+)?:", raw):
            return 0  # interlanguage link ([[de:Foo]]): not part of this wiki's graph
        start = self.size
        if node.text is not None:
            self.walk(node.text.nodes, 1)
        else:
            shown = raw.lstrip(":").split("#", 1)[0].strip() or raw
            self.emit(shown)
        trail = 0
        if isinstance(nxt, Text):
            m = _TRAIL.match(str(nxt.value))
            if m:  # [[bus]]es -> anchor "buses"
                self.emit(m.group(0))
                trail = len(m.group(0))
        if ns in self.link_ns and target:
            self.links.append((start, self.size, target, raw))
        return trail


def _sentence_spans(text: str) -> tuple[list[int], list[int]]:
    """Start and end offsets of every sentence of ``text`` (paragraphs split at blank lines), in order.

    Computed once per page; each link then finds its sentence by bisection instead of
    re-scanning its paragraph (pages with hundreds of links per paragraph made that quadratic).
    """
    starts: list[int] = []
    ends: list[int] = []
    p0 = 0
    for m in re.finditer(r"\n\s*\n|\Z", text):
        para = text[p0: m.start()]
        s0 = 0
        for b in _SENTENCE_END.finditer(para):
            starts.append(p0 + s0)
            ends.append(p0 + b.start())
            s0 = b.end()
        starts.append(p0 + s0)
        ends.append(m.start())
        p0 = m.end()
        if m.end() == len(text):
            break
    return starts, ends


def _sentence_at(text: str, spans: tuple[list[int], list[int]], start: int, end: int) -> str:
    """The sentence(s) of ``text`` covering [start, end), whitespace collapsed."""
    starts, ends = spans
    i = max(0, bisect.bisect_right(starts, start) - 1)
    j = i
    while j + 1 < len(starts) and ends[j] < end and starts[j + 1] < end:
        j += 1  # an anchor spanning a sentence boundary ("U.S. Army") keeps both halves
    return _WS.sub(" ", text[starts[i]: ends[j]].replace("\n", " ")).strip()


_EMPTY_PARENS = re.compile(r"\(\s*[;,]?\s*\)")
_OPEN_PAREN_PUNCT = re.compile(r"\(\s*[;,]\s*")


def _clean(text: str) -> str:
    # Stripped pronunciation/convert templates leave "(; born ...)" or "()": tidy those.
    text = _OPEN_PAREN_PUNCT.sub("(", _EMPTY_PARENS.sub("", text))
    paras = []
    for p in _PARA.split(text):
        lines = [_WS.sub(" ", ln).strip() for ln in p.split("\n")]
        p = "\n".join(ln for ln in lines if ln)
        if p:
            paras.append(p)
    return "\n\n".join(paras)


def _plain(site: SiteInfo, wikicode) -> str:
    w = _Writer(site, set(), expand_templates=True)
    w.walk(wikicode.nodes, 1)
    # Infobox values list items one per line ({{plainlist}}, "* a\n* b"): join them with commas.
    lines = (_WS.sub(" ", ln).strip(" *#;:") for ln in "".join(w.parts).split("\n"))
    return ", ".join(ln for ln in lines if ln)


def extract(title: str, wikitext: str, site: SiteInfo, link_ns: set[int]) -> ParsedPage:
    """Everything the pipeline needs from one page's wikitext. May raise on pathological input."""
    code = mwparserfromhell.parse(_NOISE_TEMPLATES.sub("", _PRESTRIP.sub("", wikitext)))
    w = _Writer(site, link_ns)
    w.walk(code.nodes)
    raw = "".join(w.parts)
    lead_end = w.lead_end if w.lead_end is not None else len(raw)
    page = ParsedPage(text=_clean(raw))
    lead_paras = _clean(raw[:lead_end]).split("\n\n")
    page.lead = next((p for p in lead_paras if len(p) > 1), "")

    position = 0
    for t in w.templates:
        name = _template_name(t)
        if name == "short description" and t.has(1):
            page.short_description = _plain(site, t.get(1).value) or None
        elif (name.startswith("infobox") or name.endswith(" infobox")) and page.infobox_type is None:
            orig = _WS.sub(" ", str(t.name).replace("_", " ")).strip()  # keep the template's own case
            page.infobox_type = (orig[len("infobox"):] if name.startswith("infobox") else orig[: -len(" infobox")]
                                 ).strip() or "generic"
            for p in t.params:
                key = _WS.sub(" ", str(p.name)).strip()
                value = _plain(site, p.value)
                if key and value:
                    page.infobox.append({"key": key, "value": value})
                # Links inside the infobox are real page links; their "sentence" is the infobox line.
                for lk in p.value.filter_wikilinks(recursive=True):
                    lraw = str(lk.title).strip()
                    target, _f, ns = site.normalize(lraw)
                    if ns in link_ns and target and not lraw.startswith("#"):
                        anchor = _plain(site, lk.text) if lk.text is not None else lraw.split("#", 1)[0]
                        page.links.append(LinkRow(target, lraw, anchor, f"{key}: {value}", position, True))
                        position += 1
        elif name in _DISAMBIG_TEMPLATES or name.endswith(" disambiguation"):
            page.is_disambiguation = True

    spans = _sentence_spans(raw) if w.links else ([], [])
    for start, end, target, lraw in w.links:
        anchor = _WS.sub(" ", raw[start:end]).strip()
        page.links.append(LinkRow(target, lraw, anchor, _sentence_at(raw, spans, start, end), position,
                                  start < lead_end))
        position += 1

    page.categories = list(dict.fromkeys(c.strip() for c in w.categories if c.strip()))
    if any("disambiguation pages" in c.lower() for c in page.categories) or title.endswith("(disambiguation)"):
        page.is_disambiguation = True
    page.is_list = bool(_LIST_TITLE.match(title))
    page.is_date = bool(_DATE_TITLE.match(title))
    return page
