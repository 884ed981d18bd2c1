"""Wikitext -> plain text, links (anchor + sentence), infobox, categories, flags.

One pass of mwparserfromhell's (C) tokenizer per page, then a single walk over
its token stream that writes plain text and records every internal link at its
character offset, so the sentence around a link is cut from the same text a
reader sees. mwparserfromhell's node tree is built only for the few constructs
the walk hands back to the tree code (markup inside a link title or a template
name); ``extract(..., tree=True)`` walks the full tree instead and is the
reference the token walk is tested against, page for page.

Stripped: templates (except a few that render inline text, e.g. ``{{nowrap}}``),
``<ref>``, tables, files/images, categories, interlanguage links, comments.
Kept: link anchors, bold/italic contents, headings (as their own paragraph).
"""

from __future__ import annotations

import bisect
import gc
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

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
from mwparserfromhell.parser import tokens as tk
from mwparserfromhell.parser.builder import Builder

from hopforge.text.titles import NS_CATEGORY, NS_FILE, NS_MEDIA, SiteInfo

try:  # the C tokenizer ships in mwparserfromhell's wheels; the pure-Python one is a fallback
    from mwparserfromhell.parser._tokenizer import CTokenizer as _Tokenizer
except ImportError:  # pragma: no cover
    from mwparserfromhell.parser.tokenizer import Tokenizer as _Tokenizer

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
# A sentence ends after [.!?] (and closing quotes/brackets) before whitespace and a capital or digit.
# The sentence's last character is the match's first (no look-behind: scanning is ~3x faster).
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9ĀČĒĢĪĶĻŅŌŖŠŪŽÄÖÜÉÈ])")
# Runs of spaces, tabs and no-break spaces collapse to one space (_collapse_ws does the same with
# str.replace, which is several times faster on long text; _WS is for short names and keys).
_WS = re.compile(r"[\t\u00a0][ \t\u00a0]*| [ \t\u00a0]+")
_MULTI_SPACE = re.compile("  +")  # a two-space literal prefix: found by fast search, not tried per character
_PARA = re.compile(r"\n\s*\n+")
_PARA_BREAK = re.compile(r"\n\s*\n")
_LIST_TITLE = re.compile(r"^(List|Lists|Index|Outline|Timeline) of ", re.I)
_MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|December")
_DATE_TITLE = re.compile(rf"^(\d{{1,4}}( BC| BCE| AD| CE)?|\d{{1,4}}0s( BC)?|\d{{1,2}}(st|nd|rd|th) century( BC)?|"
                         rf"({_MONTHS}) \d{{1,2}}|\d{{1,2}} ({_MONTHS})|({_MONTHS}) \d{{4}})$")
# References and comments are dropped from the text anyway; cutting them before the parse
# roughly halves mwparserfromhell's time on enwiki articles (citation templates are ~40% of
# the wikitext). Self-closing <ref/> first; comments in the same pass so a commented-out
# "<ref" cannot open a match.
_PRESTRIP = re.compile(r"<(?:!--.*?(?:-->|\Z)|ref\b[^>]*?/>|ref\b[^>]*>.*?</ref\s*>)", re.DOTALL | re.IGNORECASE)
_DATE_TEMPLATES = ("birth date", "death date", "start date", "end date", "birth-date", "death-date", "dob",
                   "film date", "released", "date")


def _template_date(t: Template) -> str:
    """{{birth date and age|1879|3|14}} -> "1879-03-14" (the first year|month|day positional args)."""
    return _date_text([str(p.value) for p in t.params if not p.showkey][:3])


def _date_text(values: list[str]) -> str:
    """A date template's first positional values -> ISO date if they are year, month, day; else joined."""
    nums = [v.strip() for v in values]
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


_TEXT, _LINK_OPEN, _LINK_SEP, _TEMPLATE_OPEN = tk.Text, tk.WikilinkOpen, tk.WikilinkSeparator, tk.TemplateOpen
_PARAM_SEP, _PARAM_EQ, _TAG_OPEN, _HEADING_START = tk.TemplateParamSeparator, tk.TemplateParamEquals, tk.TagOpenOpen, \
    tk.HeadingStart
