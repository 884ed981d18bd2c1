"""Ingest: dump -> pages, links_raw, redirects_raw, rejects (per batch), then build_graph.

Batching:
- multistream ``.xml.bz2`` with its ``-index.txt.bz2``: batches are runs of whole
  bz2 streams taken from the index; a worker seeks to its byte range and
  decompresses only that (no shared decompression at all).
- plain ``.xml`` / ``.xml.bz2``: one sequential pass (the bz2 format cannot be
  entered in the middle) cuts the dump into batches of ``batch_pages`` raw pages,
  spilled zstd-compressed under ``OUT/_work/ingest/<dump key>/``; workers parse
  the batches in parallel. Parsing wikitext costs far more than decompression,
  so the single sequential pass is not the bottleneck.

Batch ids are content hashes of (dump identity, batch_pages, index, first and
last page id), so a re-run plans the same batches. A batch's shards (pages,
links_raw, redirects_raw, rejects, ingest_batches) are committed as one group, so
a batch is either wholly written or not at all; the stage executor skips batches
already complete (``hopforge.stage``).

Page time limit: a page whose parse exceeds ``graph.page_timeout_s`` is rejected
(``parser_timeout``). The limit is a SIGALRM, which only the main thread of a
process can receive, so a batch run off the main thread (Prefect's thread runner,
a Dask worker thread) is parsed in a child process whose main thread it is.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
import signal
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from hopforge.config import Config
from hopforge.errors import DumpError
from hopforge.graph import wikitext
from hopforge.graph.dump import (
    DumpBreak,
    index_path_for,
    is_bz2,
    iter_multistream_index,
    iter_pages,
    open_blocks,
    page_head,
)
from hopforge.graph.fetch import resolve_dump
from hopforge.storage import content_id, schema_for
from hopforge.text.titles import SiteInfo

log = logging.getLogger(__name__)

STAGE = "ingest"
# A batch also closes at this much raw page XML, so a run of huge articles cannot blow up a
# worker's memory (rows of one batch are held until its shards are written).
BATCH_MAX_BYTES = 24 << 20
_REDIRECT_FRAGMENT = re.compile(r"\[\[[^\]|#]*#([^\]|]*)")
_REDIRECT_TEXT = re.compile(r"\s*#REDIRECT\s*:?\s*\[\[([^\]|]+)", re.I)


@dataclass(frozen=True)
class IngestBatch:
    """A picklable description of one unit of ingest work."""

    batch_id: str
    index: int
    source: str  # dump file name, recorded in pages.source
    kind: str  # "chunk" (spilled zstd raw pages) | "multistream" (byte range of the dump)
    path: str
    start: int = 0
    end: int = 0
    pages: int = 0  # pages in the batch (as planned; multistream: from the index)
    site: dict = field(default_factory=dict, hash=False, compare=False)
    titles_path: str = ""
    breaks: tuple = ()  # DumpBreak dicts found while planning, written as rejects by this batch
    prev_title: str = ""  # multistream: the dump's page before this batch (a break's "last complete page")


# ----------------------------------------------------------------------------- planning


def _dump_key(dump: Path, cfg: Config) -> str:
    ident = dump_identity(dump)
    return content_id(ident["name"], ident["size"], ident["digest"], cfg.graph.batch_pages, BATCH_MAX_BYTES,
                      sorted(cfg.graph.namespaces))


def plan_ingest(cfg: Config) -> list[IngestBatch]:
    """Resolve the dump (download / Special:Export if configured) and cut it into batches.

    The plan is cached in ``OUT/_work/ingest/<key>/plan.json`` once complete, so
    re-planning a resumed run is free and yields identical batch ids.
    """
    dump = resolve_dump(cfg)
    key = _dump_key(dump, cfg)
    work = Path(cfg.run.out) / "_work" / "ingest" / key
    plan_file = work / "plan.json"
    if plan_file.exists():
        return [IngestBatch(**{**d, "breaks": tuple(d["breaks"])}) for d in orjson.loads(plan_file.read_bytes())]
    work.mkdir(parents=True, exist_ok=True)
    index = index_path_for(dump) if is_bz2(dump) else None
    if index is not None:
        batches = _plan_multistream(cfg, dump, index, key, work)
    else:
        batches = _plan_sequential(cfg, dump, key, work)
    tmp = work / ".plan.json.tmp"
    tmp.write_bytes(orjson.dumps([asdict(b) for b in batches]))
    os.replace(tmp, plan_file)
    return batches


def _plan_sequential(cfg: Config, dump: Path, key: str, work: Path) -> list[IngestBatch]:
    namespaces = set(cfg.graph.namespaces)
    blocks = open_blocks(dump)
    batches: list[IngestBatch] = []
    site: SiteInfo | None = None
    titles_path = work / "titles.txt"
    titles_out = open(titles_path.with_suffix(".tmp"), "w", encoding="utf-8")
    sink = None
    n = 0
    first_id = last_id = None
    breaks: list[dict] = []

    nbytes = 0
    last_title: str | None = None

    def close_batch() -> None:
        nonlocal sink, n, first_id, last_id, nbytes
        if sink is None:
            return
        sink.close()
        i = len(batches)
        bid = content_id(key, i, first_id, last_id, n, prefix="b")
        batches.append(IngestBatch(bid, i, dump.name, "chunk", str(work / f"batch-{i:06d}.xml.zst"), pages=n,
                                   site=site.to_dict(), titles_path=str(titles_path)))
        sink, n, first_id, last_id, nbytes = None, 0, None, None, 0

    try:
        for item in iter_pages(blocks):
            if isinstance(item, SiteInfo):
                site = item
                continue
            if isinstance(item, DumpBreak):
                where = f"; last complete page: {last_title!r}" if last_title else "; no complete page before it"
                breaks.append({**asdict(item), "detail": item.detail + where})
                continue
            head = page_head(item)
            last_title = head.title
            if head.ns not in namespaces:
                continue
            titles_out.write(SiteInfo.normalize(site, head.title)[0] + "\n")
            if sink is None:
                sink = pa.CompressedOutputStream(str(work / f"batch-{len(batches):06d}.xml.zst"), "zstd")
            sink.write(item)
            sink.write(b"\n")
            n += 1
            nbytes += len(item)
            first_id = head.page_id if first_id is None else first_id
            last_id = head.page_id
            if n >= cfg.graph.batch_pages or nbytes >= BATCH_MAX_BYTES:
                close_batch()
        close_batch()
    finally:
        titles_out.close()
        if sink is not None:
            sink.close()
    os.replace(titles_path.with_suffix(".tmp"), titles_path)
    write_title_hashes(titles_path)
    if site is None:
        raise DumpError(f"{dump}: no <siteinfo> found")
    if breaks:
        if not batches:
            bid = content_id(key, 0, "empty", prefix="b")
            batches.append(IngestBatch(bid, 0, dump.name, "chunk", "", site=site.to_dict(),
                                       titles_path=str(titles_path)))
        last = batches[-1]
        batches[-1] = IngestBatch(**{**asdict(last), "breaks": tuple(breaks)})
    return batches


def _plan_multistream(cfg: Config, dump: Path, index: Path, key: str, work: Path) -> list[IngestBatch]:
    rows = iter_multistream_index(index)
    first = next(rows, None)
    if first is None:
        raise DumpError(f"{index}: empty multistream index")
    first_offset = first[0]
    site = None
    for item in iter_pages(open_blocks(dump, 0, first_offset)):
        if isinstance(item, SiteInfo):
            site = item
            break
    if site is None:
        raise DumpError(f"{dump}: no <siteinfo> in the first bz2 stream (compressed bytes 0..{first_offset})")
    namespaces = set(cfg.graph.namespaces)
    titles_path = work / "titles.txt"
    # One pass over the index (streamed: never a list of its lines): titles to titles.txt, streams summed.
    streams: list[tuple[int, int, int, int, str]] = []  # offset, pages, first id, last id, last title
    with open(titles_path.with_suffix(".tmp"), "w", encoding="utf-8") as f:
        for off, pid, title in itertools.chain([first], rows):
            t, _frag, ns = site.normalize(title)
            if ns in namespaces:
                f.write(t + "\n")
            if streams and streams[-1][0] == off:
                o, c, a, _b, _t = streams[-1]
                streams[-1] = (o, c + 1, a, pid, title)
            else:
                streams.append((off, 1, pid, pid, title))
    os.replace(titles_path.with_suffix(".tmp"), titles_path)
    write_title_hashes(titles_path)

    size = dump.stat().st_size
    batches: list[IngestBatch] = []
    group: list[tuple[int, int, int, int, str]] = []
    prev_title = ""

    def close(end: int) -> None:
        nonlocal prev_title
        if not group:
            return
        i = len(batches)
        n = sum(s[1] for s in group)
        bid = content_id(key, i, group[0][2], group[-1][3], n, prefix="b")
        batches.append(IngestBatch(bid, i, dump.name, "multistream", str(dump), group[0][0], end, n,
                                   site.to_dict(), str(titles_path), prev_title=prev_title))
        prev_title = group[-1][4]
        group.clear()

    for j, s in enumerate(streams):
        group.append(s)
        if sum(g[1] for g in group) >= cfg.graph.batch_pages:
            close(streams[j + 1][0] if j + 1 < len(streams) else size)
    close(size)
    return batches


# ----------------------------------------------------------------------------- one batch

_TITLES: dict[str, TitleSet] = {}


def _title_hash(title: str) -> int:
    return int.from_bytes(hashlib.blake2b(title.encode("utf-8"), digest_size=8).digest(), "little")


class TitleSet:
    """The dump's title set as sorted 64-bit hashes in a memory-mapped ``.npy`` beside ``titles.txt``.

    8 bytes per title, shared by every worker through the page cache (a Python frozenset of 17M
    titles costs each worker ~1.5 GB); a false "in the dump" needs a 64-bit collision."""

    def __init__(self, titles_path: str) -> None:
        path = Path(titles_path).with_suffix(".u64.npy")
        if not path.exists():
            write_title_hashes(Path(titles_path))
        self._hashes = np.load(path, mmap_mode="r")

    def __len__(self) -> int:
        return len(self._hashes)

    def count_absent(self, titles: Sequence[str]) -> int:
        if not titles or not len(self._hashes):
            return len(titles)
        h = np.fromiter((_title_hash(t) for t in titles), np.uint64, len(titles))
        pos = np.minimum(np.searchsorted(self._hashes, h), len(self._hashes) - 1)
        return int(np.count_nonzero(self._hashes[pos] != h))


def write_title_hashes(titles_path: Path) -> Path:
    """Sort and save the hashes of ``titles.txt``'s lines (atomic: concurrent writers agree)."""
    out = titles_path.with_suffix(".u64.npy")
    with open(titles_path, encoding="utf-8") as f:
        hashes = np.unique(np.fromiter((_title_hash(line.rstrip("\n")) for line in f), np.uint64))
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, hashes)
    os.replace(tmp, out)
    return out


