"""Pages of the real enwiki-233 dump for the slow llama.cpp test and the rollout benchmark.

Uses the graph stage (``hopforge.graph.run_ingest``) when it is available; until
that branch is merged, a minimal stand-in (XML + mwparserfromhell ``strip_code``)
writes a ``pages`` table good enough to search and read. Nothing is copied into
the repository: text is read from ../shared/wiki at run time.
"""

from __future__ import annotations

import bz2
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pyarrow as pa

from hopforge.config import load_config
from hopforge.storage import schema_for, write_shard

WIKI = Path(__file__).resolve().parents[2] / ".." / "shared" / "wiki"
ENWIKI_233 = (WIKI / "enwiki-233.xml.bz2").resolve()


def build_pages(out: Path, dump: Path = ENWIKI_233) -> str:
    """Write pages (+ redirects) for ``dump`` under ``out``; returns which loader ran."""
    try:
        from hopforge.graph import run_ingest  # noqa: PLC0415 - optional until the graph branch lands
    except ImportError:
        _stand_in(out, dump)
        return "stand-in"
    run_ingest(load_config(None, {"run.out": str(out), "graph.dump": str(dump), "graph.workers": 1}))
    return "graph"


def _stand_in(out: Path, dump: Path) -> None:
    import mwparserfromhell  # noqa: PLC0415

    rows = []
    with bz2.open(dump, "rb") as f:
        for _, el in ET.iterparse(f):
            if not el.tag.endswith("}page"):
                continue
            ns_ = el.tag[: -len("page")]
            title = el.findtext(f"{ns_}title") or ""
            ns = int(el.findtext(f"{ns_}ns") or 0)
            text = el.findtext(f"{ns_}revision/{ns_}text") or ""
            if ns == 0 and el.find(f"{ns_}redirect") is None and text:
                # strip_code drops templates, tags and markup, keeping link text.
                plain = mwparserfromhell.parse(text).strip_code(normalize=True, collapse=True)
                plain = re.sub(r"\n{3,}", "\n\n", "\n".join(x.strip() for x in plain.split("\n"))).strip()
                rows.append({"page_id": int(el.findtext(f"{ns_}id") or len(rows)), "title": title, "ns": 0,
                             "text": plain, "lead": plain.split("\n\n")[0]})
            el.clear()
    write_shard(out, "pages", pa.Table.from_pylist(rows, schema=schema_for("pages")), run_id="enwiki-233")