_ENTITY_START, _EXT_OPEN, _EXT_SEP = tk.HTMLEntityStart, tk.ExternalLinkOpen, tk.ExternalLinkSeparator
_ATTR_START, _TAG_CLOSE_OPEN, _TAG_OPEN_CLOSE = tk.TagAttrStart, tk.TagCloseOpen, tk.TagOpenClose
_OPENERS = frozenset({tk.TemplateOpen, tk.ArgumentOpen, tk.WikilinkOpen, tk.ExternalLinkOpen, tk.HTMLEntityStart,
                      tk.HeadingStart, tk.CommentStart, tk.TagOpenOpen})
_CLOSERS = frozenset({tk.TemplateClose, tk.ArgumentClose, tk.WikilinkClose, tk.ExternalLinkClose, tk.HTMLEntityEnd,
                      tk.HeadingEnd, tk.CommentEnd, tk.TagCloseSelfclose, tk.TagCloseClose})
_INTERLANG = re.compile(r"^[a-z]{2,3}(-[a-z]+)?:")


def _match(toks: list) -> list[int]:
    """For every opening token, the index of its closing token (the tokenizer nests them properly)."""
    match = [0] * len(toks)
    stack: list[int] = []
    push, pop = stack.append, stack.pop
    openers, closers = _OPENERS, _CLOSERS
    for k, t in enumerate(toks):
        c = type(t)
        if c in openers:
            push(k)
        elif c in closers:
            match[pop()] = k
    if stack:
        raise ValueError(f"unbalanced token stream ({len(stack)} constructs left open)")
    return match


def _find(toks: list, match: list[int], i: int, end: int, kind) -> int | None:
    """Index of the first ``kind`` token in ``toks[i:end]`` at this nesting level."""
    while i < end:
        c = type(toks[i])
        if c is kind:
            return i
        i = match[i] + 1 if c in _OPENERS else i + 1
    return None


def _find_all(toks: list, match: list[int], i: int, end: int, kind) -> list[int]:
    found = []
    while i < end:
        c = type(toks[i])
        if c is kind:
            found.append(i)
        i = match[i] + 1 if c in _OPENERS else i + 1
    return found


def _plain_text(toks: list, i: int, end: int) -> str | None:
    """The text of ``toks[i:end]`` if it is nothing but text, else None."""
    if end == i + 1 and type(toks[i]) is _TEXT:
        return toks[i]["text"]
    parts = []
    for k in range(i, end):
        t = toks[k]
        if type(t) is not _TEXT:
            return None
        parts.append(t["text"])
    return "".join(parts)



@dataclass(slots=True)
class _TokRange:
    """A run of tokens standing in for a ``Wikicode`` value (a template parameter, a link's text)."""

    toks: list
    match: list[int]
    start: int
    end: int

    def source(self) -> str | None:
        """The wikitext of the range if it is plain text (else None: the caller falls back to the tree)."""
        return _plain_text(self.toks, self.start, self.end)


@dataclass(slots=True)
class _TokParam:
    name: str
    value: _TokRange
    showkey: bool


@dataclass(slots=True)
class _TokTemplate:
    """What ``extract`` reads of a ``Template`` node (name, params, has/get), straight from tokens."""

    name: str
    params: list[_TokParam]

    @classmethod
    def read(cls, toks: list, match: list[int], i: int, seps: list[int], raw_name: str) -> _TokTemplate | None:
        params: list[_TokParam] = []
        bounds = seps + [match[i]]
        positional = 0
        for k in range(len(seps)):
            s, e = bounds[k] + 1, bounds[k + 1]
            eq = _find(toks, match, s, e, _PARAM_EQ)
            if eq is None:
                positional += 1
                params.append(_TokParam(str(positional), _TokRange(toks, match, s, e), False))
            else:
                key = _plain_text(toks, s, eq) if eq > s else ""
                if key is None:
                    return None
                params.append(_TokParam(key, _TokRange(toks, match, eq + 1, e), True))
        return cls(raw_name, params)

    def has(self, name) -> bool:
        name = str(name).strip()
        return any(p.name.strip() == name for p in self.params)

    def get(self, name) -> _TokParam:
        """The last parameter called ``name`` (mwparserfromhell's rule for duplicate keys)."""
        name = str(name).strip()
        for p in reversed(self.params):
            if p.name.strip() == name:
                return p
        raise KeyError(name)


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
    return _name_key(str(t.name))


