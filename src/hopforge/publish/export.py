"""Export kept trajectories as training data: TRL, ShareGPT or OpenAI fine-tuning JSONL.

Layout of ``dest`` (a Hugging Face dataset repository as is)::

    dest/data/train-00000.parquet ...        zstd Parquet shards per split
    dest/data/validation-00000.parquet ...
    dest/train.jsonl, dest/validation.jsonl  (openai-jsonl only: the upload format)
    dest/export_manifest.json                what was exported and how

``datasets.load_dataset("parquet", data_files={"train": "dest/data/train-*.parquet", ...})``
returns the DatasetDict. Splits are by question: a question's rollouts (and
their windows) never straddle train and validation, so validation measures
generalisation to unseen questions rather than to another attempt at one.

Tool-call ``arguments`` and the ``tools`` column are JSON strings: Arrow pads
structs of different shapes with nulls (search has query/k, visit title/page),
which would teach a student to emit ``"title": null``. TRL accepts ``tools``
as a JSON string, and ChatML/Hermes/Qwen templates accept string arguments.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from hopforge import __version__
from hopforge.config import Config
from hopforge.errors import ConfigError, StorageError
from hopforge.storage.catalog import guard_sql, open_catalog
from hopforge.publish.conversation import (
    TOOL_SCHEMAS,
    Conversation,
    Message,
    apply_reasoning,
    messages_from_turns,
    window_conversation,
)
from hopforge.publish.tokens import TOKEN_COLUMNS, TokenFormatter
from hopforge.storage.shards import read_manifest

log = logging.getLogger(__name__)

FORMATS = ("trl", "sharegpt", "openai-jsonl", "tokens")
SPLITS = ("train", "validation")
MANIFEST_NAME = "export_manifest.json"
TOOLS_JSON = orjson.dumps(TOOL_SCHEMAS).decode()

# ---------------------------------------------------------------- schemas of the exported rows

_TOOL_CALL = pa.struct([
    ("id", pa.string()),
    ("type", pa.string()),
    ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())])),
])

_COMMON = [
    ("sample_id", pa.string()),
    ("trajectory_id", pa.string()),
    ("question_id", pa.string()),
    ("window", pa.int32()),
    ("n_windows", pa.int32()),
    ("question", pa.string()),
    ("answer", pa.string()),
    ("hops", pa.int32()),
    ("correct", pa.bool_()),
    ("teacher_model", pa.string()),
]

TRL_SCHEMA = pa.schema(_COMMON + [
    ("messages", pa.list_(pa.struct([
        ("role", pa.string()),
        ("content", pa.string()),
        # Qwen3 / DeepSeek-R1 templates read thinking from `reasoning_content`.
        ("reasoning_content", pa.string()),
        ("tool_calls", pa.list_(_TOOL_CALL)),
        ("tool_call_id", pa.string()),
        ("name", pa.string()),
        ("loss_weight", pa.float32()),
        ("train_on", pa.bool_()),
    ]))),
    ("tools", pa.string()),
])

SHAREGPT_SCHEMA = pa.schema(_COMMON + [
    ("conversations", pa.list_(pa.struct([
        ("from", pa.string()),
        ("value", pa.string()),
        ("loss_weight", pa.float32()),
    ]))),
    ("tools", pa.string()),
])

OPENAI_SCHEMA = pa.schema(_COMMON + [
    ("messages", pa.list_(pa.struct([
        ("role", pa.string()),
        ("content", pa.string()),
        ("tool_calls", pa.list_(_TOOL_CALL)),
        ("tool_call_id", pa.string()),
        ("weight", pa.int8()),
    ]))),
    ("tools", pa.string()),
])

# tokens: one row per conversation rendered with a student tokenizer's chat template (publish/tokens.py).
TOKENS_SCHEMA = pa.schema(_COMMON + TOKEN_COLUMNS)

FORMAT_SCHEMAS = {"trl": TRL_SCHEMA, "sharegpt": SHAREGPT_SCHEMA, "openai-jsonl": OPENAI_SCHEMA,
                  "tokens": TOKENS_SCHEMA}


# ---------------------------------------------------------------- formats


def _think(m: Message) -> str:
    return f"<think>\n{m.reasoning}\n</think>\n" if m.reasoning else ""


def _calls(m: Message) -> list[dict[str, Any]] | None:
    if not m.tool_calls:
        return None
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
            for c in m.tool_calls]


def to_trl(msgs: list[Message]) -> dict[str, Any]:
    return {"messages": [{
        "role": m.role,
        "content": m.content,
        "reasoning_content": m.reasoning,
        "tool_calls": _calls(m),
        "tool_call_id": m.tool_call_id if m.role == "tool" else None,
        "name": m.name if m.role == "tool" else None,
        "loss_weight": m.loss_weight,
        "train_on": m.loss_weight > 0,
    } for m in msgs], "tools": TOOLS_JSON}


SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt", "tool": "observation"}


def to_sharegpt(msgs: list[Message]) -> dict[str, Any]:
    """LLaMA-Factory's ShareGPT layout: a tool-calling turn is ``function_call`` whose value is the call JSON.

    Thinking (and any narration before a call) goes first in ``<think>`` tags,
    which LLaMA-Factory's function formatter strips before parsing the JSON.
    """
    conv = []
    for m in msgs:
        if m.role == "assistant" and m.tool_calls:
            thought = "\n".join(x for x in (m.reasoning, m.content) if x)
            calls = [{"name": c.name, "arguments": c.arguments} for c in m.tool_calls]
            body = orjson.dumps(calls[0] if len(calls) == 1 else calls, option=orjson.OPT_SORT_KEYS).decode()
            value = (f"<think>\n{thought}\n</think>\n" if thought else "") + body
            conv.append({"from": "function_call", "value": value, "loss_weight": m.loss_weight})
        elif m.role == "assistant":
            conv.append({"from": "gpt", "value": _think(m) + m.content, "loss_weight": m.loss_weight})
        else:
            conv.append({"from": SHAREGPT_ROLES[m.role], "value": m.content, "loss_weight": 0.0})
    return {"conversations": conv, "tools": TOOLS_JSON}


def to_openai(msgs: list[Message]) -> dict[str, Any]:
    """OpenAI chat fine-tuning: ``weight`` (0/1) on assistant messages only; thinking inlined in tags."""
    out = []
    for m in msgs:
        d: dict[str, Any] = {"role": m.role, "content": m.content, "tool_calls": None, "tool_call_id": None,
                             "weight": None}
        if m.role == "assistant":
            d["content"] = _think(m) + m.content
            d["tool_calls"] = _calls(m)
            d["weight"] = 1 if m.loss_weight > 0 else 0
        elif m.role == "tool":
            d["tool_call_id"] = m.tool_call_id
        out.append(d)
    return {"messages": out, "tools": TOOLS_JSON}


FORMATTERS = {"trl": to_trl, "sharegpt": to_sharegpt, "openai-jsonl": to_openai}


def token_messages(msgs: list[Message]) -> list[dict[str, Any]]:
    """The trl-layout messages with each one's source turn (what :class:`TokenFormatter` renders)."""
    return [{**d, "turn_index": m.turn_index} for d, m in zip(to_trl(msgs)["messages"], msgs, strict=True)]


