"""Explicit, versioned pyarrow schemas: the contract between stages.

Every table the pipeline writes is declared here before any code fills it.
A change to a table's columns bumps its version in ``SCHEMA_VERSIONS``;
readers refuse data from a newer version than they know.

Nested data (a walk's path, a turn's tool arguments, check results) is a typed
list/struct column that DuckDB and polars read natively, never a JSON string.
Ids are content hashes (see :mod:`hopforge.storage.ids`).
"""

from __future__ import annotations

import pyarrow as pa

from hopforge.errors import SchemaVersionError, StorageError

TS = pa.timestamp("us", tz="UTC")

KV = pa.struct([("key", pa.string()), ("value", pa.string())])

EVIDENCE = pa.struct(
    [
        ("hop", pa.int32()),  # 1-based: hop i links path[i-1] -> path[i]
        ("src", pa.string()),
        ("dst", pa.string()),
        ("anchor", pa.string()),
        ("sentence", pa.string()),
    ]
)

CHECK = pa.struct(
    [
        ("name", pa.string()),
        ("passed", pa.bool_()),
        ("detail", pa.string()),
    ]
)

TOOL_ARGS = pa.struct(
    [
        ("query", pa.string()),  # search
        ("k", pa.int32()),  # search
        ("title", pa.string()),  # visit
        ("page", pa.int32()),  # visit
        ("text", pa.string()),  # answer
    ]
)

PAGES = pa.schema(
    [
        ("page_id", pa.int64()),
        ("title", pa.string()),
        ("ns", pa.int32()),
        ("revision_id", pa.int64()),
        ("revision_timestamp", TS),
        ("text", pa.string()),  # cleaned plain text, paragraphs separated by "\n\n"
        ("lead", pa.string()),
        ("short_description", pa.string()),
        ("infobox_type", pa.string()),
        ("infobox", pa.list_(KV)),
        ("categories", pa.list_(pa.string())),
        ("is_disambiguation", pa.bool_()),
        ("is_list", pa.bool_()),
        ("is_date", pa.bool_()),
        ("wikitext_bytes", pa.int64()),
        ("red_links", pa.int32()),  # links to titles absent from the dump, dropped
        ("source", pa.string()),  # dump file name
    ]
)

LINKS = pa.schema(
    [
        ("src_id", pa.int64()),
        ("src_title", pa.string()),
        ("dst_id", pa.int64()),  # after redirect resolution; always in the dump
        ("dst_title", pa.string()),
        ("raw_target", pa.string()),  # as written in the wikitext, before normalisation
        ("anchor", pa.string()),
        ("sentence", pa.string()),
        ("position", pa.int32()),  # 0-based ordinal of the link in its page
        ("in_lead", pa.bool_()),
        ("via_redirect", pa.bool_()),
    ]
)

REDIRECTS = pa.schema(
    [
        ("title", pa.string()),  # the redirect page's title
        ("page_id", pa.int64()),  # the redirect page's own id
        ("target", pa.string()),  # final target after following the chain
        ("target_id", pa.int64()),  # null when the final target is not in the dump
        ("fragment", pa.string()),
        ("chain", pa.list_(pa.string())),  # intermediate titles, in order
    ]
)

# Staging tables of the graph stage: written per ingest batch, before the whole
# title set is known; build_graph resolves them into `links` and `redirects`.
LINKS_RAW = pa.schema(
    [
        ("batch_id", pa.string()),
        ("src_id", pa.int64()),
        ("src_title", pa.string()),
        ("target", pa.string()),  # normalised title (namespace prefix canonical, fragment cut)
        ("raw_target", pa.string()),
        ("anchor", pa.string()),
        ("sentence", pa.string()),
        ("position", pa.int32()),
        ("in_lead", pa.bool_()),
    ]
)

REDIRECTS_RAW = pa.schema(
    [
        ("batch_id", pa.string()),
        ("title", pa.string()),
        ("page_id", pa.int64()),
        ("target", pa.string()),  # normalised direct target
        ("fragment", pa.string()),
    ]
)

# One row per finished ingest batch, written last: a batch with a row here is done.
INGEST_BATCHES = pa.schema(
    [
        ("batch_id", pa.string()),
        ("source", pa.string()),
        ("index", pa.int32()),
        ("pages", pa.int32()),
        ("redirects", pa.int32()),
        ("links", pa.int32()),
        ("rejects", pa.int32()),
        ("seconds", pa.float64()),
    ]
)

NODES = pa.schema(
    [
        ("node", pa.int32()),  # row index in the CSR arrays
        ("page_id", pa.int64()),
        ("title", pa.string()),
        ("pagerank", pa.float64()),
        ("in_degree", pa.int32()),
        ("out_degree", pa.int32()),
        ("is_disambiguation", pa.bool_()),
        ("is_list", pa.bool_()),
        ("is_date", pa.bool_()),
        ("revision_timestamp", TS),
    ]
)