def _titles(path: str) -> TitleSet:
    """The dump's title set (cached per process: every batch of a run shares it)."""
    if path not in _TITLES:
        _TITLES.clear()
        _TITLES[path] = TitleSet(path)
    return _TITLES[path]


class PageTimeout(Exception):
    pass


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (SIGALRM; main thread only).

    :func:`ingest_batch` runs every parse on a main thread (in a child process when
    called from another thread); the caller also checks the elapsed time afterwards.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(_sig, _frame):
        raise PageTimeout()

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _child_text(el: ET.Element | None, tag: str) -> str | None:
    if el is None:
        return None
    c = el.find(tag)
    return c.text if c is not None else None


class _ZstdBlocks:
    def __init__(self, path: str) -> None:
        self.path = path
        self.error = None

    def __iter__(self) -> Iterator[bytes]:
        if not self.path:
            return
        with pa.input_stream(self.path, compression="zstd") as f:
            while block := f.read(1 << 20):
                yield block


def _reject(reason: str, row_id: Any, detail: str, step: str = "parse_page", table: str = "pages") -> dict:
    return {"stage": STAGE, "step": step, "reason": reason, "row_table": table, "row_id": str(row_id),
            "detail": detail}


def _parse_ts(s: str | None) -> datetime | None:
    if not s:
        return None
    try:
        return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def dump_identity(path: Path) -> dict[str, Any]:
    """What identifies a dump's content cheaply: name, size and a hash of its first and last 64 KiB
    (hashing a multi-GB dump on every run would cost minutes; a copy elsewhere has the same identity)."""
    st = path.stat()
    h = hashlib.blake2b(digest_size=10)
    with open(path, "rb") as f:
        h.update(f.read(1 << 16))
        f.seek(max(0, st.st_size - (1 << 16)))
        h.update(f.read())
    return {"name": path.name, "size": st.st_size, "digest": h.hexdigest()}


