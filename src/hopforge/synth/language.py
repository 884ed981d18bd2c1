"""The dump's language, from its own ``<siteinfo>`` (``<mediawiki xml:lang="ltg">``).

The graph stage does not store the siteinfo, so the question stage reads the header of the
dump it was built from (``graph.dump``, part of the graph's fingerprint); a dump that is gone
or remote falls back to its file name (``ltgwiki-...`` -> ``ltg``), then to English.
"""

from __future__ import annotations

import bz2
import gzip
import re
from functools import lru_cache
from pathlib import Path

from hopforge.text.titles import SiteInfo

HEADER_BYTES = 1 << 20


@lru_cache(maxsize=16)
def siteinfo_language(dump: str) -> str | None:
    """``xml:lang`` of the dump's ``<mediawiki>`` element, or None when the file cannot be read."""
    path = Path(dump)
    if not path.is_file():
        return None
    opener = bz2.open if path.suffix == ".bz2" else gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError:
        return None
    end = head.find(b"</siteinfo>")
    start = head.find(b"<mediawiki")
    if start < 0 or end < 0:
        return None
    try:
        return SiteInfo.from_xml(head[start: end + len(b"</siteinfo>")]).lang or None
    except Exception:  # noqa: BLE001 - a malformed header is the graph stage's error to report, not ours
        return None


def name_language(dump: str) -> str | None:
    """``enwiki-233.xml.bz2`` -> ``en``; ``ltgwiki-tiny-8`` -> ``ltg``; None if not a wiki dump name."""
    m = re.match(r"^([a-z][a-z_-]*?)wiki\b", Path(dump).name)
    return m.group(1).replace("_", "-") if m else None


def dump_language(dump: str, configured: str = "auto") -> str:
    """The language questions about ``dump`` are asked in: ``configured`` unless it is "auto"."""
    if configured != "auto":
        return configured
    return siteinfo_language(dump) or name_language(dump) or "en"
