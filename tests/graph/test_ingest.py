"""Ingest on the real dumps (enwiki-233, enwiki-tiny-70, ltgwiki-tiny-8) and on broken ones."""

from __future__ import annotations

import bz2
import time

import numpy as np
import pytest

from hopforge.errors import DumpError
from hopforge.graph import GraphStats, LinkGraph, ingest_batch, plan_ingest, run_ingest
from hopforge.graph import ingest as ingest_mod
from hopforge.stage import StageRun, execute_batch, get_stage, resolve
from hopforge.storage import query_arrow, read_table, recover, verify
from hopforge.storage.arrays import load_arrays

from .conftest import cut_bz2, make_cfg, page_xml, wiki_file, write_dump

# What one ingest batch commits as a group.
BATCH_TABLES = ("pages", "links_raw", "redirects_raw", "ingest_batches", "rejects")


def _one(out, sql):
    rows = query_arrow(out, sql).to_pylist()
    assert len(rows) == 1, rows
    return rows[0]


# ----------------------------------------------------------------------------- enwiki-233


def test_enwiki233_pages_and_in_set_edges(enwiki233):
    out = enwiki233.run.out
    stats = enwiki233._stats
    assert isinstance(stats, GraphStats)
    assert stats.pages == 233 and stats.raw_pages == 233 and stats.redirects == 0 and stats.rejects == {}
    assert stats.batches == 6 and stats.batches_skipped == 0 and not stats.skipped and stats.empty is None
    assert stats.dump == "enwiki-233.xml.bz2"
    assert stats.rows["pages"] == 233 and stats.rows["ingest_batches"] == 6 and stats.rows["nodes"] == 233
    assert read_table(out, "pages").num_rows == 233
    assert _one(out, "SELECT count(DISTINCT page_id) AS n FROM pages")["n"] == 233
    g = LinkGraph.load(out)
    assert g.n_nodes == 233 == stats.nodes
    assert g.n_edges > 1500 and stats.edges == g.n_edges
    assert stats.links == stats.rows["links"] == read_table(out, "links", columns=[]).num_rows
    assert _one(out, "SELECT count(*) AS n FROM nodes")["n"] == 233


def test_enwiki233_known_link_with_anchor_and_sentence(enwiki233):
    row = _one(enwiki233.run.out, "SELECT * FROM links WHERE src_title = 'Abraham Lincoln' "
                                  "AND dst_title = 'American Civil War' ORDER BY position LIMIT 1")
    assert row["anchor"] == "American Civil War" and row["raw_target"] == "American Civil War"
    assert row["sentence"] == ("Lincoln led the nation through the American Civil War, the country's greatest "
                               "moral, cultural, constitutional, and political crisis.")
    assert row["in_lead"] is True and row["via_redirect"] is False


def test_enwiki233_infobox_facts(enwiki233):
    row = _one(enwiki233.run.out, "SELECT * FROM pages WHERE title = 'Albert Einstein'")
    facts = {kv["key"]: kv["value"] for kv in row["infobox"]}
    assert row["infobox_type"] == "scientist"
    assert facts["birth_date"] == "1879-03-14"
    assert facts["birth_place"] == "Ulm, Kingdom of Württemberg, German Empire"
    assert facts["death_place"] == "Princeton, New Jersey, U.S."
    assert facts["doctoral_advisor"] == "Alfred Kleiner"
    assert row["short_description"] == "German-born scientist who developed the theory of relativity"
    assert "\n\n" in row["text"] and "{{" not in row["text"] and "<ref" not in row["text"]
    assert row["lead"].startswith("Albert Einstein")
    assert row["source"] == "enwiki-233.xml.bz2" and row["revision_timestamp"].year == 2021


def test_enwiki233_csr_contract(enwiki233):
    out = enwiki233.run.out
    arrays, meta = load_arrays(out, "graph")
    indptr, indices = arrays["indptr"], arrays["indices"]
    assert isinstance(indptr, np.memmap) and indptr.dtype == np.int64 and indices.dtype == np.int32
    assert arrays["edge_position"].dtype == np.int32 and arrays["edge_in_lead"].dtype == bool
    assert meta["n_nodes"] == 233 and meta["n_edges"] == len(indices) and meta["dump"] == "enwiki-233.xml.bz2"
    for u in range(233):
        row = indices[indptr[u]: indptr[u + 1]]
        assert np.all(np.diff(row) > 0), "sorted, one edge per (src, dst)"
        assert u not in row, "no self loops"
    # The edge Lincoln -> American Civil War joins `links` on (src page id, position) to its anchor.
    g = LinkGraph.load(out)
    a, b = g.node_of("Abraham Lincoln"), g.node_of("American Civil War")
    pos, in_lead = g.edge_info(a, b)
    row = _one(out, f"SELECT anchor, dst_title FROM links WHERE src_id = {int(g.page_ids[a])} AND position = {pos}")
    assert row == {"anchor": "American Civil War", "dst_title": "American Civil War"} and in_lead
    # nodes.out_degree agrees with the CSR rows.
    deg = _one(out, f"SELECT out_degree, in_degree FROM nodes WHERE node = {a}")
    assert deg["out_degree"] == indptr[a + 1] - indptr[a]


