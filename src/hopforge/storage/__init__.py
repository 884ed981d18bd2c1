"""Storage: schemas, shards, manifests and the query catalog (the stages' only I/O)."""

from typing import TYPE_CHECKING, Any

from hopforge.storage.ids import content_id
from hopforge.storage.lease import Lease
from hopforge.storage.schemas import SCHEMAS, schema_for
from hopforge.storage.shards import (
    GroupWriter,
    ShardWriter,
    existing_ids,
    iter_batches,
    read_manifest,
    read_table,
    recover,
    runs_of,
    shard_paths,
    verify,
    write_group,
    write_shard,
)

if TYPE_CHECKING:
    from hopforge.storage.catalog import guard_sql, open_catalog, query_arrow, scan

_CATALOG = {"guard_sql", "open_catalog", "query_arrow", "scan"}


def __getattr__(name: str) -> Any:
    # The catalog pulls in DuckDB and polars; stages that only write and read shards
    # (every worker process) do not pay for importing them.
    if name in _CATALOG:
        from hopforge.storage import catalog

        return getattr(catalog, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _CATALOG)


__all__ = [
    "GroupWriter",
    "Lease",
    "SCHEMAS",
    "ShardWriter",
    "content_id",
    "existing_ids",
    "guard_sql",
    "iter_batches",
    "open_catalog",
    "query_arrow",
    "read_manifest",
    "read_table",
    "recover",
    "runs_of",
    "scan",
    "schema_for",
    "shard_paths",
    "verify",
    "write_group",
    "write_shard",
]
