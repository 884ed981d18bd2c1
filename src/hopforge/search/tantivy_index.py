"""BM25 on disk with tantivy: the search backend for dumps too big to hold in RAM (full Wikipedia).

Everything lives in one cache directory (``OUT/_cache/tantivy-<key>/``) and is memory-mapped, so
opening takes milliseconds to seconds and the resident set grows only with what queries touch:

``shard-NNN/``        tantivy indexes of passages (one document per passage, field ``body`` holding
                      the passage's terms, fast field ``pid`` its passage number);
``wpages-NNN/``       the page-level index (one document per page: title + text), built on the first
                      ``ranks(..., whole_pages=True)`` (only the question stage asks);
``pages.arrow``       page title + text in page order, Arrow IPC in fixed-size record batches
                      (random access by page index without reading the file);
``*.npy``             page ids, passage -> (page, paragraph), titles sorted (exact and lowercased)
                      for ``index_of`` by binary search, memory-mapped;
``redirects.arrow``   redirects sorted by title, for ``visit``;
``meta.json``         counts, shards and the build settings, checked on every open.

**Same terms as bm25s.** Passages and queries are tokenized in Python by
:func:`hopforge.search.base.tokens` (bm25s' regex, lowercase, bm25s' English stop words, no
stemming) and tantivy indexes the space-joined terms with a whitespace tokenizer; a query is a
boolean SHOULD of term queries. Scores still differ a little from bm25s: tantivy's BM25 has
k1 = 1.2 (bm25s 1.5) and quantises document lengths to 256 buckets; the ranking agreement over
enwiki-233 is measured in ``tests/search/test_tantivy.py::test_tantivy_ranks_enwiki233_like_bm25s``.

**Shards.** Pages are cut into contiguous page ranges of at most ``shard_passages`` passages
(a page is never split, so one-hit-per-page holds per shard). A query runs on every shard and the
hits are merged by score. Each shard has its own BM25 statistics (document count, document
frequencies, average length): a term's IDF is computed within its shard, so a term concentrated
in one shard scores a little lower there than a single index would score it, and scores across
shards are comparable only up to that difference. Over millions of passages per shard the
statistics of all but the rarest terms agree closely; ``tests/search`` checks that a sharded
index ranks like the single one.

**Ranks** are computed to ``rank_depth`` pages: the top passages are fetched in growing batches
until the requested pages or ``rank_depth`` distinct pages are listed; a page below that is None
(see :mod:`hopforge.search.base`).

**Integrity.** :func:`open_or_build` checks ``meta.json``, every shard's document count, the page
count against the graph's pages and every file's presence; a cache that fails any check is named
in an error log with what is wrong and rebuilt, never served as an empty search.
"""

from __future__ import annotations

import bisect
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import tantivy

from hopforge.errors import StorageError
from hopforge.search.base import (
    SNIPPET_CHARS,
    SearchBackend,
    SearchHit,
    cut_snippet,
    passages_of,
    tokens,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
BATCH_ROWS = 1024  # rows per Arrow record batch: page index -> (batch, row) without an offsets table
ANALYZER = "hf_terms"
WRITER_HEAP = 256 * 2**20
_PAGES_SCHEMA = pa.schema([("title", pa.string()), ("text", pa.large_string())])
_REDIRECT_SCHEMA = pa.schema([("title", pa.string()), ("target", pa.string())])


_SNIPPET_BYTES = 4 * SNIPPET_CHARS + 64  # enough UTF-8 for SNIPPET_CHARS after a little leading space


def _para_offsets(text: str, paras: list[int]) -> np.ndarray:
    """Byte offsets in UTF-8 ``text`` of its ``\\n\\n``-separated paragraphs number ``paras``."""
    out = np.zeros(len(paras), np.int64)
    want = {j: k for k, j in enumerate(paras)}
    at = 0
    for j, para in enumerate(text.split("\n\n")):
        if j in want:
            out[want[j]] = at
        at += len(para.encode()) + 2
    return out


class CorruptIndexError(StorageError):
    """A tantivy index cache that is missing a piece or disagrees with its pages."""


def _analyzer() -> tantivy.TextAnalyzer:
    return tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.whitespace()).build()


def _schema(key: str) -> tantivy.Schema:
    return (tantivy.SchemaBuilder()
            .add_text_field("body", stored=False, tokenizer_name=ANALYZER, index_option="freq")
            .add_unsigned_field(key, stored=False, indexed=False, fast=True)
            .build())