def _name_key(name: str) -> str:
    """A template name as compared: underscores and runs of spaces -> one space, trimmed, lower case."""
    return _WS.sub(" ", name.replace("_", " ")).strip().lower()


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
                if not self._open_tag(str(node.tag).lower(), node.wiki_markup):
                    continue
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

    # ------------------------------------------------------------------ token stream
    # The same walk as ``walk`` above, but straight over mwparserfromhell's token list,
    # without building the node tree (the tree builder is ~80 % of a full parse and most of
    # what it builds -- citation templates, tables, every Text node -- is thrown away).
    # Constructs the fast path does not handle are built into nodes with mwparserfromhell's
    # own Builder and handed to ``walk``, so both paths give the same text and links.

    def walk_tokens(self, toks: list, match: list[int], i: int, end: int, depth: int, stop=None) -> int:
        """Walk ``toks[i:end]``; return the index reached (``end``, or the first ``stop`` token at this level)."""
        skip_trail = 0
        append = self.parts.append
        while i < end:
            t = toks[i]
            c = type(t)
            if c is _TEXT:
                value = t["text"]
                if skip_trail:
                    value, skip_trail = value[skip_trail:], 0
                if value:
                    append(value)
                    self.size += len(value)
                i += 1
            elif c is _LINK_OPEN:
                skip_trail = self._link_tokens(toks, match, i, end)
                i = match[i] + 1
            elif c is _TEMPLATE_OPEN:
                self._template_tokens(toks, match, i, depth)
                i = match[i] + 1
            elif c is _TAG_OPEN:
                self._tag_tokens(toks, match, i, depth)
                i = match[i] + 1
            elif c is _HEADING_START:
                if self.lead_end is None:
                    self.lead_end = self.size
                self.emit("\n\n")
                self.walk_tokens(toks, match, i + 1, match[i], depth + 1)
                self.emit("\n\n")
                i = match[i] + 1
            elif c is _ENTITY_START:
                self._fallback(toks, match, i, depth)
                i = match[i] + 1
            elif c is _EXT_OPEN:
                sep = _find(toks, match, i + 1, match[i], _EXT_SEP)
                if sep is not None:
                    self.walk_tokens(toks, match, sep + 1, match[i], depth + 1)
                i = match[i] + 1
            elif stop is not None and c is stop:
                return i
            elif c in _OPENERS:  # comments, {{{arguments}}}
                i = match[i] + 1
            else:  # a stray separator cannot occur in a well-formed range; ignore it like the tree would
                i += 1
        return i

    def _fallback(self, toks: list, match: list[int], i: int, depth: int) -> None:
        """Build the construct at ``i`` into nodes and walk it the tree way."""
        self.walk(Builder().build(toks[i: match[i] + 1]).nodes, depth)

    def _link_tokens(self, toks: list, match: list[int], i: int, end: int) -> int:
        m = match[i]
        if m == i + 2 and type(toks[i + 1]) is _TEXT:  # [[Title]]: most links
            sep, title = None, toks[i + 1]["text"]
        elif m == i + 4 and type(toks[i + 2]) is _LINK_SEP and type(toks[i + 1]) is _TEXT:  # [[Title|text]]
            sep, title = i + 2, toks[i + 1]["text"]
        else:
            sep = _find(toks, match, i + 1, m, _LINK_SEP)
            title = _plain_text(toks, i + 1, m if sep is None else sep)
        nxt = toks[m + 1] if m + 1 < end else None
        if title is None:  # a title with markup inside ([[{{foo}}]]): let the tree code decide
            node = Builder().build(toks[i: m + 1]).nodes[0]
            return self.link(node, Text(nxt["text"]) if type(nxt) is _TEXT else None)
        walk_text = None if sep is None else (lambda: self.walk_tokens(toks, match, sep + 1, m, 1))
        return self._add_link(title.strip(), walk_text, nxt["text"] if type(nxt) is _TEXT else None)

    def _template_tokens(self, toks: list, match: list[int], i: int, depth: int) -> None:
        m = match[i]
        seps = _find_all(toks, match, i + 1, m, _PARAM_SEP)
        raw_name = _plain_text(toks, i + 1, seps[0] if seps else m)
        if raw_name is None:  # {{ {{foo}} }}: a computed name
            self._fallback(toks, match, i, depth)
            return
        name = _name_key(raw_name)
        recorded = depth == 0 and (name == "short description" or name.startswith("infobox")
                                   or name.endswith((" infobox", " disambiguation")) or name in _DISAMBIG_TEMPLATES)
        argn = _INLINE_TEMPLATES.get(name)
        if not (recorded or argn or self.expand_templates):
            return  # the common case: a template that renders nothing we keep
        tpl = _TokTemplate.read(toks, match, i, seps, raw_name)
        if tpl is None:  # a parameter name with markup in it
            self._fallback(toks, match, i, depth)
            return
        if recorded:
            self.templates.append(tpl)
        if argn and tpl.has(argn):
            v = tpl.get(argn).value
            self.walk_tokens(toks, match, v.start, v.end, depth + 1)
        elif self.expand_templates and name.startswith(_DATE_TEMPLATES):
            nums = [p.value.source() for p in tpl.params if not p.showkey][:3]
            if any(n is None for n in nums):
                self._fallback(toks, match, i, depth)
                return
            self.emit(_date_text(nums))
        elif self.expand_templates:
            for k, prm in enumerate(p for p in tpl.params if not p.showkey):
                if k:
                    self.emit(", ")
                self.walk_tokens(toks, match, prm.value.start, prm.value.end, depth + 1)

    def _tag_tokens(self, toks: list, match: list[int], i: int, depth: int) -> None:
        m = match[i]
        t = toks[i]
        j = i + 1
        while j < m and type(toks[j]) is _TEXT:
            j += 1
        c = type(toks[j])
        if j == i + 1 or not (j == m or c is _ATTR_START or c is _TAG_CLOSE_OPEN):
            self._fallback(toks, match, i, depth)  # a tag name with markup in it
            return
        tag = "".join(toks[k]["text"] for k in range(i + 1, j)).lower()
        if not self._open_tag(tag, t.get("wiki_markup")):
            return
        if j == m:  # self-closing: no contents
            return
        while c is not _TAG_CLOSE_OPEN:  # attributes: skip them
            j = match[j] + 1 if c in _OPENERS else j + 1
            if j >= m:
                return  # self-closing with attributes
            c = type(toks[j])
        self.walk_tokens(toks, match, j + 1, m, depth + 1, stop=_TAG_OPEN_CLOSE)

    def _open_tag(self, tag: str, wiki_markup: str | None) -> bool:
        """Emit what the tag itself renders (a line break); True if its contents are walked."""
        if tag in _DROP_TAGS or wiki_markup == "{|":
            return False
        if tag in _BREAK_TAGS:
            self.emit("\n")
            return False
        if tag in ("li", "dt", "dd"):
            self.emit("\n")
        return True

    def link(self, node: Wikilink, nxt) -> int:
        walk_text = None if node.text is None else (lambda: self.walk(node.text.nodes, 1))
        return self._add_link(str(node.title).strip(), walk_text, str(nxt.value) if isinstance(nxt, Text) else None)

    def _add_link(self, raw: str, walk_text, next_text: str | None) -> int:
        """Both walks: emit a link's anchor (its text, or the title) and record it; return the trail length.

        ``walk_text`` writes the link's own text (None: ``[[Title]]`` shows the title); ``next_text``
        is the text right after the link, whose leading letters extend the anchor (``[[bus]]es``).
        """
        if not raw or raw.startswith("#"):  # same-page section link: text only
            if walk_text is not None:
                walk_text()
            return 0
        target, _frag, ns = self.site.normalize(raw)
        forced = raw.startswith(":")
        if ns == NS_CATEGORY and not forced:
            self.categories.append(target.split(":", 1)[1])
            return 0
        if ns in (NS_FILE, NS_MEDIA) and not forced:
            return 0
        if not forced and ":" in raw and ns == 0 and _INTERLANG.match(raw):
            return 0  # interlanguage link ([[de:Foo]]): not part of this wiki's graph
        start = self.size
        if walk_text is not None:
            walk_text()
        else:
            self.emit(raw.lstrip(":").split("#", 1)[0].strip() or raw)
        trail = 0
        if next_text is not None:
            mt = _TRAIL.match(next_text)
            if mt:  # [[bus]]es -> anchor "buses"
                self.emit(mt.group(0))
                trail = len(mt.group(0))
        if ns in self.link_ns and target:
            self.links.append((start, self.size, target, raw))
        return trail