@dataclass
class ParsedBatch:
    """What one batch's parse produced (rows for the tables, rejects), before it is committed."""

    pages: list[dict]
    links: pa.Table
    redirects: list[dict]
    rejects: list[dict]
    raw_pages: int


def ingest_batch(cfg: Config, batch: IngestBatch) -> tuple[ParsedBatch, dict]:
    """Parse one batch; returns its rows and its ``ingest_batches`` stats row (not yet committed).

    Off the main thread the parse runs in a child process, so the page time limit holds; a daemonic
    process (a Dask worker) may not have children, so there it parses in this thread and a slow page
    is rejected once it returns (the limit cannot interrupt it)."""
    import multiprocessing as mp

    t0 = time.monotonic()
    if threading.current_thread() is threading.main_thread() or mp.current_process().daemon:
        parsed = parse_batch(cfg.graph.model_dump(mode="json"), batch)
    else:
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: forking a process whose other threads hold locks can deadlock the child.
        with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
            parsed = pool.submit(parse_batch, cfg.graph.model_dump(mode="json"), batch).result()
    stats = {"batch_id": batch.batch_id, "source": batch.source, "index": batch.index, "pages": len(parsed.pages),
             "redirects": len(parsed.redirects), "links": parsed.links.num_rows, "rejects": len(parsed.rejects),
             "seconds": time.monotonic() - t0}
    return parsed, stats