def _open_index(path: Path) -> tantivy.Index:
    index = tantivy.Index.open(str(path))
    index.register_tokenizer(ANALYZER, _analyzer())
    return index


class _Column(Sequence[str]):
    """One string column of an Arrow IPC file of ``BATCH_ROWS``-row batches, memory-mapped (reading
    the file's batches maps them; no string is copied until asked for)."""

    def __init__(self, path: Path, column: str, rows: int) -> None:
        reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
        if reader.num_record_batches != -(-rows // BATCH_ROWS):
            raise CorruptIndexError(f"{path}: {reader.num_record_batches} record batches for {rows} rows")
        self._chunks = reader.read_all().column(column).chunks
        if sum(len(c) for c in self._chunks) != rows:
            raise CorruptIndexError(f"{path}: {sum(len(c) for c in self._chunks)} rows, expected {rows}")
        self._rows = rows

    def __len__(self) -> int:
        return self._rows

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        if not 0 <= i < self._rows:
            raise IndexError(i)
        return self._chunks[i // BATCH_ROWS][i % BATCH_ROWS].as_py()

    def utf8_slice(self, i: int, start: int, length: int) -> str:
        """Bytes ``start:start + length`` of string ``i``, decoded (a cut multi-byte character dropped),
        without materialising the whole string."""
        arr = self._chunks[i // BATCH_ROWS]
        row = arr.offset + i % BATCH_ROWS
        _, offsets, data = arr.buffers()
        width = 8 if pa.types.is_large_string(arr.type) else 4
        lo, hi = np.frombuffer(offsets, np.int64 if width == 8 else np.int32, 2, row * width)
        a = int(lo) + start
        return data[a:min(a + length, int(hi))].to_pybytes().decode("utf-8", "ignore")


class _BatchWriter:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._w = pa.ipc.new_file(str(path), schema)
        self._schema = schema
        self._rows: list[list[str]] = [[] for _ in schema.names]
        self.count = 0

    def add(self, *values: str) -> None:
        for col, v in zip(self._rows, values, strict=True):
            col.append(v)
        self.count += 1
        if len(self._rows[0]) == BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._rows[0]:
            self._w.write_batch(pa.record_batch(self._rows, schema=self._schema))
            self._rows = [[] for _ in self._schema.names]

    def close(self) -> None:
        self._flush()
        self._w.close()


def _sorted_order(keys: pa.Array) -> np.ndarray:
    return pc.sort_indices(keys).to_numpy().astype(np.int32)  # stable, UTF-8 byte = code point order


class _Shard:
    def __init__(self, path: Path, key: str, expect_docs: int) -> None:
        if not path.is_dir():
            raise CorruptIndexError(f"shard {path} is missing")
        try:
            self.index = _open_index(path)
            self.searcher = self.index.searcher()
        except (ValueError, OSError) as e:
            raise CorruptIndexError(f"shard {path} cannot be opened: {e}") from None
        self.schema = self.index.schema
        self.key = key
        if self.searcher.num_docs != expect_docs:
            raise CorruptIndexError(f"shard {path} holds {self.searcher.num_docs} documents, its meta says "
                                    f"{expect_docs}")

    def top(self, terms: Sequence[str], limit: int) -> tuple[list[float], list[int], bool]:
        """(scores, keys, maybe more) of the top ``limit`` documents for ``terms``."""
        q = tantivy.Query.boolean_query([(tantivy.Occur.Should, tantivy.Query.term_query(self.schema, "body", t))
                                         for t in terms])
        hits = self.searcher.search(q, limit, count=False).hits
        if not hits:
            return [], [], False
        keys = self.searcher.fast_field_values(self.key, [a for _, a in hits])
        return [s for s, _ in hits], keys, len(hits) == limit


class TantivyIndex(SearchBackend):
    """A built tantivy index cache opened read-only (see the module docstring)."""

    backend = "tantivy"

    def __init__(self, path: str | Path, *, rank_depth: int | None = 1000, expect_pages: int | None = None) -> None:
        self.path = Path(path)
        self.rank_depth = rank_depth
        meta_path = self.path / "meta.json"
        try:
            meta = orjson.loads(meta_path.read_bytes())
            if meta.get("format") != FORMAT_VERSION:
                raise CorruptIndexError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT_VERSION}")
            self.meta: dict[str, Any] = meta
            n_pages, n_passages = int(meta["pages"]), int(meta["passages"])
            shards = meta["shards"]
        except FileNotFoundError:
            raise CorruptIndexError(f"{meta_path} is missing") from None
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise CorruptIndexError(f"{meta_path} is unreadable: {e}") from None
        if expect_pages is not None and n_pages != expect_pages:
            raise CorruptIndexError(f"{self.path} indexes {n_pages} pages, the graph has {expect_pages}")
        if n_pages and not n_passages:
            raise CorruptIndexError(f"{self.path} has {n_pages} pages but no passage")
        if sum(int(s["passages"]) for s in shards) != n_passages:
            raise CorruptIndexError(f"{meta_path}: the shards' passages do not add up to {n_passages}")
        try:
            self.titles = _Column(self.path / "pages.arrow", "title", n_pages)
            self._texts = _Column(self.path / "pages.arrow", "text", n_pages)
            self.page_ids = self._npy("page_ids.npy", n_pages)
            self._passage_page = self._npy("passage_page.npy", n_passages)
            self._passage_para = self._npy("passage_para.npy", n_passages)
            self._passage_at = self._npy("passage_at.npy", n_passages)
            self._by_title = self._npy("title_order.npy", n_pages)
            self._by_lower = self._npy("lower_order.npy", n_pages)
            n_red = int(meta.get("redirects", 0))
            self._red_title = _Column(self.path / "redirects.arrow", "title", n_red)
            self._red_target = _Column(self.path / "redirects.arrow", "target", n_red)
        except (FileNotFoundError, pa.ArrowInvalid, OSError) as e:
            raise CorruptIndexError(f"{self.path}: {e}") from None
        self._shards = [_Shard(self.path / s["dir"], "pid", int(s["passages"])) for s in shards]
        self._page_shards: list[_Shard] | None = None
        self._shard_pages = [(int(s["first_page"]), int(s["end_page"])) for s in shards]

    def _npy(self, name: str, rows: int) -> np.ndarray:
        p = self.path / name
        try:
            a = np.load(p, mmap_mode="r")
        except (ValueError, OSError, EOFError) as e:
            raise CorruptIndexError(f"{p} is unreadable: {e}") from None
        if len(a) != rows:
            raise CorruptIndexError(f"{p} has {len(a)} rows, expected {rows}")
        return a

    # ------------------------------------------------------------------ build

    @classmethod
    def build(cls, path: str | Path, pages: Iterable[tuple[int, str, str]],
              redirects: Iterable[tuple[str, str]] = (), *, shard_passages: int = 20_000_000,
              threads: int = 1, heap: int = WRITER_HEAP, settings: dict[str, Any] | None = None) -> Path:
        """Write an index of ``pages`` ((page_id, title, text) in page order) to ``path`` (atomically: a
        temporary sibling renamed into place; an existing directory is replaced)."""
        path = Path(path)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}-{time.monotonic_ns()}")
        tmp.mkdir(parents=True)
        try:
            cls._write(tmp, pages, redirects, shard_passages, threads, heap, settings or {})
            _discard(path)
            tmp.rename(path)  # atomic; fails if a concurrent builder put its copy first (then that one stays)
        except OSError:
            if not path.exists():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    @staticmethod
    def _write(tmp: Path, pages: Iterable[tuple[int, str, str]], redirects: Iterable[tuple[str, str]],
               shard_passages: int, threads: int, heap: int, settings: dict[str, Any]) -> None:
        schema = _schema("pid")
        page_ids: list[int] = []
        titles: list[str] = []
        passage_page: list[np.ndarray] = []
        passage_para: list[np.ndarray] = []
        passage_at: list[np.ndarray] = []  # byte offset of each passage's paragraph in its page's text
        shards: list[dict[str, Any]] = []
        store = _BatchWriter(tmp / "pages.arrow", _PAGES_SCHEMA)
        writer: Any = None
        n_passages = 0

        def close_shard() -> None:
            writer.commit()
            writer.wait_merging_threads()
            shards[-1]["end_page"] = len(page_ids)

        for page_id, title, text in pages:
            i = len(page_ids)
            text = text or ""
            paras = passages_of(title, text)
            if writer is None or (shards[-1]["passages"] and shards[-1]["passages"] + len(paras) > shard_passages):
                if writer is not None:
                    close_shard()
                d = f"shard-{len(shards):03d}"
                (tmp / d).mkdir()
                index = tantivy.Index(schema, path=str(tmp / d))
                index.register_tokenizer(ANALYZER, _analyzer())
                writer = index.writer(heap * threads, threads)
                shards.append({"dir": d, "passages": 0, "first_page": i, "first_passage": n_passages})
            for _, passage in paras:
                doc = tantivy.Document()
                doc.add_text("body", " ".join(tokens(passage)))
                doc.add_unsigned("pid", n_passages)
                writer.add_document(doc)
                n_passages += 1
            shards[-1]["passages"] += len(paras)
            passage_page.append(np.full(len(paras), i, np.int32))
            passage_para.append(np.fromiter((j for j, _ in paras), np.int32, len(paras)))
            passage_at.append(_para_offsets(text, [j for j, _ in paras]))
            page_ids.append(int(page_id))
            titles.append(title)
            store.add(title, text)
        store.close()
        if writer is not None:
            close_shard()
        if page_ids and not n_passages:
            raise StorageError("cannot build the search index: no page has a paragraph of text")
        np.save(tmp / "page_ids.npy", np.asarray(page_ids, np.int64))
        np.save(tmp / "passage_page.npy", np.concatenate(passage_page) if passage_page else np.zeros(0, np.int32))
        np.save(tmp / "passage_para.npy", np.concatenate(passage_para) if passage_para else np.zeros(0, np.int32))
        np.save(tmp / "passage_at.npy", np.concatenate(passage_at) if passage_at else np.zeros(0, np.int64))
        np.save(tmp / "title_order.npy", _sorted_order(pa.array(titles, pa.string())))
        np.save(tmp / "lower_order.npy", _sorted_order(pa.array([t.lower() for t in titles], pa.string())))
        del titles
        red = sorted(redirects)
        rw = _BatchWriter(tmp / "redirects.arrow", _REDIRECT_SCHEMA)
        for src, target in red:
            rw.add(src, target)
        rw.close()
        meta = {"format": FORMAT_VERSION, "pages": len(page_ids), "passages": n_passages, "redirects": len(red),
                "shards": shards, "shard_passages": shard_passages, "tantivy": tantivy.__version__,
                "settings": settings, "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (tmp / "meta.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))

    def _page_index(self) -> list[_Shard]:
        """The whole-page shards (same page ranges as the passage shards), built on first use."""
        if self._page_shards is not None:
            return self._page_shards
        shards: list[_Shard] = []
        for n, (lo, hi) in enumerate(self._shard_pages):
            d = self.path / f"wpages-{n:03d}"
            if (d / "done").exists():
                try:
                    shards.append(_Shard(d, "page", hi - lo))
                    continue
                except CorruptIndexError as e:
                    log.error("whole-page index %s is corrupt (%s): rebuilding it", d, e)
            shutil.rmtree(d, ignore_errors=True)
            tmp = d.with_name(d.name + f".tmp{os.getpid()}-{time.monotonic_ns()}")
            tmp.mkdir()
            index = tantivy.Index(_schema("page"), path=str(tmp))
            index.register_tokenizer(ANALYZER, _analyzer())
            writer = index.writer(WRITER_HEAP, 1)
            for i in range(lo, hi):
                doc = tantivy.Document()
                doc.add_text("body", " ".join(tokens(f"{self.titles[i]}. {self.text(i)}")))
                doc.add_unsigned("page", i)
                writer.add_document(doc)
            writer.commit()
            writer.wait_merging_threads()
            (tmp / "done").write_text("ok\n")
            try:
                tmp.rename(d)
            except OSError:  # a concurrent builder won
                shutil.rmtree(tmp, ignore_errors=True)
            shards.append(_Shard(d, "page", hi - lo))
        self._page_shards = shards
        return shards

    # ------------------------------------------------------------------ queries

    @property
    def num_passages(self) -> int:
        return len(self._passage_page)

    def _merged(self, shards: Sequence[_Shard], terms: Sequence[str], limit: int) -> tuple[list[tuple[float, int]], bool]:
        """The top ``limit`` (score, key) over all shards, best first (ties: lower key first), and whether
        any shard may hold more matches."""
        merged: list[tuple[float, int]] = []
        more = False
        for shard in shards:
            scores, keys, m = shard.top(terms, limit)
            merged.extend(zip(scores, keys, strict=True))
            more |= m
        merged.sort(key=lambda h: (-h[0], h[1]))
        return merged[:limit], more or len(merged) > limit

    def search(self, query: str, k: int = 5) -> list[SearchHit]:
        terms = tokens(query)
        if not terms:
            return []
        self._check_nonempty()
        top, _ = self._merged(self._shards, terms, k * 4)
        hits: list[SearchHit] = []
        seen: set[int] = set()
        for s, pid in top:
            if s <= 0:
                break
            page = int(self._passage_page[pid])
            if page in seen:
                continue
            seen.add(page)
            para = int(self._passage_para[pid])
            # The paragraph's first bytes only: whole pages run to 100+ KB.
            snippet = cut_snippet(self._texts.utf8_slice(page, int(self._passage_at[pid]), _SNIPPET_BYTES)
                                  .split("\n\n", 1)[0])
            hits.append(SearchHit(f"{int(self.page_ids[page])}:{para}", self.titles[page], snippet, float(s)))
            if len(hits) == k:
                break
        return hits

    def _check_nonempty(self) -> None:
        if self.num_pages and not any(s.searcher.num_docs for s in self._shards):
            raise CorruptIndexError(f"{self.path}: the index has no document but {self.num_pages} pages")

    def ranks(self, query: str, pages: Sequence[int], *, whole_pages: bool = False) -> list[int | None]:
        terms = tokens(query)
        if not terms or not pages:
            return [None] * len(pages)
        self._check_nonempty()
        depth = self.rank_depth if self.rank_depth is not None else max(self.num_pages, 1)
        want = {int(p) for p in pages}
        found: dict[int, int] = {}
        shards = self._page_index() if whole_pages else self._shards
        to_page: Callable[[int], int] = (lambda k: k) if whole_pages else (lambda k: int(self._passage_page[k]))
        limit = depth if whole_pages else 4 * depth
        while True:
            top, more = self._merged(shards, terms, limit)
            order: dict[int, int] = {}
            for s, key in top:
                if s <= 0:
                    break
                page = to_page(key)
                if page not in order:
                    order[page] = len(order) + 1
                    if len(order) >= depth:
                        break
            found = {p: r for p, r in order.items() if p in want}
            if not more or len(order) >= depth or len(found) == len(want):
                break
            limit *= 4
        return [self._bounded(found.get(int(p))) for p in pages]

    def text(self, page: int) -> str:
        return self._texts[page] or ""

    def snippet(self, page: int, para: int) -> str:
        return cut_snippet(self.text(page).split("\n\n")[para])

    def _find(self, order: np.ndarray, key: Callable[[int], str], title: str) -> int | None:
        keys = _Keys(order, key)
        j = bisect.bisect_right(keys, title) - 1  # the last of equal keys, like a dict built in page order
        return int(order[j]) if j >= 0 and keys[j] == title else None

    def index_of(self, title: str) -> int | None:
        return self._find(self._by_title, self.titles.__getitem__, title)

    def index_of_casefold(self, title: str) -> int | None:
        return self._find(self._by_lower, lambda i: self.titles[i].lower(), title.lower())

    def redirect(self, title: str) -> str | None:
        j = bisect.bisect_left(self._red_title, title)
        return self._red_target[j] if j < len(self._red_title) and self._red_title[j] == title else None