def _collapse_ws(s: str) -> str:
    """``_WS.sub(" ", s)``: every run of spaces, tabs and no-break spaces becomes one space."""
    if "\t" in s:
        s = s.replace("\t", " ")
    if "\u00a0" in s:
        s = s.replace("\u00a0", " ")
    return _MULTI_SPACE.sub(" ", s) if "  " in s else s


def _sentence_spans(text: str) -> tuple[list[int], list[int]]:
    """Start and end offsets of every sentence of ``text`` (paragraphs split at blank lines), in order.

    Computed once per page; each link then finds its sentence by bisection instead of
    re-scanning its paragraph (pages with hundreds of links per paragraph made that quadratic).
    """
    starts: list[int] = []
    ends: list[int] = []
    p0 = 0
    n = len(text)
    bounds = [(m.start(), m.end()) for m in _PARA_BREAK.finditer(text)]
    if not bounds or bounds[-1][1] != n:
        bounds.append((n, n))  # the last paragraph runs to the end of the text
    for pend, nxt in bounds:
        s0 = p0
        for b in _SENTENCE_END.finditer(text, p0, pend):  # bounded like a slice, without the copy
            starts.append(s0)
            ends.append(b.start() + 1)
            s0 = b.end()
        starts.append(s0)
        ends.append(pend)
        p0 = nxt
    return starts, ends