def test_enwiki233_rerun_skips_everything(enwiki233):
    out = enwiki233.run.out
    first = enwiki233._stats
    stats = run_ingest(enwiki233)
    assert stats.batches == first.batches == 6 and stats.batches_skipped == 6 and stats.skipped
    # The counts are this invocation's work, and it did none.
    assert (stats.pages, stats.raw_pages, stats.redirects, stats.links_raw, stats.nodes, stats.edges,
            stats.links, stats.links_via_redirect) == (0, 0, 0, 0, 0, 0, 0, 0)
    assert stats.rows == {} and stats.rejects == {} and stats.empty is None
    assert read_table(out, "pages").num_rows == 233
    assert read_table(out, "ingest_batches").num_rows == 6
    assert read_table(out, "links", columns=[]).num_rows == first.rows["links"]


# ----------------------------------------------------------------------------- enwiki-tiny-70


def test_tiny70_all_64_redirects_resolved(tiny70):
    out = tiny70.run.out
    red = {r["title"]: r for r in read_table(out, "redirects").to_pylist()}
    assert len(red) == 64
    assert red["AccessibleComputing"]["target"] == "Computer accessibility"
    assert red["AfghanistanHistory"]["target"] == "History of Afghanistan"
    assert red["AmoeboidTaxa"]["target"] == "Amoeba"
    # Targets outside this 70-page slice stay unresolved to an id, never invented.
    assert red["AccessibleComputing"]["target_id"] is None
    assert all(r["target"] for r in red.values())
    assert read_table(out, "pages").num_rows == 6
    assert _one(out, "SELECT red_links FROM pages WHERE title = 'Anarchism'")["red_links"] > 0


def _tiny70_multistream(tmp_path):
    """enwiki-tiny-70 as a real multistream dump (streams of 10 pages) + its index.

    Returns (dump, the byte offset of each page stream, the page titles in dump order)."""
    from hopforge.graph.dump import page_head

    raw = bz2.decompress(wiki_file("enwiki-tiny-70.xml.bz2").read_bytes())
    first = raw.find(b"<page>")
    header, body = raw[:first], raw[first:]
    pages = [p + b"</page>\n" for p in body.split(b"</page>")[:-1]]
    tail = body.split(b"</page>")[-1]
    dump = tmp_path / "tiny-multistream.xml.bz2"
    index_lines, offsets, titles = [], [], []
    with open(dump, "wb") as f:
        f.write(bz2.compress(header))
        for i in range(0, len(pages), 10):
            off = f.tell()
            offsets.append(off)
            for p in pages[i: i + 10]:
                h = page_head(p)
                index_lines.append(f"{off}:{h.page_id}:{h.title}")
                titles.append(h.title)
            f.write(bz2.compress(b"".join(pages[i: i + 10])))
        f.write(bz2.compress(tail))
    (tmp_path / "tiny-multistream-index.txt.bz2").write_bytes(bz2.compress("\n".join(index_lines).encode()))
    return dump, offsets, titles


def test_tiny70_multistream_gives_the_same_tables(tiny70, tmp_path):
    """Split enwiki-tiny-70 into a real multistream dump + index; batches come from the index."""
    dump, _offsets, _titles = _tiny70_multistream(tmp_path)
    cfg = make_cfg(tmp_path / "out", dump, **{"graph.workers": 2, "graph.batch_pages": 20})
    batches = plan_ingest(cfg)
    assert [b.kind for b in batches] == ["multistream"] * 4 and [b.pages for b in batches] == [20, 20, 20, 10]
    run_ingest(cfg)
    for table, key in (("pages", "page_id"), ("redirects", "title")):
        got = sorted(read_table(cfg.run.out, table).column(key).to_pylist())
        assert got == sorted(read_table(tiny70.run.out, table).column(key).to_pylist())
    q = "SELECT src_id, position, target FROM links_raw ORDER BY 1, 2"
    assert query_arrow(cfg.run.out, q).to_pylist() == query_arrow(tiny70.run.out, q).to_pylist()