class _Keys(Sequence[str]):
    def __init__(self, order: np.ndarray, key: Callable[[int], str]) -> None:
        self._order, self._key = order, key

    def __len__(self) -> int:
        return len(self._order)

    def __getitem__(self, j: int) -> str:  # type: ignore[override]
        return self._key(int(self._order[j]))


def _discard(path: Path) -> None:
    """Move ``path`` aside (one rename, so a reader never sees half a directory) and delete it."""
    if path.exists():
        aside = path.with_name(path.name + f".old{os.getpid()}-{time.monotonic_ns()}")
        path.rename(aside)
        shutil.rmtree(aside, ignore_errors=True)


def open_or_build(path: Path, pages: Callable[[], Iterator[tuple[int, str, str]]],
                  redirects: Callable[[], Iterable[tuple[str, str]]], *, expect_pages: int, shard_passages: int,
                  rank_depth: int | None, settings: dict[str, Any] | None = None) -> TantivyIndex:
    """Open the index cache at ``path``; build it when missing, rebuild it (after an error log naming
    the path and the fault) when corrupt."""
    t0 = time.perf_counter()
    if path.exists():
        try:
            index = TantivyIndex(path, rank_depth=rank_depth, expect_pages=expect_pages)
            log.info("tantivy index opened from %s in %.2fs", path, time.perf_counter() - t0)
            return index
        except CorruptIndexError as e:
            log.error("search index cache %s is corrupt, rebuilding it: %s", path, e)
            _discard(path)
    TantivyIndex.build(path, pages(), redirects(), shard_passages=shard_passages, settings=settings)
    index = TantivyIndex(path, rank_depth=rank_depth, expect_pages=expect_pages)
    log.info("tantivy index over %d passages (%d shards) built in %.2fs at %s", index.num_passages,
             len(index._shards), time.perf_counter() - t0, path)
    return index