def _sentence_at(text: str, spans: tuple[list[int], list[int]], start: int, end: int,
                 memo: dict[tuple[int, int], str] | None = None) -> str:
    """The sentence(s) of ``text`` covering [start, end), whitespace collapsed.

    ``memo`` caches the collapsed sentence per span: a sentence with several links is cut once.
    """
    starts, ends = spans
    i = max(0, bisect.bisect_right(starts, start) - 1)
    j = i
    while j + 1 < len(starts) and ends[j] < end and starts[j + 1] < end:
        j += 1  # an anchor spanning a sentence boundary ("U.S. Army") keeps both halves
    if memo is not None and (i, j) in memo:
        return memo[i, j]
    sentence = _collapse_ws(text[starts[i]: ends[j]].replace("\n", " ")).strip()
    if memo is not None:
        memo[i, j] = sentence
    return sentence


_EMPTY_PARENS = re.compile(r"\(\s*[;,]?\s*\)")
_OPEN_PAREN_PUNCT = re.compile(r"\(\s*[;,]\s*")


def _clean(text: str) -> str:
    # Stripped pronunciation/convert templates leave "(; born ...)" or "()": tidy those.
    text = _OPEN_PAREN_PUNCT.sub("(", _EMPTY_PARENS.sub("", text))
    paras = []
    for p in _PARA.split(_collapse_ws(text)):  # never touches a newline: one pass for all lines
        lines = [ln.strip() for ln in p.split("\n")]
        p = "\n".join(ln for ln in lines if ln)
        if p:
            paras.append(p)
    return "\n\n".join(paras)


