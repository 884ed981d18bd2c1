"""A catalog kept open for the life of the viewer, reopened when a stage writes new shards.

:func:`hopforge.storage.open_catalog` builds its views from the shards present when
it opens (a table with no shards becomes an empty typed table), so a viewer left
running while the pipeline works would never see new tables. Rebuilding the catalog
per request costs tens of milliseconds; instead the manifests' (mtime, size) are
checked per request (a dozen ``stat`` calls) and the catalog is reopened only when
one changed, or when a stage run completed (which can change the chain the views read).

The views read one consistent chain of stage runs (``selection``, asked again at each reopen):
by default the most recently completed one, as ``hopforge sql`` does without ``--config``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import duckdb

from hopforge.stage import STAGES_DIR, current_selection
from hopforge.storage.catalog import Selection, open_catalog
from hopforge.storage.schemas import SCHEMAS
from hopforge.storage.shards import MANIFEST, table_dir


class LiveCatalog:
    """Hands out read-only DuckDB cursors over ``out``; thread-safe.

    ``selection`` gives the partitions the plain table views read (default: the most recently
    completed chain of stage runs); it is asked again whenever the catalog reopens."""

    def __init__(self, out: str | Path, selection: Callable[[], Selection | None] | None = None) -> None:
        self.out = Path(out).resolve()
        self._selection = selection or (lambda: current_selection(self.out))
        self._lock = threading.Lock()
        self._stack: ExitStack | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._signature: tuple[Any, ...] | None = None
        self.generation = 0  # bumps on every reopen; keys caches of whole-table aggregates
        self.cache: dict[str, Any] = {}

    def _current_signature(self) -> tuple[Any, ...]:
        sig = []
        for table in SCHEMAS:
            try:
                st = (table_dir(self.out, table) / MANIFEST).stat()
                sig.append((table, st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                sig.append((table, None, None))
        sig.append(tuple(sorted((p.parent.name, p.stat().st_mtime_ns)
                                for p in (self.out / STAGES_DIR).glob("*/complete.json"))))
        return tuple(sig)

    def _reopen(self, signature: tuple[Any, ...]) -> None:
        stack = ExitStack()
        con = stack.enter_context(open_catalog(self.out, self._selection()))  # StorageError for a missing dir
        old = self._stack
        self._stack, self._con, self._signature = stack, con, signature
        self.generation += 1
        self.cache = {}
        if old is not None:
            # Cursors already handed out are connections of their own to the same
            # database instance, so in-flight requests finish on the old views.
            old.close()

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            signature = self._current_signature()
            if signature != self._signature:
                self._reopen(signature)
            assert self._con is not None
            cur = self._con.cursor()
        try:
            yield cur
        finally:
            cur.close()

    def close(self) -> None:
        with self._lock:
            if self._stack is not None:
                self._stack.close()
            self._stack = self._con = self._signature = None