def openai_jsonl_line(row: dict[str, Any]) -> bytes:
    """The exact line the OpenAI fine-tuning API takes: no null keys, tools as objects."""
    messages = []
    for m in row["messages"]:
        d = {"role": m["role"], "content": m["content"]}
        if m.get("tool_calls"):
            d["tool_calls"] = m["tool_calls"]
            if not d["content"]:
                d["content"] = None
        if m.get("tool_call_id"):
            d["tool_call_id"] = m["tool_call_id"]
        if m.get("weight") is not None:
            d["weight"] = m["weight"]
        messages.append(d)
    return orjson.dumps({"messages": messages, "tools": orjson.loads(row["tools"])})


# ---------------------------------------------------------------- split


def split_of(question_id: str, validation_fraction: float) -> str:
    """``validation`` for a stable ``validation_fraction`` of questions, by a hash of the id alone."""
    h = int.from_bytes(hashlib.blake2b(question_id.encode(), digest_size=8).digest(), "big")
    return "validation" if h / 2**64 < validation_fraction else "train"


# ---------------------------------------------------------------- reading


def _select_sql(include_rejected: bool) -> tuple[str, str]:
    chosen = ("SELECT DISTINCT trajectory_id FROM trajectories" if include_rejected
              else "SELECT DISTINCT trajectory_id FROM kept")
    meta = f"""
        WITH chosen AS ({chosen}),
        tr AS (SELECT DISTINCT ON (trajectory_id) * FROM trajectories ORDER BY trajectory_id, finished_at DESC),
        q AS (SELECT DISTINCT ON (question_id) * FROM questions ORDER BY question_id),
        k AS (SELECT DISTINCT ON (trajectory_id) * FROM kept ORDER BY trajectory_id)
        SELECT tr.trajectory_id, tr.question_id, tr.teacher_model, q.question, q.answer, q.hops, k.correct,
               k.trajectory_id IS NOT NULL AS kept
        FROM tr JOIN chosen USING (trajectory_id) LEFT JOIN q USING (question_id) LEFT JOIN k USING (trajectory_id)
        ORDER BY tr.trajectory_id"""
    turns = f"""
        SELECT trajectory_id, question_id, turn_index, role, content, reasoning, tool_call_id, tool_name,
               tool_args, raw_output, parse_error, context_action, loss_weight, label_policy, tokens_out
        FROM turns WHERE trajectory_id IN ({chosen})
        ORDER BY trajectory_id, turn_index"""
    return guard_sql(meta), guard_sql(turns)