def _plain(site: SiteInfo, wikicode) -> str:
    w = _Writer(site, set(), expand_templates=True)
    if isinstance(wikicode, _TokRange):
        w.walk_tokens(wikicode.toks, wikicode.match, wikicode.start, wikicode.end, 1)
    else:
        w.walk(wikicode.nodes, 1)
    # Infobox values list items one per line ({{plainlist}}, "* a\n* b"): join them with commas.
    lines = (_WS.sub(" ", ln).strip(" *#;:") for ln in "".join(w.parts).split("\n"))
    return ", ".join(ln for ln in lines if ln)


def _links_in(value) -> Iterator[tuple[str, Any]]:
    """(raw title, text or None) of every wikilink inside ``value``, nested ones too, in document order."""
    if not isinstance(value, _TokRange):
        for lk in value.filter_wikilinks(recursive=True):
            yield str(lk.title).strip(), lk.text
        return
    toks, match = value.toks, value.match
    for k in range(value.start, value.end):
        if type(toks[k]) is not _LINK_OPEN:
            continue
        mk = match[k]
        sep = _find(toks, match, k + 1, mk, _LINK_SEP)
        title = _plain_text(toks, k + 1, mk if sep is None else sep)
        if title is None:
            lk = Builder().build(toks[k: mk + 1]).nodes[0]
            yield str(lk.title).strip(), lk.text
        else:
            yield title.strip(), None if sep is None else _TokRange(toks, match, sep + 1, mk)


def extract(title: str, wikitext: str, site: SiteInfo, link_ns: set[int], *, tree: bool = False) -> ParsedPage:
    """Everything the pipeline needs from one page's wikitext. May raise on pathological input.

    ``tree=True`` walks mwparserfromhell's node tree instead of its token stream: same
    result, about 3x slower; kept as the reference the fast path is tested against.
    """
    gc_was_on = gc.isenabled()
    # A page is ~10k short-lived token objects and no reference cycles: with the cyclic GC on,
    # collections triggered by those allocations re-scan every row the batch has accumulated so far
    # (measured: tokenizing took 2x as long). Everything here is freed by reference counting.
    try:
        gc.disable()  # inside the try: a SIGALRM timeout right after it still re-enables the GC
        return _extract(title, wikitext, site, link_ns, tree)
    finally:
        if gc_was_on:
            gc.enable()


def _extract(title: str, wikitext: str, site: SiteInfo, link_ns: set[int], tree: bool) -> ParsedPage:
    source = _NOISE_TEMPLATES.sub("", _PRESTRIP.sub("", wikitext))
    w = _Writer(site, link_ns)
    if tree:
        w.walk(mwparserfromhell.parse(source).nodes)
    else:
        toks = _Tokenizer().tokenize(source, 0, False)
        w.walk_tokens(toks, _match(toks), 0, len(toks), 0)
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
                for lraw, ltext in _links_in(p.value):
                    target, _f, ns = site.normalize(lraw)
                    if ns in link_ns and target and not lraw.startswith("#"):
                        anchor = _plain(site, ltext) if ltext is not None else lraw.split("#", 1)[0]
                        page.links.append(LinkRow(target, lraw, anchor, f"{key}: {value}", position, True))
                        position += 1
        elif name in _DISAMBIG_TEMPLATES or name.endswith(" disambiguation"):
            page.is_disambiguation = True

    spans = _sentence_spans(raw) if w.links else ([], [])
    memo: dict[tuple[int, int], str] = {}
    for start, end, target, lraw in w.links:
        anchor = _collapse_ws(raw[start:end]).strip()
        page.links.append(LinkRow(target, lraw, anchor, _sentence_at(raw, spans, start, end, memo), position,
                                  start < lead_end))
        position += 1

    page.categories = list(dict.fromkeys(c.strip() for c in w.categories if c.strip()))
    if any("disambiguation pages" in c.lower() for c in page.categories) or title.endswith("(disambiguation)"):
        page.is_disambiguation = True
    page.is_list = bool(_LIST_TITLE.match(title))
    page.is_date = bool(_DATE_TITLE.match(title))
    return page