WALKS = pa.schema(
    [
        ("walk_id", pa.string()),
        ("seed", pa.int64()),
        ("hops", pa.int32()),
        ("start_strategy", pa.string()),  # pagerank | uniform | recency
        ("path", pa.list_(pa.string())),  # titles, start to answer
        ("path_ids", pa.list_(pa.int64())),
        ("evidence", pa.list_(EVIDENCE)),
    ]
)

# Question quality (schema v2): how each hop is stated, the uniqueness certificate, retrieval
# ranks, leaks and the offline replay, as typed columns a user can cut on in SQL.
RELATION = pa.struct(
    [
        ("hop", pa.int32()),
        ("relation", pa.string()),  # "was born in": the fact relating path[hop-1] to path[hop]
        ("source", pa.string()),  # infobox:<key> | sentence
        ("stated_on", pa.string()),  # title of the page whose text or infobox states it
    ]
)

CLUE_CERTIFICATE = pa.struct(
    [
        ("entity", pa.int32()),  # position on the path
        ("clue", pa.string()),
        ("kind", pa.string()),  # description | type | category | infobox | category_date
        ("candidates", pa.int64()),  # pages of the dump that satisfy the clue alone
        ("witnesses", pa.list_(pa.string())),  # some of them, other than the entity
    ]
)

CLUE_RANK = pa.struct([("clue", pa.string()), ("rank", pa.int32())])

LEAK = pa.struct(
    [
        ("entity", pa.int32()),
        ("name", pa.string()),
        ("source", pa.string()),  # title | redirect | anchor
        ("form", pa.string()),  # exact | inflection | derived
        ("found", pa.string()),
    ]
)

REPLAY_STEP = pa.struct(
    [
        ("hop", pa.int32()),  # 0 = the start entity
        ("title", pa.string()),
        ("action", pa.string()),  # search | follow | null (not reached)
        ("query", pa.string()),
        ("rank", pa.int32()),  # the entity's search rank for the query
        ("page", pa.int32()),  # page of the previous entity's text naming it
        ("turns", pa.int32()),
    ]
)