def _turn_groups(con: Any, sql: str, batch_rows: int = 50_000) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Stream (trajectory_id, turns) from the catalog without loading the table."""
    reader = con.sql(sql).to_arrow_reader(batch_rows)
    current, rows = None, []
    for batch in reader:
        for r in batch.to_pylist():
            if r["trajectory_id"] != current:
                if rows:
                    yield current, rows
                current, rows = r["trajectory_id"], []
            if rows and rows[-1]["turn_index"] == r["turn_index"]:
                continue  # the same turn written by two runs (resume overlap): keep the first
            rows.append(r)
    if rows:
        yield current, rows


# ---------------------------------------------------------------- writing


class _SplitWriter:
    """Buffers rows per split and writes numbered Parquet shards (plus JSONL for OpenAI)."""

    def __init__(self, root: Path, schema: pa.Schema, rows_per_shard: int, jsonl: bool) -> None:
        self.root, self.schema, self.rows_per_shard, self.jsonl = root, schema, rows_per_shard, jsonl
        self.buffers: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
        self.files: dict[str, list[str]] = {s: [] for s in SPLITS}
        self.rows: dict[str, int] = dict.fromkeys(SPLITS, 0)
        (root / "data").mkdir(parents=True, exist_ok=True)
        self._jsonl = {s: open(root / f"{s}.jsonl", "wb") for s in SPLITS} if jsonl else {}

    def write(self, split: str, row: dict[str, Any]) -> None:
        self.buffers[split].append(row)
        self.rows[split] += 1
        if self.jsonl:
            self._jsonl[split].write(openai_jsonl_line(row) + b"\n")
        if len(self.buffers[split]) >= self.rows_per_shard:
            self._flush(split)

    def _flush(self, split: str) -> None:
        rows, self.buffers[split] = self.buffers[split], []
        if not rows:
            return
        rel = f"data/{split}-{len(self.files[split]):05d}.parquet"
        try:
            table = pa.Table.from_pylist(rows, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise StorageError(f"export rows do not match the {split} schema: {e}") from None
        pq.write_table(table, self.root / rel, compression="zstd")
        self.files[split].append(rel)

    def close(self) -> None:
        for s in SPLITS:
            self._flush(s)
        for f in self._jsonl.values():
            f.close()


def _source_runs(out: Path, selection: Mapping[str, Sequence[str]] | None) -> dict[str, Any]:
    runs, hashes = {}, set()
    for table in ("pages", "links", "walks", "questions", "trajectories", "turns", "turn_labels", "kept", "rejects",
                  "difficulty"):
        entries = [e for e in read_manifest(out, table) if selection is None or e.run in selection.get(table, ())]
        if entries:
            runs[table] = sorted({e.run for e in entries})
            hashes |= {e.config_hash for e in entries if e.config_hash}
    return {"runs": runs, "config_hashes": sorted(hashes)}


def _check_destination(out: Path, dest: Path, overwrite: bool) -> None:
    """Refuse a destination whose replacement could lose data that is not an export."""
    d, o = dest.resolve(), out.resolve()
    if d == o or d in o.parents:
        raise StorageError(f"export destination {dest} contains the data directory {out}; choose another --dest")
    if d.parent == o and (o / d.name / "_manifest.jsonl").exists():
        raise StorageError(f"export destination {dest} is the {d.name!r} table of {out}; choose another --dest")
    if dest.exists() and any(dest.iterdir()):
        if not (dest / MANIFEST_NAME).is_file():
            raise StorageError(f"export destination {dest} is not empty and holds no {MANIFEST_NAME}: "
                               "refusing to replace a directory that is not a hopforge export")
        if not overwrite:
            raise StorageError(f"export destination {dest} is not empty; pass --overwrite to replace it")


def export_dataset(cfg: Config, fmt: str, dest: str | Path, *, include_rejected: bool = False,
                   overwrite: bool = False, selection: Mapping[str, Sequence[str]] | None = None,
                   token_formatter: TokenFormatter | None = None) -> dict[str, Any]:
    """Export kept trajectories of ``cfg.run.out`` to ``dest`` in ``fmt``; returns the manifest (stats).

    ``selection`` names the partitions to read (one chain of stage runs); None reads every partition.
    ``fmt = "tokens"`` renders with ``export.tokenizer`` / ``export.chat_template`` (or an already
    loaded ``token_formatter``); ``fmt = "rl"`` writes one row per question (publish/rl.py).

    Writes to a staging directory beside ``dest`` and moves it into place at the
    end, so a failed export never leaves a half-written dataset behind and an
    existing export is replaced only with ``overwrite``.
    """
    if fmt not in FORMATS + ("rl",):
        raise StorageError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS + ('rl',))}")
    if fmt == "tokens" and token_formatter is None:
        if not cfg.export.tokenizer:
            raise ConfigError("export format 'tokens' needs a tokenizer: --tokenizer PATH_OR_GGUF "
                              "(export.tokenizer)")
        token_formatter = TokenFormatter(cfg.export.tokenizer, cfg.export.chat_template)
    started = time.monotonic()
    out, dest = Path(cfg.run.out), Path(dest)
    _check_destination(out, dest, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    staging = dest.parent / f".{dest.name}.staging-{tag}"
    previous = dest.parent / f".{dest.name}.previous-{tag}"
    staging.mkdir()
    try:
        if fmt == "rl":
            from hopforge.publish.rl import export_rl_into

            manifest = export_rl_into(cfg, out, staging, selection)
        else:
            manifest = _export_into(cfg, fmt, out, staging, include_rejected, selection, token_formatter)
        manifest["seconds"] = round(time.monotonic() - started, 3)
        (staging / MANIFEST_NAME).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        if dest.exists():
            os.replace(dest, previous)  # kept until the new export is in place
        os.replace(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(previous, ignore_errors=True)
    log.info("exported %s samples (%s) to %s", manifest["counts"]["samples"], fmt, dest)
    return manifest


def _export_into(cfg: Config, fmt: str, out: Path, root: Path, include_rejected: bool,
                 selection: Mapping[str, Sequence[str]] | None, token_formatter: TokenFormatter | None = None
                 ) -> dict[str, Any]:
    ecfg = cfg.export
    meta_sql, turns_sql = _select_sql(include_rejected)
    writer = _SplitWriter(root, FORMAT_SCHEMAS[fmt], ecfg.rows_per_shard, jsonl=fmt == "openai-jsonl")
    formatter = token_formatter if fmt == "tokens" else FORMATTERS[fmt]
    counts: dict[str, Any] = {
        "trajectories": 0, "trajectories_without_turns": 0, "samples": dict.fromkeys(SPLITS, 0),
        "questions": dict.fromkeys(SPLITS, 0), "messages": 0, "assistant_messages": 0,
        "trained_messages": 0, "unlabelled_assistant_messages": 0, "trailing_messages_dropped": 0,
        "rejected_trajectories_included": 0, "assistant_turn_policies": {}, "masked_assistant_messages": 0,
        "teacher_assistant_tokens": 0, "teacher_weighted_assistant_tokens": 0,
        "windows": {"windowed_trajectories": 0, "context_summary": 0, "deterministic": 0},
        "reasoning_chars": {"source": 0, "exported": 0},
    }
    questions: dict[str, set[str]] = {s: set() for s in SPLITS}
    try:
        with open_catalog(out, selection) as con:
            meta = {r["trajectory_id"]: r for r in con.sql(meta_sql).to_arrow_table().to_pylist()}
            seen: set[str] = set()
            for tid, turns in _turn_groups(con, turns_sql):
                info = meta.get(tid)
                if info is None:  # turns of a trajectory without its trajectories row: nothing to describe it
                    continue
                seen.add(tid)
                for row, split in _samples(cfg, fmt, formatter, info, turns, counts):
                    writer.write(split, row)
                    questions[split].add(info["question_id"])
            counts["trajectories_without_turns"] = len(meta.keys() - seen)
    finally:
        writer.close()
    counts["trajectories"] = len(seen)
    counts["questions"] = {s: len(questions[s]) for s in SPLITS}
    return {
        "format": fmt,
        "hopforge_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config_hash": cfg.config_hash(),
        "source": {"out": str(out), **_source_runs(out, selection)},
        "selection": "kept + rejected (analysis only)" if include_rejected else "kept",
        "include_rejected": include_rejected,
        "split": {"by": "question_id", "hash": "blake2b-64", "validation_fraction": ecfg.validation_fraction},
        "reasoning": {
            "mode": ecfg.reasoning,
            "max_chars": ecfg.reasoning_max_chars if ecfg.reasoning == "shorten" else None,
            "placement": {"trl": "messages[].reasoning_content", "sharegpt": "<think> tags in value",
                          "openai-jsonl": "<think> tags in assistant content",
                          "tokens": "as the chat template shows it (see tokens.chat_template)"}[fmt],
        },
        "windowing": {"window_turns": ecfg.window_turns,
                      "summary": "rollout context summary where present, else deterministic summary of prior calls"},
        "loss_weights": {"source": "turn_labels.loss_weight (the labelling run of this chain)" if selection
                         else "turn_labels.loss_weight (latest labelling run)",
                         "unlabelled_assistant_default": ecfg.unlabelled_weight,
                         "non_assistant": 0.0,
                         "policies": counts["assistant_turn_policies"],
                         "masked_bad_calls": "weight 0 (failed or malformed calls the teacher recovered from)"},
        "tools": [t["function"]["name"] for t in TOOL_SCHEMAS],
        **({"tokens": token_formatter.manifest()} if fmt == "tokens" and token_formatter else {}),
        "counts": counts,
        "files": writer.files,
        "load": {"train": "data/train-*.parquet", "validation": "data/validation-*.parquet"},
    }


def _samples(cfg: Config, fmt: str, formatter: Any, info: dict[str, Any], turns: list[dict[str, Any]],
             counts: dict[str, Any]) -> Iterable[tuple[dict[str, Any], str]]:
    ecfg = cfg.export
    policies = counts["assistant_turn_policies"]
    for t in turns:
        if t["role"] == "assistant":
            key = t.get("label_policy") or "unlabelled"
            policies[key] = policies.get(key, 0) + 1
            counts["masked_assistant_messages"] += bool(t.get("parse_error"))
            n = t.get("tokens_out") or 0
            counts["teacher_assistant_tokens"] += n
            w = t.get("loss_weight")
            if (w if w is not None else (0.0 if t.get("parse_error") else ecfg.unlabelled_weight)) > 0:
                counts["teacher_weighted_assistant_tokens"] += n
    msgs, unlabelled = messages_from_turns(turns, default_weight=ecfg.unlabelled_weight)
    counts["unlabelled_assistant_messages"] += unlabelled
    counts["reasoning_chars"]["source"] += sum(len(m.reasoning or "") for m in msgs)
    msgs = apply_reasoning(msgs, ecfg.reasoning, ecfg.reasoning_max_chars)
    counts["reasoning_chars"]["exported"] += sum(len(m.reasoning or "") for m in msgs)
    if not info["kept"]:
        counts["rejected_trajectories_included"] += 1
    conv = Conversation(info["trajectory_id"], info["question_id"], msgs)
    windows = window_conversation(conv, ecfg.window_turns)
    if len(windows) > 1:
        counts["windows"]["windowed_trajectories"] += 1
    split = split_of(info["question_id"], ecfg.validation_fraction)
    for w in windows:
        # Messages after the last assistant turn (the answer's "recorded" result, or a window's last
        # observation, which the next window's summary covers) teach nothing and cost context.
        last = max((i for i, m in enumerate(w.messages) if m.role == "assistant"), default=None)
        if last is not None and last < len(w.messages) - 1:
            counts["trailing_messages_dropped"] += len(w.messages) - 1 - last
            w.messages = w.messages[: last + 1]
        if w.summary_source:
            counts["windows"][w.summary_source] += 1
        counts["messages"] += len(w.messages)
        counts["assistant_messages"] += sum(m.role == "assistant" for m in w.messages)
        counts["trained_messages"] += sum(m.loss_weight > 0 for m in w.messages)
        counts["samples"][split] += 1
        row = {
            "sample_id": f"{w.trajectory_id}-w{w.window}",
            "trajectory_id": w.trajectory_id,
            "question_id": w.question_id,
            "window": w.window,
            "n_windows": w.n_windows,
            "question": info["question"],
            "answer": info["answer"],
            "hops": info["hops"],
            "correct": info["correct"],
            "teacher_model": info["teacher_model"],
            **(formatter(token_messages(w.messages), what=f"trajectory {w.trajectory_id} window {w.window}")
               if fmt == "tokens" else formatter(w.messages)),
        }
        yield row, split


# ---------------------------------------------------------------- hub


def push_to_hub(dest: str | Path, repo_id: str, *, private: bool = True, api: Any = None,
                token: str | None = None, commit_message: str | None = None) -> dict[str, Any]:
    """Upload an export directory (data, manifest, card) as a dataset repository.

    ``api`` defaults to ``huggingface_hub.HfApi`` authenticated with ``token`` or
    the ``HF_TOKEN`` environment variable; tests inject a fake. The token is
    passed to the client only, never logged or written.
    """
    dest = Path(dest)
    if not (dest / MANIFEST_NAME).is_file():
        raise StorageError(f"{dest} is not an export directory (no {MANIFEST_NAME}); run hopforge export first")
    if api is None:
        from huggingface_hub import HfApi

        token = token or os.environ.get("HF_TOKEN")
        if not token:
            raise StorageError("push to the Hub needs a token: set HF_TOKEN in the environment")
        api = HfApi(token=token)
    manifest = orjson.loads((dest / MANIFEST_NAME).read_bytes())
    message = commit_message or (f"hopforge {manifest['hopforge_version']} export ({manifest['format']}, "
                                 f"config {manifest['config_hash'][:12]})")
    url = api.create_repo(repo_id=repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(folder_path=str(dest), repo_id=repo_id, repo_type="dataset",
                               commit_message=message, ignore_patterns=[".*"])
    log.info("pushed %s to dataset repo %s", dest, repo_id)
    return {"repo_id": repo_id, "repo_url": str(url), "commit": str(getattr(commit, "oid", commit) or ""),
            "private": private, "commit_message": message}
