"""Query the shards in place: a read-only DuckDB catalog and polars scans.

``open_catalog`` builds a small DuckDB database of views (nothing is copied), reopens
it read-only and locks it down:
file access is limited to the output directory, extension auto-install and
auto-load are off, and the configuration is locked so a query cannot undo it.
``guard_sql`` additionally refuses anything but one SELECT/EXPLAIN statement.

Views: ``<table>`` reads the partitions (``run=``) a *selection* names, so a query sees
one consistent set of stage outputs (the caller decides which: ``hopforge.stage``
resolves a config's chain, or the most recent complete one); ``<table>_all`` reads
every partition. Both carry the ``run`` column and never show a row twice: rows are
deduplicated by the table's id columns within a partition, as a last line of
defence behind the writers' leases.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from hopforge.errors import SQLGuardError, StorageError
from hopforge.storage.schemas import ID_COLUMNS, SCHEMAS, schema_for
from hopforge.storage.shards import read_manifest, shard_paths, table_dir, verify

ALLOWED_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}

# Physical tables that the catalog exposes under another name; `turns` is a view
# that joins the labels of the most recent labelling run into the rollout turns.
LABEL_TABLE = "turn_labels"


def guard_sql(sql: str) -> str:
    """Return ``sql`` if it is exactly one read-only statement, else raise."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise SQLGuardError(f"SQL does not parse: {e}") from None
    if len(statements) != 1:
        raise SQLGuardError(f"exactly one statement is allowed, got {len(statements)}")
    kind = statements[0].type
    if kind not in ALLOWED_STATEMENTS:
        name = getattr(kind, "name", str(kind))
        raise SQLGuardError(
            f"{name} statements are refused: hopforge sql is read-only "
            "(only SELECT, WITH ... SELECT, FROM, DESCRIBE, SHOW, SUMMARIZE and EXPLAIN)"
        )
    return sql


Selection = Mapping[str, Sequence[str]]  # table -> the partitions (run ids) its view reads


def _glob(out: Path, table: str, run: str | None = None) -> str:
    run_part = f"run={run}" if run else "run=*"
    return str(table_dir(out, table).resolve() / run_part / "part-*.parquet")


def _latest_run(out: Path, table: str) -> str | None:
    entries = read_manifest(out, table)
    if not entries:
        return None
    return max(entries, key=lambda e: e.created_at).run


def _runs_with_data(out: Path, table: str, runs: Sequence[str] | None) -> list[str | None]:
    if runs is None:
        return [None] if shard_paths(out, table) else []
    return [r for r in runs if shard_paths(out, table, r)]


def _source(con: duckdb.DuckDBPyConnection, name: str, out: Path, table: str, runs: Sequence[str] | None) -> None:
    """A view ``name`` over the shards of ``table`` in ``runs`` (None: every run), deduplicated by id."""
    have = _runs_with_data(out, table, runs)
    if not have:
        empty = schema_for(table).empty_table()  # noqa: F841  (read by DuckDB by name)
        con.execute(f"CREATE TABLE {name} AS SELECT *, NULL::VARCHAR AS run FROM empty")
        return
    globs = ", ".join(f"'{_glob(out, table, r)}'" for r in have)
    ids = ", ".join(ID_COLUMNS.get(table, ()))
    if not ids:
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{globs}], hive_partitioning = true, "
                    "union_by_name = true)")
        return
    # The window that deduplicates scatters rows; the first copy in file order is kept and the view
    # is put back in file order, so a reader paging with LIMIT/OFFSET (the viewer) sees stable pages.
    src = (f"read_parquet([{globs}], hive_partitioning = true, union_by_name = true, filename = true, "
           "file_row_number = true)")
    con.execute(f"CREATE VIEW {name} AS SELECT * EXCLUDE (filename, file_row_number) FROM {src} "
                f"QUALIFY row_number() OVER (PARTITION BY run, {ids} ORDER BY filename, file_row_number) = 1 "
                "ORDER BY filename, file_row_number")


