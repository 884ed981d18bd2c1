"""The scale dump generator writes a real multistream dump that ingest reads as it reads Wikimedia's."""

from __future__ import annotations

import bz2
from collections import Counter

import numpy as np

from hopforge.graph.dump import read_multistream_index
from hopforge.storage import query_arrow, read_table
from hopforge.testing.scaledump import (
    MEDIAN_CHARS,
    REDIRECT_SHARE,
    STREAM_PAGES,
    generate,
    paths_for,
)

from ..conftest import wiki_file


def test_index_offsets_open_streams_of_100_pages_with_the_header_in_its_own_stream(scale_dump):
    index = scale_dump.with_name(scale_dump.name.replace(".xml.bz2", "-index.txt.bz2"))
    rows = read_multistream_index(index)
    assert len(rows) == 3000 and [r[1] for r in rows] == list(range(1, 3001))
    per_stream = Counter(off for off, _, _ in rows)
    assert set(per_stream.values()) == {STREAM_PAGES}
    raw = scale_dump.read_bytes()
    for off in per_stream:
        assert raw[off:off + 3] == b"BZh"
    first = min(per_stream)
    header = bz2.decompress(raw[:first])
    assert header.startswith(b"<mediawiki") and header.rstrip().endswith(b"</siteinfo>")
    assert bz2.decompress(raw).rstrip().endswith(b"</mediawiki>")


def test_the_dump_ingests_through_the_multistream_path_with_every_link_resolved(scale_dump, scale_single):
    """``scale_single``: the dump ingested through the multistream planner (one batch per range of streams)."""
    out = scale_single
    pages = read_table(out, "pages", columns=["page_id", "title", "text"])
    redirects = read_table(out, "redirects", columns=["title", "target", "target_id"])
    assert pages.num_rows + redirects.num_rows == 3000
    assert abs(redirects.num_rows / 3000 - REDIRECT_SHARE) < 0.04
    # Rewired links all point at generated pages: none dangles, some go through a redirect.
    (dangling,) = query_arrow(out, "SELECT count(*) FILTER (WHERE dst_id IS NULL) FROM links").to_pylist()[0].values()
    assert dangling == 0
    (via,) = query_arrow(out, "SELECT count(*) FILTER (WHERE via_redirect) FROM links").to_pylist()[0].values()
    assert via > 0 and redirects.column("target_id").null_count == 0
    # Realistic sizes: every article keeps some lead prose (939 plain-text characters at the median
    # when measured; MEDIAN_CHARS is the wikitext's), short articles are the rule, a few are long.
    lengths = np.array([len(t) for t in pages.column("text").to_pylist()])
    assert lengths.min() >= 100 and MEDIAN_CHARS / 7 < np.median(lengths) < MEDIAN_CHARS
    assert lengths.max() > 10 * np.median(lengths)
    # In-degree is heavy-tailed: the most linked page has far more links than the typical one.
    indeg = query_arrow(out, "SELECT dst_id, count(*) AS n FROM links WHERE dst_id IS NOT NULL GROUP BY 1"
                        ).column("n").to_numpy()
    assert indeg.max() > 20 * np.median(indeg)
    # Infobox facts survive the cut (the infobox comes first): 1,666 of 1,956 articles when measured.
    (with_infobox,) = query_arrow(out, "SELECT count(*) FROM pages WHERE len(infobox) > 0").to_pylist()[0].values()
    assert with_infobox > 0.7 * pages.num_rows


def test_same_seed_same_bytes_other_seed_other_dump(tmp_path):
    source = wiki_file("enwiki-233.xml.bz2")
    a = generate(300, tmp_path / "a", source=source, seed=1, workers=1)
    b = generate(300, tmp_path / "b", source=source, seed=1, workers=2)
    c = generate(300, tmp_path / "c", source=source, seed=2, workers=1)
    assert a.dump.read_bytes() == b.dump.read_bytes() and a.index.read_bytes() == b.index.read_bytes()
    assert a.dump.read_bytes() != c.dump.read_bytes()
    assert paths_for(tmp_path / "a", 300) == (a.dump, a.index)
