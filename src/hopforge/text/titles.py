"""Title normalisation as MediaWiki does it, driven by the dump's own <siteinfo>.

Namespaces come from the dump (so ``Kategoreja:`` on one wiki and ``Category:`` on
another both resolve), plus MediaWiki's canonical English names, which every wiki
accepts as aliases (ltgwiki pages write ``[[Category:…]]`` although its siteinfo
lists only localised names).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

# MediaWiki's canonical namespace names (valid on every wiki, whatever the language).
CANONICAL_NAMESPACES: dict[int, str] = {
    -2: "Media", -1: "Special", 1: "Talk", 2: "User", 3: "User talk", 4: "Project", 5: "Project talk",
    6: "File", 7: "File talk", 8: "MediaWiki", 9: "MediaWiki talk", 10: "Template", 11: "Template talk",
    12: "Help", 13: "Help talk", 14: "Category", 15: "Category talk",
}
# Old aliases MediaWiki still accepts.
EXTRA_ALIASES: dict[str, int] = {"image": 6, "image talk": 7}

NS_FILE = 6
NS_CATEGORY = 14
NS_MEDIA = -2

_SPACES = re.compile(r"[\s_\u00a0\u200e\u200f]+")
# The same runs, but a lone " " (already normal) is not matched: normalising "United States" makes no match.
_SPACE_RUNS = re.compile(r"(?:[^\S ]|[_\u00a0\u200e\u200f])[\s_\u00a0\u200e\u200f]*| [\s_\u00a0\u200e\u200f]+")


def normalize_title(raw: str, *, first_letter: bool = True) -> str:
    """MediaWiki title normalisation without namespace rules: underscores and whitespace runs become
    one space, ends are trimmed, the first letter is upper-cased (the default ``first-letter`` case).

    :meth:`SiteInfo.normalize` adds fragments, namespaces and the wiki's own case rules; readers that
    only hold a title (the search environment's ``visit``) use this."""
    t = _SPACE_RUNS.sub(" ", raw).strip()
    return t[:1].upper() + t[1:] if first_letter and t else t


@dataclass
class SiteInfo:
    """What the dump says about its wiki: name, language, title case rules and namespaces."""

    dbname: str = ""
    lang: str = ""
    case: str = "first-letter"
    namespaces: dict[int, str] = field(default_factory=lambda: {0: ""})
    ns_case: dict[int, str] = field(default_factory=dict)
    _lookup: dict[str, int] = field(default_factory=dict, repr=False)
    # normalize() results: link targets repeat a lot within and across pages of a batch.
    _memo: dict[str, tuple[str, str, int]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if not name.startswith("_") and "_memo" in self.__dict__:
            self._memo.clear()  # case or namespaces changed: cached normalisations are stale

    def __post_init__(self) -> None:
        self._build_lookup()

    def _build_lookup(self) -> None:
        lookup: dict[str, int] = {}
        for key, name in CANONICAL_NAMESPACES.items():
            lookup[name.lower()] = key
        lookup.update(EXTRA_ALIASES)
        for key, name in self.namespaces.items():
            if name:
                lookup[_SPACES.sub(" ", name).strip().lower()] = key
        self._lookup = lookup
        self._memo.clear()

    @classmethod
    def from_xml(cls, header: bytes) -> SiteInfo:
        """Parse the bytes before the first <page> (the <mediawiki> open tag and <siteinfo>)."""
        text = header.strip()
        if not text.endswith(b"</mediawiki>"):
            text += b"</mediawiki>"
        root = ET.fromstring(text)
        lang = root.get("{http://www.w3.org/XML/1998/namespace}lang", "")
        info = cls(lang=lang)
        for el in root.iter():
            tag = el.tag.rsplit("}", 1)[-1]
            if tag == "dbname":
                info.dbname = el.text or ""
            elif tag == "case" and el.text:
                info.case = el.text
            elif tag == "namespace":
                key = int(el.get("key", "0"))
                info.namespaces[key] = el.text or ""
                info.ns_case[key] = el.get("case", info.case)
        info._build_lookup()
        return info

    def to_dict(self) -> dict:
        return {"dbname": self.dbname, "lang": self.lang, "case": self.case,
                "namespaces": {str(k): v for k, v in self.namespaces.items()},
                "ns_case": {str(k): v for k, v in self.ns_case.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> SiteInfo:
        return cls(dbname=d["dbname"], lang=d["lang"], case=d["case"],
                   namespaces={int(k): v for k, v in d["namespaces"].items()},
                   ns_case={int(k): v for k, v in d["ns_case"].items()})

    def namespace_of(self, prefix: str) -> int | None:
        return self._lookup.get(_SPACES.sub(" ", prefix).strip().lower())

    def namespace_name(self, ns: int) -> str:
        return self.namespaces.get(ns) or CANONICAL_NAMESPACES.get(ns, "")

    def split(self, title: str) -> tuple[int, str]:
        """(namespace key, title without prefix) of a normalised title."""
        if ":" in title:
            prefix, rest = title.split(":", 1)
            ns = self.namespace_of(prefix)
            if ns is not None:
                return ns, rest
        return 0, title

    def normalize(self, raw: str) -> tuple[str, str, int]:
        """MediaWiki title normalisation: returns (title, fragment, namespace).

        Underscores and runs of whitespace become one space, a leading ':' (a
        forced link) is dropped, ``#fragment`` is cut, a namespace prefix is
        rewritten to the wiki's own name, and the first letter is upper-cased
        when the namespace's case rule is ``first-letter``.
        """
        hit = self._memo.get(raw)
        if hit is not None:
            return hit
        if len(self._memo) >= 65_536:  # bounded (~20 MB): a dump has millions of distinct targets
            self._memo.clear()
        result = self._memo[raw] = self._normalize(raw)
        return result

    def _normalize(self, raw: str) -> tuple[str, str, int]:
        title = _SPACE_RUNS.sub(" ", raw).strip()
        fragment = ""
        if "#" in title:
            title, fragment = title.split("#", 1)
            title, fragment = title.strip(), fragment.strip()
        title = title.lstrip(":").strip()
        ns = 0
        if ":" in title:
            prefix, rest = title.split(":", 1)
            found = self.namespace_of(prefix)
            if found is not None and found != 0:
                ns, title = found, rest.strip()
        if title and self.ns_case.get(ns, self.case) == "first-letter":
            title = title[0].upper() + title[1:]
        if ns != 0:
            title = f"{self.namespace_name(ns)}:{title}"
        return title, fragment, ns