# Where a multistream dump of 10-page streams (batches of 20 pages: streams 2k and 2k+1) is cut, and
# how many pages survive whole. The last one read whole is a redirect in every case.
MULTISTREAM_CUTS = {
    "mid_second_stream_of_batch_2": (lambda o: (o[5] + o[6]) // 2, 50),
    "mid_first_stream_of_batch_2": (lambda o: (o[4] + o[5]) // 2, 40),
    "at_a_stream_boundary_inside_batch_2": (lambda o: o[5], 50),
    "at_the_start_of_batch_2": (lambda o: o[4], 40),
}


@pytest.mark.parametrize("where", MULTISTREAM_CUTS)
def test_truncated_multistream_fails_naming_the_cut_and_the_last_page_read_whole(tmp_path, where):
    """Batches are byte ranges from the index, so a batch must notice that the file ends inside its
    range (even at a stream boundary), and name the last page read whole, even if that page is a
    redirect or lies in the batch before. Only the batch where the file ends reports the break."""
    dump, offsets, titles = _tiny70_multistream(tmp_path)
    cut_at, whole = MULTISTREAM_CUTS[where]
    cut = cut_at(offsets)
    dump.write_bytes(dump.read_bytes()[:cut])
    cfg = make_cfg(tmp_path / "out", dump, **{"graph.workers": 2, "graph.batch_pages": 20})
    with pytest.raises(DumpError) as err:
        run_ingest(cfg)
    assert (f"tiny-multistream.xml.bz2: bz2 stream ends early at compressed byte {cut}; "
            f"last complete page: {titles[whole - 1]!r}") in str(err.value)
    got = read_table(cfg.run.out, "pages").column("title").to_pylist() + read_table(
        cfg.run.out, "redirects_raw").column("title").to_pylist()
    assert sorted(got) == sorted(titles[:whole])
    assert titles[whole - 1] in read_table(cfg.run.out, "redirects_raw").column("title").to_pylist()
    rej = read_table(cfg.run.out, "rejects").to_pylist()
    assert [(r["step"], r["reason"]) for r in rej] == [("read_dump", "truncated_dump")]
    _graph_tables_clean(cfg.run.out)


# ----------------------------------------------------------------------------- ltgwiki


def test_ltgwiki_latgalian_namespaces_categories_duplicates(tmp_path):
    cfg = make_cfg(tmp_path, wiki_file("ltgwiki-tiny-8.xml.bz2"), **{"graph.workers": 1})
    batches = plan_ingest(cfg)
    assert batches[0].site["namespaces"]["2"] == "Lītuotuojs"
    assert batches[0].site["lang"] == "ltg"
    run_ingest(cfg)
    pages = {r["title"]: r for r in read_table(cfg.run.out, "pages").to_pylist()}
    # ltgwiki's categories are written with the canonical English prefix its siteinfo does not list.
    assert "1834 establishments in Canada" in pages["Toronto"]["categories"]
    assert "Category:Toronto" not in pages["Toronto"]["text"]
    # This test dump gives six different titles page id 1: the first keeps it, the rest are rejected.
    assert sorted(pages) == ["Hello", "Toronto"]
    rej = read_table(cfg.run.out, "rejects").to_pylist()
    assert {r["reason"] for r in rej} == {"duplicate_page_id"}
    assert any("'Bodmin' reuses the id of 'Hello'" in r["detail"] for r in rej)
    red = read_table(cfg.run.out, "redirects").to_pylist()
    assert [r["title"] for r in red] == ["Redirect page"]


# ----------------------------------------------------------------------------- bad input


def test_bad_pages_go_to_rejects_and_the_run_goes_on(tmp_path, monkeypatch):
    pages = (page_xml(1, "Alpha", "Alpha links to [[Beta]].")
             + page_xml(2, "Broken", "{{Infobox thing | name = [[Beta | x {{{{ [[ <ref> '''unclosed ]] }")
             + "<page><title>Bad xml</title><ns>0</ns><id>3</id><revision><id>1</id><text>a &bogus; b"
               "</text></revision></page>\n"
             + page_xml(4, "Slow", "This page parses slowly.")
             + page_xml(5, "Beta", "Beta links back to [[alpha]]."))
    dump = write_dump(tmp_path / "bad.xml.bz2", pages, compress=True)
    real = ingest_mod.wikitext.extract

    def slow_extract(title, text, site, ns):
        if title == "Slow":
            time.sleep(5)
        return real(title, text, site, ns)

    monkeypatch.setattr(ingest_mod.wikitext, "extract", slow_extract)
    cfg = make_cfg(tmp_path / "out", dump, **{"graph.workers": 1, "graph.page_timeout_s": 0.3})
    t0 = time.monotonic()
    stats = run_ingest(cfg)
    assert time.monotonic() - t0 < 5, "the time limit interrupts the slow parse"
    rejects = {r["row_id"]: r for r in read_table(cfg.run.out, "rejects").to_pylist()}
    assert rejects["4"]["reason"] == "parser_timeout" and "'Slow'" in rejects["4"]["detail"]
    assert rejects["3"]["reason"] == "malformed_xml" and "'Bad xml'" in rejects["3"]["detail"]
    assert rejects["4"]["stage"] == "ingest" and rejects["4"]["row_table"] == "pages"
    titles = sorted(read_table(cfg.run.out, "pages").column("title").to_pylist())
    assert titles == ["Alpha", "Beta", "Broken"]  # broken markup still yields a page
    edges = {(r["src_title"], r["dst_title"]) for r in read_table(cfg.run.out, "links").to_pylist()}
    assert {("Alpha", "Beta"), ("Beta", "Alpha")} <= edges and stats.edges == len(edges)
    assert stats.rejects == {"malformed_xml": 1, "parser_timeout": 1} and stats.pages == 3
    assert not any("Slow" in e or "Bad xml" in e for pair in edges for e in pair)


def test_parser_error_is_rejected(tmp_path, monkeypatch):
    dump = write_dump(tmp_path / "d.xml", page_xml(1, "Alpha", "x") + page_xml(2, "Beta", "y"))

    def boom(title, text, site, ns):
        if title == "Beta":
            raise ValueError("tokenizer exploded")
        return real(title, text, site, ns)

    real = ingest_mod.wikitext.extract
    monkeypatch.setattr(ingest_mod.wikitext, "extract", boom)
    cfg = make_cfg(tmp_path / "out", dump, **{"graph.workers": 1})
    run_ingest(cfg)
    rej = read_table(cfg.run.out, "rejects").to_pylist()
    assert [(r["reason"], r["row_id"]) for r in rej] == [("parser_error", "2")]
    assert "tokenizer exploded" in rej[0]["detail"]


def _graph_tables_clean(out):
    """Every table the graph stage wrote matches its manifest (no torn or unrecorded shard)."""
    for table in (*BATCH_TABLES, "links", "redirects", "nodes"):
        report = verify(out, table)
        assert report.clean, report


def test_truncated_bz2_fails_naming_where_then_allow_truncated_builds_from_the_intact_batches(tmp_path):
    cut, size, survivors = cut_bz2(wiki_file("enwiki-tiny-70.xml.bz2"), tmp_path / "cut.xml.bz2", 0.6)
    assert 10 < len(survivors) < 70  # the cut leaves whole bz2 blocks before it
    cfg = make_cfg(tmp_path / "out", cut, **{"graph.workers": 1, "graph.batch_pages": 16})
    with pytest.raises(DumpError) as err:
        run_ingest(cfg)
    msg = str(err.value)
    pages = read_table(cfg.run.out, "pages")
    assert f"cut.xml.bz2: bz2 stream ends early at compressed byte {size}" in msg
    assert f"last complete page: {survivors[-1]!r}" in msg
    assert f"The {pages.num_rows} pages before it are ingested" in msg and "--allow-truncated" in msg
    # The intact batches stay committed and readable; the stage is not complete, the graph not built.
    assert pages.num_rows > 0
    titles = pages.column("title").to_pylist() + read_table(cfg.run.out, "redirects_raw").column("title").to_pylist()
    assert sorted(titles) == sorted(survivors)
    rej = read_table(cfg.run.out, "rejects").to_pylist()
    assert [(r["step"], r["reason"]) for r in rej] == [("read_dump", "truncated_dump")]
    _graph_tables_clean(cfg.run.out)
    run = resolve(cfg, "graph")
    assert run.complete() is None and read_table(cfg.run.out, "nodes").num_rows == 0
    # Re-running without allow_truncated fails the same way (nothing re-parsed, nothing built).
    with pytest.raises(DumpError) as again:
        run_ingest(cfg)
    assert str(again.value) == msg and run.complete() is None

    # allow_truncated only decides whether to go on: same fingerprint, so the parsed batches are reused.
    allow = make_cfg(tmp_path / "out", cut, **{"graph.workers": 1, "graph.batch_pages": 16,
                                                "graph.allow_truncated": True})
    assert resolve(allow, "graph").fingerprint == run.fingerprint
    stats = run_ingest(allow)
    assert stats.batches == len(plan_ingest(cfg)) == stats.batches_skipped and stats.pages == 0
    assert stats.nodes == pages.num_rows and run.complete() is not None
    nodes = read_table(cfg.run.out, "nodes").column("title").to_pylist()
    assert sorted(nodes) == sorted(pages.column("title").to_pylist())
    assert LinkGraph.load(cfg.run.out).n_nodes == pages.num_rows
    assert read_table(cfg.run.out, "redirects").num_rows == len(survivors) - pages.num_rows
    _graph_tables_clean(cfg.run.out)


def test_dump_cut_mid_page_fails_then_allow_truncated_keeps_the_pages_before(tmp_path):
    doc = write_dump(tmp_path / "d.xml", page_xml(1, "Alpha", "a [[Beta]]") + page_xml(2, "Beta", "b"))
    raw = doc.read_bytes()
    doc.write_bytes(raw[: raw.find(b"<text", raw.find(b"<title>Beta"))])
    beta_at = raw.rfind(b"<page>", 0, raw.find(b"<title>Beta"))
    cfg = make_cfg(tmp_path / "out", doc, **{"graph.workers": 1})
    with pytest.raises(DumpError) as err:
        run_ingest(cfg)
    msg = str(err.value)
    assert f"d.xml: page 2 'Beta' is cut off at the end of the dump (uncompressed byte {beta_at} opens a <page>" in msg
    assert "last complete page: 'Alpha'" in msg and "--allow-truncated" in msg
    assert read_table(cfg.run.out, "pages").column("title").to_pylist() == ["Alpha"]
    _graph_tables_clean(cfg.run.out)

    stats = run_ingest(make_cfg(tmp_path / "out", doc, **{"graph.workers": 1, "graph.allow_truncated": True}))
    assert stats.nodes == 1 and stats.edges == 0
    assert stats.empty == "the graph has 0 links between its 1 pages: no walk can leave its start"
    assert read_table(cfg.run.out, "pages").column("title").to_pylist() == ["Alpha"]
    rej = read_table(cfg.run.out, "rejects").to_pylist()
    assert [r["reason"] for r in rej] == ["truncated_page"] and "'Beta'" in rej[0]["detail"]
    # Beta is in the title set (it is in the dump), but its page is lost: no edge, no crash.
    assert read_table(cfg.run.out, "links").num_rows == 0


def test_empty_line_counts_the_redirects_of_batches_parsed_by_an_earlier_run(tmp_path):
    """A dump of redirects only, cut mid-page: the first run parses its batch and fails; the
    --allow-truncated run skips that batch, and its "nothing to walk" line still counts its redirects."""
    doc = write_dump(tmp_path / "d.xml", page_xml(1, "Alpha", "#REDIRECT [[Beta]]", redirect="Beta")
                     + page_xml(2, "Gamma", "#REDIRECT [[Beta]]", redirect="Beta") + page_xml(3, "Beta", "b"))
    raw = doc.read_bytes()
    doc.write_bytes(raw[: raw.find(b"<text", raw.find(b"<title>Beta"))])
    with pytest.raises(DumpError, match="last complete page: 'Gamma'"):
        run_ingest(make_cfg(tmp_path / "out", doc, **{"graph.workers": 1}))
    stats = run_ingest(make_cfg(tmp_path / "out", doc, **{"graph.workers": 1, "graph.allow_truncated": True}))
    assert stats.batches_skipped == stats.batches == 1 and stats.nodes == 0
    assert stats.empty == "the dump yielded 0 article pages (2 redirects): nothing to walk"


def test_empty_dump_stops_with_one_dump_error(tmp_path):
    empty = tmp_path / "empty.xml.bz2"
    empty.write_bytes(b"")
    with pytest.raises(DumpError, match="empty.xml.bz2: empty file"):
        run_ingest(make_cfg(tmp_path / "out", empty))


def test_missing_dump_without_export_titles_is_a_dump_error(tmp_path):
    with pytest.raises(DumpError, match="dump not found"):
        run_ingest(make_cfg(tmp_path / "out", tmp_path / "nope.xml.bz2"))


# ----------------------------------------------------------------------------- resume


def _snapshot(out):
    return {t: query_arrow(out, f"SELECT * EXCLUDE (batch_id) FROM {t} ORDER BY ALL" if t.endswith("_raw")
                           else f"SELECT * FROM {t} ORDER BY ALL").to_pylist()
            for t in ("pages", "links_raw", "redirects_raw", "links", "redirects", "nodes", "rejects")}


def _markers(cfg):
    return len(list((resolve(cfg, "graph").dir / "done").glob("*.json")))


def _fresh_tiny70(tmp_path, **opts):
    cfg = make_cfg(tmp_path / "fresh", wiki_file("enwiki-tiny-70.xml.bz2"), **opts)
    run_ingest(cfg)
    return cfg


def test_resume_after_a_crash_inside_a_batch_redoes_only_that_batch(tmp_path, monkeypatch):
    """Killed inside the 4th batch, before its commit: nothing of it is visible, the re-run skips 3."""
    opts = {"graph.workers": 1, "graph.batch_pages": 10}
    fresh = _fresh_tiny70(tmp_path, **opts)
    cfg = make_cfg(tmp_path / "crashy", wiki_file("enwiki-tiny-70.xml.bz2"), **opts)
    real = ingest_mod.ingest_batch
    calls = 0

    def crash_in_fourth_batch(cfg, batch):
        nonlocal calls
        calls += 1
        if calls == 4:
            raise KeyboardInterrupt("simulated kill while batch 4 parses")
        return real(cfg, batch)

    monkeypatch.setattr("hopforge.graph.stage.ingest_batch", crash_in_fourth_batch)
    with pytest.raises(KeyboardInterrupt):
        run_ingest(cfg)
    assert read_table(cfg.run.out, "ingest_batches").column("index").to_pylist() == [0, 1, 2]
    assert _markers(cfg) == 3 and resolve(cfg, "graph").complete() is None
    monkeypatch.undo()

    stats = run_ingest(cfg)
    assert stats.batches == 7 and stats.batches_skipped == 3
    assert stats.empty == "the graph has 0 links between its 6 pages: no walk can leave its start"
    redone = query_arrow(fresh.run.out, "SELECT sum(pages) AS p, sum(redirects) AS r FROM ingest_batches "
                                        "WHERE index >= 3").to_pylist()[0]
    assert (stats.pages, stats.redirects) == (redone["p"], redone["r"])
    assert _snapshot(cfg.run.out) == _snapshot(fresh.run.out)
    assert sorted(read_table(cfg.run.out, "ingest_batches").column("index").to_pylist()) == list(range(7))
    assert _markers(cfg) == 7


def test_resume_after_a_crash_between_commit_and_marker_recognises_the_commit(tmp_path, monkeypatch):
    """Killed after the 4th batch's group commit, before its completion marker: the re-run finds
    the batch in the manifests, skips it (4 skipped) and writes no row twice."""
    opts = {"graph.workers": 1, "graph.batch_pages": 10}
    fresh = _fresh_tiny70(tmp_path, **opts)
    cfg = make_cfg(tmp_path / "crashy", wiki_file("enwiki-tiny-70.xml.bz2"), **opts)
    real = StageRun.mark_done
    calls = 0

    def crash_before_fourth_marker(self, batch, stats, infos=None):
        nonlocal calls
        calls += 1
        if calls == 4:
            raise KeyboardInterrupt("simulated kill between commit and marker")
        return real(self, batch, stats, infos)

    monkeypatch.setattr(StageRun, "mark_done", crash_before_fourth_marker)
    with pytest.raises(KeyboardInterrupt):
        run_ingest(cfg)
    assert read_table(cfg.run.out, "ingest_batches").column("index").to_pylist() == [0, 1, 2, 3]
    assert _markers(cfg) == 3
    monkeypatch.undo()

    stats = run_ingest(cfg)
    assert stats.batches == 7 and stats.batches_skipped == 4
    redone = query_arrow(fresh.run.out, "SELECT sum(pages) AS p FROM ingest_batches WHERE index >= 4").to_pylist()
    assert stats.pages == redone[0]["p"]
    assert _markers(cfg) == 7
    for table in BATCH_TABLES:
        assert read_table(cfg.run.out, table).num_rows == read_table(fresh.run.out, table).num_rows, table
    assert query_arrow(cfg.run.out, "SELECT title FROM redirects_raw GROUP BY 1 HAVING count(*) > 1").num_rows == 0
    assert _snapshot(cfg.run.out) == _snapshot(fresh.run.out)


def test_ingest_batch_returns_its_rows_and_writes_nothing(tmp_path):
    cfg = make_cfg(tmp_path, wiki_file("ltgwiki-tiny-8.xml.bz2"), **{"graph.workers": 1})
    batch = plan_ingest(cfg)[0]
    parsed, row = ingest_batch(cfg, batch)
    assert sorted(p["title"] for p in parsed.pages) == ["Hello", "Toronto"]
    assert [r["title"] for r in parsed.redirects] == ["Redirect page"]
    assert [r["reason"] for r in parsed.rejects] == ["duplicate_page_id"] * 5 and parsed.raw_pages == 8
    assert {k: v for k, v in row.items() if k != "seconds"} == {
        "batch_id": batch.batch_id, "source": "ltgwiki-tiny-8.xml.bz2", "index": 0, "pages": 2, "redirects": 1,
        "links": parsed.links.num_rows, "rejects": 5}
    assert parsed.links.num_rows > 0 and set(parsed.links.column("batch_id").to_pylist()) == {batch.batch_id}
    assert not any((tmp_path / t).exists() for t in BATCH_TABLES)  # the stage commits, not ingest_batch


def test_execute_batch_twice_skips_the_second_time(tmp_path):
    cfg = make_cfg(tmp_path, wiki_file("ltgwiki-tiny-8.xml.bz2"), **{"graph.workers": 1})
    stage, run = get_stage("graph"), resolve(cfg, "graph")
    batch = stage.plan(run)[0]
    first = execute_batch(stage, run, batch)
    counts = {t: read_table(cfg.run.out, t).num_rows for t in BATCH_TABLES}
    assert (first.batches, first.batches_skipped, first.pages, first.redirects) == (1, 0, 2, 1)
    assert first.rows == counts and counts["ingest_batches"] == 1
    again = execute_batch(stage, run, batch)
    assert (again.batches, again.batches_skipped, again.pages, again.rows) == (1, 1, 0, {})
    assert {t: read_table(cfg.run.out, t).num_rows for t in BATCH_TABLES} == counts


@pytest.mark.slow
def test_resume_after_sigkill_of_the_whole_process(tmp_path):
    """A real `kill -9` of an ingest process mid-run; the re-run completes with no duplicates."""
    import os
    import signal
    import subprocess
    import sys

    src = wiki_file("enwiki-tiny-70.xml.bz2")
    out = tmp_path / "killed"
    # Each page parse sleeps 0.2 s so the kill lands while batches are still in flight.
    code = (
        "import time; from hopforge.config import load_config; from hopforge.graph import run_ingest; "
        "from hopforge.graph import ingest as m; real = m.wikitext.extract\n"
        "def slow(*a):\n    time.sleep(0.2); return real(*a)\n"
        "m.wikitext.extract = slow\n"
        f"run_ingest(load_config(None, {{'run.out': {str(out)!r}, 'graph.dump': {str(src)!r}, "
        "'graph.workers': 1, 'graph.batch_pages': 5}))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    manifest = out / "ingest_batches" / "_manifest.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if manifest.exists() and len(manifest.read_bytes().splitlines()) >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    recover(out)  # settle a group commit the kill interrupted (the re-run would do the same first)
    killed_after = len(manifest.read_bytes().splitlines())
    assert 3 <= killed_after < 14, "killed part-way through the 14 batches"

    cfg = make_cfg(out, src, **{"graph.workers": 1, "graph.batch_pages": 5})
    stats = run_ingest(cfg)
    assert stats.batches == 14 and stats.batches_skipped == killed_after
    fresh = make_cfg(tmp_path / "fresh", src, **{"graph.workers": 1, "graph.batch_pages": 5})
    run_ingest(fresh)
    assert _snapshot(cfg.run.out) == _snapshot(fresh.run.out)


def test_rerun_after_tables_deleted_by_hand_rebuilds_them(tmp_path):
    """Completion markers under OUT/_stages must not make a re-run skip batches whose tables are gone."""
    import shutil

    cfg = make_cfg(tmp_path / "out", wiki_file("enwiki-tiny-70.xml.bz2"),
                   **{"graph.workers": 1, "graph.batch_pages": 10})
    run_ingest(cfg)
    before = _snapshot(cfg.run.out)
    for table in cfg.run.out.iterdir():
        if not table.name.startswith("_"):  # every table and the graph arrays; keep _work
            shutil.rmtree(table)
    assert (tmp_path / "out" / "_stages").is_dir() and _markers(cfg) == 7
    stats = run_ingest(cfg)  # OUT/_work (the plan) and OUT/_stages (markers, complete.json) are still there
    assert stats.batches == 7 and stats.batches_skipped == 0 and stats.pages == 6 and stats.nodes == 6
    assert _snapshot(cfg.run.out) == before
    again = run_ingest(cfg)
    assert again.batches_skipped == again.batches == 7 and again.pages == 0


# ----------------------------------------------------------------------------- page time limit off the main thread

# 10,000 unclosed template openings: mwparserfromhell's tokenizer backtracks over every one of them
# (quadratic and worse, earwig/mwparserfromhell#364). Measured on this project's 2-core machine:
# wikitext.extract takes ~16 s on 8,000 of them and 25-28 s on 10,000 with no time limit.
SLOW_WIKITEXT = "Slow links to [[Alpha]]. " + "{{x|" * 10_000


def _slow_dump(tmp_path):
    pages = (page_xml(1, "Alpha", "Alpha links to [[Beta]].") + page_xml(2, "Slow", SLOW_WIKITEXT)
             + page_xml(3, "Beta", "Beta links back to [[Alpha]]."))
    return write_dump(tmp_path / "slow.xml", pages)


def _assert_slow_page_rejected(out, stats):
    assert stats.rejects == {"parser_timeout": 1} and stats.pages == 2
    [rej] = read_table(out, "rejects").to_pylist()
    assert (rej["reason"], rej["row_id"], rej["stage"]) == ("parser_timeout", "2", "ingest")
    assert rej["detail"] == f"page 'Slow': wikitext parse exceeded 1s ({len(SLOW_WIKITEXT)} chars)"
    assert sorted(read_table(out, "pages").column("title").to_pylist()) == ["Alpha", "Beta"]


def test_page_time_limit_interrupts_the_tokenizer_on_the_main_thread(tmp_path):
    """The CLI's path: the SIGALRM lands while mwparserfromhell's C tokenizer runs, and stops it."""
    cfg = make_cfg(tmp_path / "out", _slow_dump(tmp_path), **{"graph.workers": 1, "graph.page_timeout_s": 1})
    t0 = time.monotonic()
    stats = run_ingest(cfg)
    assert time.monotonic() - t0 < 8, "the page time limit did not stop the parse"
    _assert_slow_page_rejected(cfg.run.out, stats)
    assert stats.edges == 2


def test_page_time_limit_holds_when_a_batch_runs_off_the_main_thread(tmp_path):
    """SIGALRM reaches only a main thread, so off it (Prefect's thread runner) ingest_batch parses in a
    spawned child process. A monkeypatch would not reach that child: the slow page is real wikitext."""
    import threading

    cfg = make_cfg(tmp_path / "out", _slow_dump(tmp_path), **{"graph.workers": 1, "graph.page_timeout_s": 1})
    stage, run = get_stage("graph"), resolve(cfg, "graph")
    [batch] = stage.plan(run)
    result: dict = {}

    def run_batch_in_thread():
        try:
            result["stats"] = execute_batch(stage, run, batch)
        except BaseException as e:  # noqa: BLE001 - re-raised on the test's thread below
            result["error"] = e

    worker = threading.Thread(target=run_batch_in_thread, name="task-runner-thread")
    t0 = time.monotonic()
    worker.start()
    worker.join(timeout=60)
    elapsed = time.monotonic() - t0
    assert not worker.is_alive(), "the batch never finished"
    if "error" in result:
        raise result["error"]
    # Unlimited, the parse alone takes ~25 s; the limit (1 s) plus starting the child costs a few.
    assert elapsed < 8, f"the batch took {elapsed:.1f}s: the page time limit did not fire off the main thread"
    _assert_slow_page_rejected(cfg.run.out, result["stats"])


def test_title_set_is_a_memory_mapped_hash_array_shared_by_workers(tmp_path):
    """Workers test link targets against the dump's titles through 8-byte hashes on disk, not a
    per-process set of strings, so a worker's memory does not grow with the dump's title count."""
    titles = tmp_path / "titles.txt"
    titles.write_text("Oslo\nNorway\nÉcole normale\nOslo\n", encoding="utf-8")
    path = ingest_mod.write_title_hashes(titles)
    ts = ingest_mod.TitleSet(str(titles))
    assert len(ts) == 3 and isinstance(np.load(path, mmap_mode="r"), np.memmap)
    assert ts.count_absent(["Oslo", "Norway", "École normale"]) == 0
    assert ts.count_absent(["Oslo", "Bergen", "oslo", ""]) == 3
    assert ts.count_absent([]) == 0
    empty = tmp_path / "none.txt"
    empty.write_text("", encoding="utf-8")
    assert ingest_mod.TitleSet(str(empty)).count_absent(["Oslo"]) == 1