def _create_views(con: duckdb.DuckDBPyConnection, out: Path, selection: Selection | None) -> None:
    for table in SCHEMAS:
        read_manifest(out, table)  # refuse newer schema versions up front
        _source(con, f"_{table}_all_data", out, table, None)
        _source(con, f"_{table}_data", out, table, None if selection is None else selection.get(table, []))
    if selection is None:  # no selection: the most recent labelling run labels the turns
        latest_labels = _latest_run(out, LABEL_TABLE)
        labels_sql = (f"SELECT * FROM _{LABEL_TABLE}_all_data WHERE run = '{latest_labels}'"
                      if latest_labels is not None else f"SELECT * FROM _{LABEL_TABLE}_data")
    else:
        labels_sql = f"SELECT * FROM _{LABEL_TABLE}_data"
    for table in SCHEMAS:
        con.execute(f"CREATE VIEW {table}_all AS SELECT * FROM _{table}_all_data")
        if table == "turns":
            con.execute(
                "CREATE VIEW turns AS SELECT t.*, l.* EXCLUDE (trajectory_id, turn_index, run) "
                f"FROM _turns_data t LEFT JOIN ({labels_sql}) l USING (trajectory_id, turn_index)"
            )
        else:
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM _{table}_data")


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _changed(out: Path) -> str:
    """'; shard(s) changed since written: ...' for every table, or '' (only called on a read error)."""
    bad = [f"{table}/{rel}" for table in SCHEMAS for rel in verify(out, table).changed]
    return f"; shard(s) changed since written: {', '.join(bad)} (see `hopforge inspect`)" if bad else ""


@contextmanager
def open_catalog(out: str | Path, selection: Selection | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A locked-down, read-only DuckDB connection with views ``<table>`` (the partitions ``selection``
    names; None: every partition) and ``<table>_all`` (every partition)."""
    out_path = Path(out)
    if not out_path.is_dir():
        raise StorageError(f"output directory {out_path} does not exist; run a stage first or pass --out")
    out_path = out_path.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="hopforge-catalog-"))
    db = tmp / "catalog.duckdb"
    try:
        build = duckdb.connect(str(db))
        try:
            _create_views(build, out_path, selection)
        except duckdb.Error as e:  # DuckDB reads each table's first shard here: a corrupt one fails
            raise StorageError(f"cannot open the tables under {out_path}: {_first_line(e)}{_changed(out_path)}") \
                from None
        finally:
            build.close()
        con = duckdb.connect(
            str(db),
            read_only=True,
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
        )
        try:
            con.execute("SET allowed_directories = ?", [[str(out_path) + "/"]])
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            yield con
        finally:
            con.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def query_arrow(out: str | Path, sql: str, limit: int | None = None, params: Sequence[Any] | None = None,
                selection: Selection | None = None):
    """Run one guarded read-only query on a fresh catalog of ``out`` and return a pyarrow Table."""
    guard_sql(sql)
    with open_catalog(out, selection) as con:
        return fetch_arrow(con, sql, params, limit)


def fetch_arrow(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None,
                limit: int | None = None):
    """Run one guarded read-only statement on an already open catalog, with bound parameters.

    For long-lived readers (``hopforge view``) that keep one :func:`open_catalog`
    connection rather than rebuilding the catalog per query. User input goes in
    ``params`` (``?`` placeholders), never into ``sql``. Errors map as in :func:`query_arrow`;
    an interrupted query (``con.interrupt()`` from a watchdog) is a StorageError.
    """
    guard_sql(sql)
    try:
        rel = con.sql(sql, params=list(params) if params else None)
        if rel is None:
            raise SQLGuardError("statement returned no result")
        if limit is not None:
            rel = rel.limit(limit)
        return rel.fetch_arrow_table()
    except duckdb.PermissionException as e:
        raise SQLGuardError(f"refused: {e}") from None
    except duckdb.InterruptException:
        raise StorageError("query interrupted: it ran past the time limit") from None
    except duckdb.Error as e:
        raise StorageError(f"query failed: {e}") from None


def scan(table: str, out: str | Path = "data", selection: Selection | None = None) -> pl.LazyFrame:
    """A polars LazyFrame over ``table``'s shards in the partitions ``selection`` names (None: every
    partition); ``turns`` includes its labels."""
    schema_for(table)
    out_path = Path(out)
    read_manifest(out_path, table)

    def _scan(name: str, runs: Sequence[str | None]) -> pl.LazyFrame:
        have = [r for r in runs if shard_paths(out_path, name, r)]
        if not have:
            return pl.from_arrow(schema_for(name).empty_table()).lazy()
        return pl.scan_parquet([_glob(out_path, name, r) for r in have], hive_partitioning=True)

    def runs_of(name: str) -> list[str | None]:
        return [None] if selection is None else list(selection.get(name, []))

    if table != "turns":
        return _scan(table, runs_of(table))
    label_runs = runs_of(LABEL_TABLE) if selection is not None else [_latest_run(out_path, LABEL_TABLE)]
    labels = _scan(LABEL_TABLE, [r for r in label_runs if r])
    if "run" in labels.collect_schema().names():
        labels = labels.drop("run")
    return _scan("turns", runs_of("turns")).join(labels, on=["trajectory_id", "turn_index"], how="left")
