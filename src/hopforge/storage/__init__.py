"""Storage: schemas, shards, manifests and the query catalog (the stages' only I/O)."""

from hopforge.storage.catalog import guard_sql, open_catalog, query_arrow, scan
from hopforge.storage.ids import content_id
from hopforge.storage.schemas import SCHEMAS, schema_for
from hopforge.storage.shards import (
    ShardWriter,
    existing_ids,
    iter_batches,
    read_manifest,
    read_table,
    shard_paths,
    verify,
    write_shard,
)

__all__ = [
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
    "scan",
    "schema_for",
    "shard_paths",
    "verify",
    "write_shard",
]