QUESTIONS = pa.schema(
    [
        ("question_id", pa.string()),
        ("walk_id", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("answer_aliases", pa.list_(pa.string())),
        ("answer_type", pa.string()),  # entity | fact
        ("path", pa.list_(pa.string())),  # titles, start to answer
        ("hops", pa.int32()),
        ("evidence", pa.list_(EVIDENCE)),
        ("answer_facts", pa.list_(KV)),  # infobox facts of the final entity
        ("composer", pa.string()),  # template | llm:<model>
        ("checks", pa.list_(CHECK)),
        ("passed", pa.bool_()),
        ("seed", pa.int64()),
        # v2: question quality
        ("language", pa.string()),  # the language the question is asked in (the dump's)
        ("relations", pa.list_(RELATION)),
        ("certificate", pa.list_(CLUE_CERTIFICATE)),  # per clue of the question
        ("candidates", pa.int32()),  # pages that fit the whole question (1 = unique)
        ("candidate_witnesses", pa.list_(pa.string())),
        ("one_shot_rank", pa.int32()),  # answer page's search rank for the whole question (null: not found)
        ("best_clue_rank", pa.int32()),  # best rank any single clue of the question gives the answer page
        ("best_clue", pa.string()),
        ("clue_ranks", pa.list_(CLUE_RANK)),
        ("leaks", pa.list_(LEAK)),  # names of walk entities found in the question, any form
        ("solvable", pa.bool_()),  # the offline replay followed the chain within the turn limit
        ("replay_turns", pa.int32()),
        ("reference_path", pa.list_(REPLAY_STEP)),
    ]
)

TRAJECTORIES = pa.schema(
    [
        ("trajectory_id", pa.string()),
        ("question_id", pa.string()),
        ("attempt", pa.int32()),
        ("teacher_backend", pa.string()),
        ("teacher_model", pa.string()),
        ("status", pa.string()),  # answered | turn_limit | token_budget | error
        ("final_answer", pa.string()),
        ("num_turns", pa.int32()),
        ("num_tool_calls", pa.int32()),
        ("tokens_in", pa.int64()),
        ("tokens_out", pa.int64()),
        ("retries", pa.int32()),
        ("errors", pa.int32()),
        ("context_events", pa.int32()),
        ("error", pa.string()),
        ("started_at", TS),
        ("finished_at", TS),
        ("wall_seconds", pa.float64()),
        ("endpoint", pa.string()),  # v2: the teacher endpoint that served it (null in v1 shards)
    ]
)

TURNS = pa.schema(
    [
        ("trajectory_id", pa.string()),
        ("question_id", pa.string()),
        ("turn_index", pa.int32()),  # 0-based over all messages of the trajectory
        ("role", pa.string()),  # system | user | assistant | tool
        ("content", pa.string()),  # assistant text / observation / prompt
        ("reasoning", pa.string()),  # thinking content, kept apart from content
        ("tool_call_id", pa.string()),
        ("tool_name", pa.string()),
        ("tool_args", TOOL_ARGS),
        ("raw_output", pa.string()),  # the model's raw text when a text protocol is used
        ("parse_error", pa.string()),
        ("tokens_in", pa.int32()),
        ("tokens_out", pa.int32()),
        ("latency_ms", pa.float64()),
        ("error", pa.string()),
        ("context_action", pa.string()),  # none | truncated | summarized
    ]
)

# Written by the label stage; the catalog's `turns` view joins it in, so
# `SELECT loss_weight FROM turns` works without the user knowing there are two tables.
TURN_LABELS = pa.schema(
    [
        ("trajectory_id", pa.string()),
        ("turn_index", pa.int32()),
        ("valid_call", pa.bool_()),
        ("tool_error", pa.bool_()),
        ("novel_query", pa.bool_()),
        ("progress", pa.bool_()),
        ("redundant", pa.bool_()),
        ("recovery", pa.bool_()),
        ("judge_label", pa.string()),  # essential | not_necessary | harmful
        ("judge_rationale", pa.string()),
        ("loss_weight", pa.float32()),
        ("label_policy", pa.string()),
    ]
)

DIFFICULTY = pa.schema(
    [
        ("question_id", pa.string()),
        ("k", pa.int32()),
        ("solve_rate_no_tools", pa.float64()),
        ("solve_rate_tools", pa.float64()),
        ("teacher_model", pa.string()),
    ]
)

KEPT = pa.schema(
    [
        ("trajectory_id", pa.string()),
        ("question_id", pa.string()),
        ("correct", pa.bool_()),
        ("f1", pa.float64()),
        ("judge_verdict", pa.string()),
        ("judge_rationale", pa.string()),
        ("action_hash", pa.string()),  # v2: hash of the action sequence, for exact-duplicate dedup on resume
    ]
)

REJECTS = pa.schema(
    [
        ("stage", pa.string()),  # ingest | questions | rollout | filter | ...
        ("step", pa.string()),  # the filter / check that dropped the row
        ("reason", pa.string()),  # stable snake_case, e.g. answer_mismatch
        ("row_table", pa.string()),  # the table the row would have gone to
        ("row_id", pa.string()),  # page_id / question_id / trajectory_id
        ("detail", pa.string()),  # human-readable context: title, offset, values
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "pages": PAGES,
    "links": LINKS,
    "redirects": REDIRECTS,
    "links_raw": LINKS_RAW,
    "redirects_raw": REDIRECTS_RAW,
    "ingest_batches": INGEST_BATCHES,
    "nodes": NODES,
    "walks": WALKS,
    "questions": QUESTIONS,
    "trajectories": TRAJECTORIES,
    "turns": TURNS,
    "turn_labels": TURN_LABELS,
    "difficulty": DIFFICULTY,
    "kept": KEPT,
    "rejects": REJECTS,
}

SCHEMA_VERSIONS: dict[str, int] = {name: 1 for name in SCHEMAS}
SCHEMA_VERSIONS["kept"] = 2  # v2 added action_hash
SCHEMA_VERSIONS["trajectories"] = 2  # v2 added endpoint
SCHEMA_VERSIONS["questions"] = 2  # v2 added the question-quality columns (language ... reference_path)

# Columns that identify a row; used for resume (skip ids already written) and dedup.
ID_COLUMNS: dict[str, tuple[str, ...]] = {
    "pages": ("page_id",),
    "links": ("src_id", "position"),
    "redirects": ("title",),
    "links_raw": ("src_id", "position"),
    "redirects_raw": ("title",),
    "ingest_batches": ("batch_id",),
    "nodes": ("node",),
    "walks": ("walk_id",),
    "questions": ("question_id",),
    "trajectories": ("trajectory_id",),
    "turns": ("trajectory_id", "turn_index"),
    "turn_labels": ("trajectory_id", "turn_index"),
    "difficulty": ("question_id",),
    "kept": ("trajectory_id",),
    "rejects": ("stage", "step", "row_id"),
}


def schema_for(table: str) -> pa.Schema:
    """The versioned schema of ``table``, with version metadata attached."""
    try:
        schema = SCHEMAS[table]
    except KeyError:
        raise StorageError(f"unknown table {table!r}; known: {', '.join(sorted(SCHEMAS))}") from None
    return schema.with_metadata(
        {b"hopforge.table": table.encode(), b"hopforge.schema_version": str(SCHEMA_VERSIONS[table]).encode()}
    )


def check_version(table: str, version: int, where: str) -> None:
    """Raise if ``version`` is newer than this package's schema for ``table``."""
    known = SCHEMA_VERSIONS[table]
    if version > known:
        raise SchemaVersionError(
            f"{where}: table {table!r} was written with schema version {version}, "
            f"but this hopforge knows only up to {known}; upgrade hopforge to read it"
        )