def parse_batch(graph: dict[str, Any], batch: IngestBatch) -> ParsedBatch:
    """Parse the pages of one batch (``graph`` is the ``[graph]`` config section as a dict).

    Must run on a main thread: the page time limit is a SIGALRM."""
    site = SiteInfo.from_dict(batch.site)
    titles = _titles(batch.titles_path)
    namespaces = set(graph["namespaces"])
    limit = graph["page_timeout_s"]
    pages: dict[int, dict] = {}
    links: dict[int, tuple[str, list[wikitext.LinkRow]]] = {}
    redirects: dict[str, dict] = {}
    rejects: list[dict] = [_reject(b["reason"], "", b["detail"], step="read_dump", table="pages")
                           for b in batch.breaks]
    blocks = open_blocks(Path(batch.path), batch.start, batch.end) if batch.kind == "multistream" \
        else _ZstdBlocks(batch.path)
    seen = 0
    last_title: str | None = batch.prev_title or None
    for item in iter_pages(blocks, want_header=False):
        if isinstance(item, DumpBreak):
            where = f"; last complete page: {last_title!r}" if last_title else "; no complete page before it"
            rejects.append(_reject(item.reason, "", item.detail + where, step="read_dump"))
            continue
        seen += 1
        # Every page read whole counts for "last complete page", whatever becomes of it (redirect,
        # other namespace, reject), as in the sequential planner.
        last_title = page_head(item).title or last_title
        try:
            el = ET.fromstring(item)
        except ET.ParseError as e:
            head = page_head(item)
            rejects.append(_reject("malformed_xml", head.page_id or "",
                                   f"page {head.title!r} in {batch.source}: {e}"))
            continue
        try:
            ns = int(_child_text(el, "ns") or 0)
            page_id = int(_child_text(el, "id") or "")
        except ValueError:
            rejects.append(_reject("malformed_xml", "", f"page {_child_text(el, 'title')!r} in {batch.source}: "
                                                         f"missing or non-numeric <ns>/<id>"))
            continue
        if ns not in namespaces:
            continue
        raw_title = _child_text(el, "title") or ""
        title = site.normalize(raw_title)[0]
        rev = el.find("revision")
        text = _child_text(rev, "text") or ""
        red = el.find("redirect")
        red_target = red.get("title", "") if red is not None else None
        if red_target is None and (m := _REDIRECT_TEXT.match(text)):
            red_target = m.group(1)  # old or hand-made dumps without a <redirect/> element
        if red_target:
            target, fragment, _ns = site.normalize(red_target)
            m = _REDIRECT_FRAGMENT.search(text)
            redirects[title] = {"batch_id": batch.batch_id, "title": title, "page_id": page_id, "target": target,
                                "fragment": (m.group(1).strip() if m else fragment) or None}
            continue
        prev = pages.get(page_id)
        if prev is not None and prev["title"] != title:
            # Page ids are the join key of links and the CSR graph: a second title under the same id
            # would silently merge two pages. Real dumps never do this; hand-made test dumps do.
            rejects.append(_reject("duplicate_page_id", page_id, f"page {title!r} reuses the id of "
                                                                 f"{prev['title']!r} in {batch.source}"))
            continue
        started = time.monotonic()
        try:
            with _time_limit(limit):
                parsed = wikitext.extract(title, text, site, namespaces)
            if time.monotonic() - started > limit:
                raise PageTimeout()
        except PageTimeout:
            rejects.append(_reject("parser_timeout", page_id, f"page {title!r}: wikitext parse exceeded "
                                                              f"{limit:g}s ({len(text)} chars)"))
            continue
        except RecursionError:
            rejects.append(_reject("parser_error", page_id, f"page {title!r}: nesting too deep for the parser"))
            continue
        except Exception as e:  # mwparserfromhell raises assorted errors on pathological markup
            rejects.append(_reject("parser_error", page_id, f"page {title!r}: {type(e).__name__}: {e}"))
            continue
        rev_id = _child_text(rev, "id")
        red_links = titles.count_absent([lk.target for lk in parsed.links])
        # The same page listed again later in the dump replaces the earlier copy (newer revision).
        pages[page_id] = {
            "page_id": page_id, "title": title, "ns": ns,
            "revision_id": int(rev_id) if rev_id and rev_id.isdigit() else None,
            "revision_timestamp": _parse_ts(_child_text(rev, "timestamp")),
            "text": parsed.text, "lead": parsed.lead, "short_description": parsed.short_description,
            "infobox_type": parsed.infobox_type, "infobox": parsed.infobox, "categories": parsed.categories,
            "is_disambiguation": parsed.is_disambiguation, "is_list": parsed.is_list, "is_date": parsed.is_date,
            "wikitext_bytes": len(text.encode("utf-8")), "red_links": red_links, "source": batch.source,
        }
        links[page_id] = (title, parsed.links)
    # (A byte range that does not decompress ends iter_pages with its DumpBreak: recorded above, once.)

    return ParsedBatch(list(pages.values()), _link_table(batch.batch_id, links), list(redirects.values()), rejects,
                       seen)


def _link_table(batch_id: str, links: dict[int, tuple[str, list[wikitext.LinkRow]]]) -> pa.Table:
    """The batch's ``links_raw`` rows, built column by column (no per-link dict)."""
    src_id: list[int] = []
    src_title: list[str] = []
    for page_id, (title, rows) in links.items():
        src_id.extend([page_id] * len(rows))
        src_title.extend([title] * len(rows))
    every = [lk for _title, rows in links.values() for lk in rows]
    return pa.table({
        "batch_id": [batch_id] * len(every), "src_id": src_id, "src_title": src_title,
        "target": [lk.target for lk in every], "raw_target": [lk.raw_target for lk in every],
        "anchor": [lk.anchor for lk in every], "sentence": [lk.sentence for lk in every],
        "position": [lk.position for lk in every], "in_lead": [lk.in_lead for lk in every],
    }, schema=schema_for("links_raw"))
