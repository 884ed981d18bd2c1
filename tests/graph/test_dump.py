"""Reading dumps: bz2 detection, page cutting, and every way a dump can be broken."""

import bz2

import pytest

from hopforge.errors import DumpError
from hopforge.graph.dump import DumpBreak, iter_pages, open_blocks, page_head
from hopforge.text.titles import SiteInfo

from .conftest import page_xml, wiki_file, write_dump


def _items(path):
    return list(iter_pages(open_blocks(path)))


def test_ltgwiki_siteinfo_has_latgalian_namespaces():
    items = _items(wiki_file("ltgwiki-tiny-8.xml.bz2"))
    site = items[0]
    assert isinstance(site, SiteInfo)
    assert site.namespaces[2] == "Lītuotuojs" and site.namespaces[1] == "Sprīža" and site.lang == "ltg"
    assert site.normalize("lītuotuojs:DJ_EV")[0] == "Lītuotuojs:DJ EV"
    assert [page_head(p).title for p in items[1:]][:3] == ["Hello", "Toronto", "Duplicate title"]


def test_empty_file_is_a_dump_error(tmp_path):
    empty = tmp_path / "empty.xml.bz2"
    empty.write_bytes(b"")
    with pytest.raises(DumpError, match=r"empty.xml.bz2: empty file \(byte offset 0\)"):
        open_blocks(empty)


def test_not_bz2_is_a_dump_error(tmp_path):
    bad = tmp_path / "bad.xml.bz2"
    bad.write_bytes(b"this is not bz2")
    with pytest.raises(DumpError, match="not bz2 data"):
        open_blocks(bad)


def test_not_xml_is_a_dump_error(tmp_path):
    bad = tmp_path / "notes.xml"
    bad.write_text("just some notes\n" * 10)
    with pytest.raises(DumpError, match="no <mediawiki> root element"):
        _items(bad)


def _small_blocks(path):
    """The dump recompressed with 100 kB bz2 blocks, so a cut leaves whole blocks before it."""
    return bz2.compress(bz2.decompress(path.read_bytes()), compresslevel=1)


def test_truncated_bz2_with_nothing_readable_is_a_dump_error(tmp_path):
    data = wiki_file("enwiki-tiny-70.xml.bz2").read_bytes()  # 900 kB blocks: the first block is incomplete
    cut = tmp_path / "cut.xml.bz2"
    cut.write_bytes(data[:5000])
    with pytest.raises(DumpError, match=r"cut.xml.bz2: bz2 stream ends early at compressed byte 5000"):
        _items(cut)


def test_truncated_bz2_keeps_pages_before_the_cut(tmp_path):
    data = _small_blocks(wiki_file("enwiki-tiny-70.xml.bz2"))
    cut = tmp_path / "cut.xml.bz2"
    cut.write_bytes(data[: len(data) // 2])
    items = _items(cut)
    pages = [i for i in items if isinstance(i, bytes)]
    brk = items[-1]
    assert isinstance(brk, DumpBreak) and brk.reason == "truncated_dump" and brk.compressed
    assert brk.offset == len(data) // 2
    assert page_head(pages[0]).title == "AccessibleComputing"
    assert 0 < len(pages) < 70


def test_corrupt_bz2_block_reports_compressed_offset(tmp_path):
    data = bytearray(_small_blocks(wiki_file("enwiki-tiny-70.xml.bz2")))
    for i in range(len(data) // 2, len(data) // 2 + 400):
        data[i] ^= 0x5A
    bad = tmp_path / "corrupt.xml.bz2"
    bad.write_bytes(bytes(data))
    items = _items(bad)
    brk = items[-1]
    assert isinstance(brk, DumpBreak) and brk.reason in ("corrupt_compressed_stream", "truncated_dump")
    assert "corrupt.xml.bz2" in brk.detail and "compressed byte" in brk.detail


def test_dump_cut_mid_page_yields_complete_pages_then_truncated_page(tmp_path):
    doc = write_dump(tmp_path / "d.xml", page_xml(1, "Alpha", "a") + page_xml(2, "Beta", "b"))
    raw = doc.read_bytes()
    doc.write_bytes(raw[: raw.find(b"<revision", raw.find(b"Beta"))])
    items = _items(doc)
    assert [page_head(i).title for i in items if isinstance(i, bytes)] == ["Alpha"]
    brk = items[-1]
    assert brk.reason == "truncated_page" and "page 2 'Beta' is cut off" in brk.detail


def test_concatenated_bz2_streams_are_read_through(tmp_path):
    doc = write_dump(tmp_path / "d.xml", page_xml(1, "Alpha", "a") + page_xml(2, "Beta", "b")).read_bytes()
    mid = doc.find(b"<page>", doc.find(b"Alpha"))
    multi = tmp_path / "multi.xml.bz2"
    multi.write_bytes(bz2.compress(doc[:mid]) + bz2.compress(doc[mid:]))
    titles = [page_head(i).title for i in _items(multi) if isinstance(i, bytes)]
    assert titles == ["Alpha", "Beta"]


def test_byte_range_the_file_ends_inside_is_truncated_even_at_a_stream_boundary(tmp_path):
    """A multistream batch reads [start, end) from the index; a file cut between two streams must
    not look like a range that ended cleanly. A range wholly past the end reports nothing (the range
    the file ends in does)."""
    streams = [bz2.compress(page_xml(i, f"P{i}", "x").encode()) for i in range(1, 4)]
    offsets = [0, len(streams[0]), len(streams[0]) + len(streams[1])]
    dump = tmp_path / "ms.xml.bz2"
    dump.write_bytes(b"".join(streams[:2]))  # the third stream is gone: cut exactly at offsets[2]
    end = offsets[2] + len(streams[2])

    blocks = open_blocks(dump, offsets[1], end)
    assert [page_head(i).title for i in iter_pages(blocks, want_header=False) if isinstance(i, bytes)] == ["P2"]
    assert blocks.error is not None and blocks.error.reason == "truncated_dump"
    assert blocks.error.offset == offsets[2] and f"compressed byte {offsets[2]}" in blocks.error.detail

    at_end = open_blocks(dump, offsets[2], end)  # starts exactly where the file ends
    assert list(iter_pages(at_end, want_header=False)) == [at_end.error] and at_end.error.offset == offsets[2]

    past = open_blocks(dump, end, end + 100)
    assert list(iter_pages(past, want_header=False)) == [] and past.error is None

    whole = open_blocks(dump, 0, offsets[2])  # a range that ends where the file does is intact
    assert len(list(iter_pages(whole, want_header=False))) == 2 and whole.error is None
