"""Tests for hopforge.publish.export (and the conversation building it uses)."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import datasets
import orjson
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from typer.testing import CliRunner

from tests.publish.export_rows import HARMFUL, KEPT, QUESTIONS, SYSTEM
from hopforge.cli import app
from hopforge.errors import StorageError
from hopforge.publish import export as export_mod
from hopforge.publish.conversation import SUMMARY_HEADER, TOOL_SCHEMAS, shorten_reasoning
from hopforge.publish.export import MANIFEST_NAME, export_dataset, push_to_hub, split_of

datasets.disable_progress_bars()


def _load(dest: Path, manifest: dict[str, Any]) -> datasets.DatasetDict:
    files = {s: str(dest / glob) for s, glob in manifest["load"].items() if manifest["files"][s]}
    return datasets.load_dataset("parquet", data_files=files)


def _rows(ds: datasets.DatasetDict) -> list[dict[str, Any]]:
    return [r for split in ds.values() for r in split]


def _trimmed(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Source turns up to the last assistant turn: what follows it is not exported."""
    last = max(i for i, t in enumerate(turns) if t["role"] == "assistant")
    return turns[: last + 1]


# ---------------------------------------------------------------- TRL: round trip against the source rows


def test_trl_export_loads_back_with_datasets_and_matches_source(run_dir, make_cfg, tmp_path):
    out, src = run_dir
    cfg = make_cfg(out, **{"export.validation_fraction": 0.5})
    dest = tmp_path / "trl"
    manifest = export_dataset(cfg, "trl", dest)
    ds = _load(dest, manifest)
    rows = _rows(ds)

    # only kept trajectories, one row each (no windowing), t3 (rejected) absent
    assert sorted(r["trajectory_id"] for r in rows) == sorted(KEPT)
    labels = {(lab["trajectory_id"], lab["turn_index"]): lab["loss_weight"] for lab in src["labels"]}
    for r in rows:
        turns = _trimmed(src["turns"][r["trajectory_id"]])
        assert src["turns"][r["trajectory_id"]][-1]["content"] == "Answer recorded."  # the dropped tail
        msgs = r["messages"]
        assert [m["role"] for m in msgs] == [t["role"] for t in turns]
        assert r["question"] == QUESTIONS[r["question_id"]][0]
        assert msgs[0]["content"] == SYSTEM and msgs[1]["content"] == QUESTIONS[r["question_id"]][0]
        for m, t in zip(msgs, turns, strict=True):
            assert m["content"] == t["content"]
            if t["role"] == "assistant":
                assert m["reasoning_content"] == t["reasoning"]
                (call,) = m["tool_calls"]
                assert call["type"] == "function" and call["id"] == t["tool_call_id"]
                assert call["function"]["name"] == t["tool_name"]
                want_args = {k: v for k, v in t["tool_args"].items() if v is not None}
                assert json.loads(call["function"]["arguments"]) == want_args
                # labelled turns carry their label's weight; t4 is unlabelled -> default 1.0
                want = labels.get((r["trajectory_id"], t["turn_index"]), 1.0)
                assert m["loss_weight"] == pytest.approx(want)
                assert m["train_on"] is (want > 0)
            else:
                assert m["tool_calls"] is None
                assert m["loss_weight"] == 0.0 and m["train_on"] is False  # observations never trained on
            if t["role"] == "tool":
                assert m["tool_call_id"] == t["tool_call_id"] and m["name"] == t["tool_name"]
    harmful_row = next(r for r in rows if r["trajectory_id"] == HARMFUL[0])
    assert harmful_row["messages"][HARMFUL[1]]["loss_weight"] == 0.0
    search_weights = {m["loss_weight"] for r in rows if r["trajectory_id"] != "t4" for m in r["messages"]
                      if m["tool_calls"] and m["tool_calls"][0]["function"]["name"] == "search"} - {0.0}
    assert search_weights == {0.5}
    assert manifest["counts"]["unlabelled_assistant_messages"] == 3
    assert manifest["counts"]["trajectories"] == 4
    assert manifest["counts"]["trailing_messages_dropped"] == 4
    assert json.loads(rows[0]["tools"]) == TOOL_SCHEMAS


def test_split_is_by_question_and_deterministic(run_dir, make_cfg, tmp_path):
    out, _ = run_dir
    for frac in (0.3, 0.5, 0.7):
        cfg = make_cfg(out, **{"export.validation_fraction": frac})
        dest = tmp_path / f"s{frac}"
        manifest = export_dataset(cfg, "trl", dest)
        ds = _load(dest, manifest)
        by_split = {s: {r["question_id"] for r in ds[s]} for s in ds}
        # q1 has two rollouts (t1, t5): they are always in the same split
        q1_splits = {s for s in ds for r in ds[s] if r["question_id"] == "q1"}
        assert len(q1_splits) == 1
        for s, qids in by_split.items():
            assert all(split_of(q, frac) == s for q in qids)
        assert manifest["counts"]["questions"] == {s: len(by_split.get(s, ())) for s in ("train", "validation")}
    assert split_of("q1", 0.0) == "train"
    assert split_of("q1", 0.5) == split_of("q1", 0.5)
    # the fraction is honoured on many ids
    share = sum(split_of(f"question-{i}", 0.1) == "validation" for i in range(20_000)) / 20_000
    assert 0.09 < share < 0.11


def test_include_rejected_exports_the_rejected_trajectory(run_dir, make_cfg, tmp_path):
    out, _ = run_dir
    manifest = export_dataset(make_cfg(out), "trl", tmp_path / "all", include_rejected=True)
    rows = _rows(_load(tmp_path / "all", manifest))
    assert sorted(r["trajectory_id"] for r in rows) == ["t1", "t2", "t3", "t4", "t5"]
    t3 = next(r for r in rows if r["trajectory_id"] == "t3")
    assert t3["correct"] is None  # not in kept
    assert manifest["counts"]["rejected_trajectories_included"] == 1
    assert manifest["selection"].startswith("kept + rejected")


# ---------------------------------------------------------------- TRL formatting: documented schema + a chat template

# A Hermes/ChatML-style tool-calling template (as Qwen2.5 and NousResearch Hermes use): tools in the system
# prompt, calls as <tool_call>{"name", "arguments"}</tool_call>, results as <tool_response> in a user turn.
HERMES_TEMPLATE = """
{%- if tools %}
<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}# Tools

You may call one or more functions. Function signatures are within <tools></tools>:
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>

Return each call as a JSON object within <tool_call></tool_call> tags.<|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'system' %}
{%- if not loop.first %}{{ raise_exception('system message must be first') }}{% endif %}
{%- elif message.role == 'user' %}<|im_start|>user
{{ message.content }}<|im_end|>
{% elif message.role == 'assistant' %}<|im_start|>assistant
{% if message.reasoning_content %}<think>
{{ message.reasoning_content }}
</think>
{% endif %}{{ message.content or '' }}
{%- for tc in message.tool_calls or [] %}
<tool_call>
{"name": {{ tc.function.name | tojson }}, "arguments": {% if tc.function.arguments is string %}{{ tc.function.arguments }}{% else %}{{ tc.function.arguments | tojson }}{% endif %}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == 'tool' %}
{%- if not message.tool_call_id %}{{ raise_exception('tool message without tool_call_id') }}{% endif %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% else %}{{ raise_exception('unknown role: ' ~ message.role) }}
{%- endif %}
{%- endfor %}
"""


def _apply_chat_template(messages: list[dict], tools: list[dict]) -> str:
    """What transformers' apply_chat_template does: a sandboxed Jinja env with tojson and raise_exception."""

    def raise_exception(msg: str) -> None:
        raise ValueError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x: json.dumps(x, ensure_ascii=False)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(HERMES_TEMPLATE).render(messages=messages, tools=tools)


def _check_trl_conversational(row: dict[str, Any]) -> list[dict]:
    """The layout TRL documents for conversational datasets with tool calling; returns the decoded tools."""
    tools = json.loads(row["tools"])  # TRL accepts `tools` as a JSON string (Arrow null-padding otherwise)
    assert isinstance(tools, list) and tools
    names = set()
    for tool in tools:
        assert tool["type"] == "function"
        fn = tool["function"]
        assert isinstance(fn["name"], str) and isinstance(fn["description"], str)
        assert fn["parameters"]["type"] == "object"
        assert set(fn["parameters"]["required"]) <= set(fn["parameters"]["properties"])
        names.add(fn["name"])
    msgs = row["messages"]
    assert msgs[0]["role"] == "system" and msgs[1]["role"] == "user"
    open_ids: set[str] = set()
    for m in msgs:
        assert m["role"] in {"system", "user", "assistant", "tool"}
        assert isinstance(m["content"], str)
        if m["role"] == "assistant":
            for tc in m["tool_calls"] or []:
                assert tc["type"] == "function" and tc["function"]["name"] in names
                args = json.loads(tc["function"]["arguments"])
                params = next(t["function"]["parameters"] for t in tools if t["function"]["name"] == tc["function"]["name"])
                assert set(args) <= set(params["properties"]) and set(params["required"]) <= set(args)
                open_ids.add(tc["id"])
        elif m["role"] == "tool":
            assert m["tool_call_id"] in open_ids and m["name"] in names  # answers a call made before it
            open_ids.discard(m["tool_call_id"])
        else:
            assert not m["tool_calls"]
    return tools


def test_trl_rows_follow_trl_schema_and_render_through_a_tool_calling_chat_template(run_dir, make_cfg, tmp_path):
    out, src = run_dir
    cfg = make_cfg(out, **{"export.window_turns": 3})
    manifest = export_dataset(cfg, "trl", tmp_path / "trl")
    rows = _rows(_load(tmp_path / "trl", manifest))
    assert len(rows) == 6  # t1 and t2 cut into two windows each
    for row in rows:
        tools = _check_trl_conversational(row)
        text = _apply_chat_template(row["messages"], tools)
        calls = [json.loads(c) for c in re.findall(r"<tool_call>\n(.*?)\n</tool_call>", text)]
        want = [{"name": tc["function"]["name"], "arguments": json.loads(tc["function"]["arguments"])}
                for m in row["messages"] if m["role"] == "assistant" for tc in m["tool_calls"] or []]
        assert calls == want and calls
        assert text.count("<tool_response>") == sum(m["role"] == "tool" for m in row["messages"])
        assert re.findall(r"<tools>\n(.*?)</tools>", text, re.S)[0].count('"type": "function"') == 3
        # Prefix property a loss-mask builder relies on: rendering messages[:i] is a prefix of messages[:i+1].
        prev = ""
        for i in range(1, len(row["messages"]) + 1):
            cur = _apply_chat_template(row["messages"][:i], tools)
            assert cur.startswith(prev)
            prev = cur
    t1 = [r for r in rows if r["trajectory_id"] == "t1"]
    first_call = '<tool_call>\n{"name": "search", "arguments": {"query": "Acme Lenses founder", "k": 5}}\n</tool_call>'
    assert first_call in _apply_chat_template(t1[0]["messages"], TOOL_SCHEMAS)
    # string arguments render exactly like the dict arguments transformers' tojson would print
    as_dicts = [{**m, "tool_calls": [{**tc, "function": {**tc["function"], "arguments": json.loads(
        tc["function"]["arguments"])}} for tc in m["tool_calls"]] if m["tool_calls"] else None} for m in t1[0]["messages"]]
    assert _apply_chat_template(as_dicts, TOOL_SCHEMAS) == _apply_chat_template(t1[0]["messages"], TOOL_SCHEMAS)
    with pytest.raises(ValueError, match="unknown role"):
        _apply_chat_template([{"role": "function", "content": "x"}], TOOL_SCHEMAS)


# ---------------------------------------------------------------- windows and reasoning


def test_windows_use_context_summary_or_deterministic_summary(run_dir, make_cfg, tmp_path):
    out, src = run_dir
    manifest = export_dataset(make_cfg(out, **{"export.window_turns": 3}), "trl", tmp_path / "w")
    rows = {r["sample_id"]: r for r in _rows(_load(tmp_path / "w", manifest))}
    assert set(rows) == {"t1-w0", "t1-w1", "t2-w0", "t2-w1", "t4-w0", "t5-w0"}
    for tid in ("t1", "t2"):
        w0, w1 = rows[f"{tid}-w0"], rows[f"{tid}-w1"]
        assert w0["n_windows"] == w1["n_windows"] == 2
        # no assistant turn lost or duplicated, and none split from its tool result
        src_calls = [t["tool_call_id"] for t in src["turns"][tid] if t["role"] == "assistant"]
        got = [m["tool_calls"][0]["id"] for w in (w0, w1) for m in w["messages"] if m["role"] == "assistant"]
        assert got == src_calls
        for w in (w0, w1):
            assert sum(m["role"] == "assistant" for m in w["messages"]) <= 3
            assert w["messages"][0]["content"] == SYSTEM
            assert w["messages"][-1]["role"] == "assistant"  # ends on a trained turn
    # t2 had a rollout context summary before its 4th call: window 1 opens with it
    opened = rows["t2-w1"]["messages"][1]["content"]
    assert opened.startswith(QUESTIONS["q2"][0])
    assert "[Context summary] The engineer is Petra Vell" in opened
    assert rows["t2-w1"]["messages"][1]["loss_weight"] == 0.0
    # t1 had none: deterministic summary of the three earlier calls and what they returned
    opened = rows["t1-w1"]["messages"][1]["content"]
    assert SUMMARY_HEADER in opened
    assert '1. search(k=5, query="Acme Lenses founder") -> 1. Acme Lenses - founded by Jon Brandt' in opened
    assert '3. visit(title="Selmar") -> Selmar is a city on the river Varno.' in opened
    assert manifest["counts"]["windows"] == {"windowed_trajectories": 2, "context_summary": 1, "deterministic": 1}
    assert manifest["windowing"]["window_turns"] == 3


@pytest.mark.parametrize("mode", ["keep", "drop", "shorten"])
def test_reasoning_modes(run_dir, make_cfg, tmp_path, mode):
    out, src = run_dir
    cfg = make_cfg(out, **{"export.reasoning": mode, "export.reasoning_max_chars": 80})
    manifest = export_dataset(cfg, "trl", tmp_path / mode)
    rows = _rows(_load(tmp_path / mode, manifest))
    assert manifest["reasoning"]["mode"] == mode
    for r in rows:
        turns = [t for t in src["turns"][r["trajectory_id"]] if t["role"] == "assistant"]
        got = [m["reasoning_content"] for m in r["messages"] if m["role"] == "assistant"]
        for g, t in zip(got, turns, strict=True):
            if mode == "keep":
                assert g == t["reasoning"]
            elif mode == "drop":
                assert g is None
            elif t["reasoning"] is None or len(t["reasoning"]) <= 80:
                assert g == t["reasoning"]
            else:
                assert len(g) <= 80 and " [...] " in g
                assert t["reasoning"].startswith(g.split(" [...] ")[0])
                assert t["reasoning"].endswith(g.split(" [...] ")[1])
    if mode == "shorten":
        assert manifest["reasoning"]["max_chars"] == 80
        assert manifest["counts"]["reasoning_chars"]["exported"] < manifest["counts"]["reasoning_chars"]["source"]


def test_shorten_reasoning_cuts_at_words():
    text = "plan: find the founder first " + "middle " * 50 + "so the answer is Varno"
    short = shorten_reasoning(text, 60)
    assert len(short) <= 60
    assert short.startswith("plan: find the") and short.endswith("answer is Varno")
    assert shorten_reasoning("short", 60) == "short"


# ---------------------------------------------------------------- ShareGPT and OpenAI


def test_sharegpt_layout(run_dir, make_cfg, tmp_path):
    out, src = run_dir
    manifest = export_dataset(make_cfg(out), "sharegpt", tmp_path / "sg")
    rows = {r["trajectory_id"]: r for r in _rows(_load(tmp_path / "sg", manifest))}
    conv = rows["t1"]["conversations"]
    assert [c["from"] for c in conv] == ["system", "human"] + ["function_call", "observation"] * 3 + ["function_call"]
    call = conv[2]["value"]
    thought, body = call.split("</think>\n")
    assert thought == "<think>\nThe founder is the first hop. Search for the company.\n"
    assert json.loads(body) == {"name": "search", "arguments": {"k": 5, "query": "Acme Lenses founder"}}
    assert json.loads(conv[6]["value"]) == {"name": "visit", "arguments": {"title": "Selmar"}}  # no thinking
    assert conv[3]["value"] == src["turns"]["t1"][3]["content"]
    assert [c["loss_weight"] for c in conv if c["from"] in {"system", "human", "observation"}] == [0.0] * 5
    assert json.loads(rows["t1"]["tools"]) == TOOL_SCHEMAS


def test_openai_jsonl_is_the_fine_tuning_format(run_dir, make_cfg, tmp_path):
    out, _ = run_dir
    dest = tmp_path / "oa"
    manifest = export_dataset(make_cfg(out, **{"export.validation_fraction": 0.5}), "openai-jsonl", dest)
    lines = [orjson.loads(ln) for s in ("train", "validation") for ln in (dest / f"{s}.jsonl").read_bytes().splitlines()]
    assert len(lines) == sum(manifest["counts"]["samples"].values()) == 4
    for ex in lines:
        assert set(ex) == {"messages", "tools"} and ex["tools"] == TOOL_SCHEMAS
        ids = set()
        for m in ex["messages"]:
            assert None not in m.values() or m["role"] == "assistant"  # content may be null beside tool_calls
            if m["role"] == "assistant":
                assert m["weight"] in (0, 1)
                for tc in m["tool_calls"]:
                    ids.add(tc["id"])
                    assert isinstance(tc["function"]["arguments"], str)
            else:
                assert "weight" not in m
            if m["role"] == "tool":
                assert m["tool_call_id"] in ids
    t2 = next(ex for ex in lines if ex["messages"][1]["content"] == QUESTIONS["q2"][0])
    weights = [m["weight"] for m in t2["messages"] if m["role"] == "assistant"]
    assert weights == [1, 1, 1, 0, 1, 1]  # the harmful call is not trained on
    assert t2["messages"][2]["content"].startswith("<think>\nFind the engineer.\n</think>")
    # the Parquet shards hold the same rows and load with datasets
    assert sum(len(s) for s in _load(dest, manifest).values()) == 4


# ---------------------------------------------------------------- manifest, safety, failures


def test_manifest_records_provenance_and_no_secrets(run_dir, make_cfg, tmp_path, monkeypatch):
    out, _ = run_dir
    monkeypatch.setenv("HF_TOKEN", "hf_supersecret_token_123")
    cfg = make_cfg(out, **{"teacher.api_key": "sk-secret-key-456", "export.window_turns": 4})
    dest = tmp_path / "m"
    manifest = export_dataset(cfg, "trl", dest)
    on_disk = json.loads((dest / MANIFEST_NAME).read_text())
    assert on_disk["counts"] == manifest["counts"]
    assert on_disk["format"] == "trl" and on_disk["config_hash"] == cfg.config_hash()
    assert on_disk["hopforge_version"] and on_disk["source"]["runs"]["kept"] == ["rtest"]
    assert on_disk["source"]["config_hashes"] == ["testhash"]
    assert on_disk["windowing"]["window_turns"] == 4 and on_disk["reasoning"]["mode"] == "keep"
    for f in dest.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert b"sk-secret-key-456" not in data and b"hf_supersecret" not in data, f


def test_unknown_format_and_non_empty_destination_are_refused(run_dir, make_cfg, tmp_path):
    out, _ = run_dir
    cfg = make_cfg(out)
    with pytest.raises(StorageError, match="unknown export format 'alpaca'"):
        export_dataset(cfg, "alpaca", tmp_path / "x")
    dest = tmp_path / "d"
    export_dataset(cfg, "trl", dest)
    before = sorted(p.name for p in (dest / "data").iterdir())
    with pytest.raises(StorageError, match="not empty; pass --overwrite"):
        export_dataset(cfg, "sharegpt", dest)
    assert json.loads((dest / MANIFEST_NAME).read_text())["format"] == "trl"
    assert sorted(p.name for p in (dest / "data").iterdir()) == before
    assert export_dataset(cfg, "sharegpt", dest, overwrite=True)["format"] == "sharegpt"


def test_destinations_that_are_not_exports_are_never_replaced(run_dir, make_cfg, tmp_path):
    out, _ = run_dir
    cfg = make_cfg(out)
    for dest, msg in ((out, "contains the data directory"), (tmp_path, "contains the data directory"),
                      (out / "turns", "is the 'turns' table")):
        with pytest.raises(StorageError, match=msg):
            export_dataset(cfg, "trl", dest, overwrite=True)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    with pytest.raises(StorageError, match="not a hopforge export"):
        export_dataset(cfg, "trl", notes, overwrite=True)
    assert (notes / "keep.txt").read_text() == "mine"
    assert (out / "turns" / "_manifest.jsonl").exists()


def test_failure_midway_keeps_the_previous_export_and_leaves_no_staging(run_dir, make_cfg, tmp_path, monkeypatch):
    out, _ = run_dir
    cfg = make_cfg(out)
    dest = tmp_path / "d"
    export_dataset(cfg, "trl", dest)
    manifest_before = (dest / MANIFEST_NAME).read_bytes()

    def boom(msgs):
        raise RuntimeError("formatter crashed")

    monkeypatch.setitem(export_mod.FORMATTERS, "trl", boom)
    with pytest.raises(RuntimeError, match="formatter crashed"):
        export_dataset(cfg, "trl", dest, overwrite=True)
    assert (dest / MANIFEST_NAME).read_bytes() == manifest_before
    assert [p.name for p in tmp_path.iterdir() if "staging" in p.name or "previous" in p.name] == []


def test_export_of_a_missing_data_dir_names_it(make_cfg, tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        export_dataset(make_cfg(tmp_path / "nope"), "trl", tmp_path / "d")


# ---------------------------------------------------------------- push to hub (never the network)


class FakeHfApi:
    """Records calls and 'uploads' into a local directory, like a Hub dataset repo would hold the files."""

    def __init__(self, hub: Path, token: str | None = None) -> None:
        self.hub, self.token, self.calls = hub, token, []

    def create_repo(self, *, repo_id, repo_type, private, exist_ok):
        self.calls.append(("create_repo", repo_id, repo_type, private, exist_ok))
        return f"https://huggingface.co/datasets/{repo_id}"

    def upload_folder(self, *, folder_path, repo_id, repo_type, commit_message, ignore_patterns):
        self.calls.append(("upload_folder", repo_id, repo_type, commit_message))
        target = self.hub / repo_id
        shutil.copytree(folder_path, target, ignore=shutil.ignore_patterns(*ignore_patterns), dirs_exist_ok=True)
        return type("CommitInfo", (), {"oid": "abc123"})()


def test_push_to_hub_uploads_the_export_folder(run_dir, make_cfg, tmp_path):
    out, _ = run_dir
    dest = tmp_path / "d"
    manifest = export_dataset(make_cfg(out, **{"export.validation_fraction": 0.5}), "trl", dest)
    api = FakeHfApi(tmp_path / "hub")
    result = push_to_hub(dest, "someone/hopforge-demo", api=api, private=True)
    assert api.calls[0] == ("create_repo", "someone/hopforge-demo", "dataset", True, True)
    assert api.calls[1][:3] == ("upload_folder", "someone/hopforge-demo", "dataset")
    assert result["commit"] == "abc123" and result["repo_url"].endswith("someone/hopforge-demo")
    # what landed in the "repo" loads back as the same dataset
    pushed = tmp_path / "hub" / "someone/hopforge-demo"
    assert len(_rows(_load(pushed, manifest))) == len(_rows(_load(dest, manifest)))


def test_push_to_hub_real_client_path_reads_hf_token_and_never_logs_it(run_dir, make_cfg, tmp_path, monkeypatch,
                                                                         caplog):
    import huggingface_hub

    out, _ = run_dir
    dest = tmp_path / "d"
    export_dataset(make_cfg(out), "trl", dest)
    made = []

    def fake_ctor(token=None):
        api = FakeHfApi(tmp_path / "hub", token)
        made.append(api)
        return api

    monkeypatch.setattr(huggingface_hub, "HfApi", fake_ctor)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(StorageError, match="HF_TOKEN"):
        push_to_hub(dest, "someone/x")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_from_env")
    with caplog.at_level(logging.DEBUG):
        result = push_to_hub(dest, "someone/x")
    assert made[0].token == "hf_secret_from_env"
    assert "hf_secret_from_env" not in caplog.text and "hf_secret_from_env" not in json.dumps(result)
    with pytest.raises(StorageError, match="not an export directory"):
        push_to_hub(tmp_path, "someone/x", api=FakeHfApi(tmp_path / "hub"))


# ---------------------------------------------------------------- CLI


def test_cli_export_writes_dataset_and_card(run_dir, tmp_path):
    out, _ = run_dir
    dest = tmp_path / "cli"
    res = CliRunner().invoke(app, ["export", "--out", str(out), "--dest", str(dest), "--format", "sharegpt",
                                   "--window-turns", "3"])
    assert res.exit_code == 0, res.output
    assert "exported" in res.output and (dest / "README.md").is_file()
    manifest = json.loads((dest / MANIFEST_NAME).read_text())
    assert manifest["format"] == "sharegpt" and manifest["windowing"]["window_turns"] == 3
    res = CliRunner().invoke(app, ["export", "--out", str(out), "--dest", str(dest)])
    assert res.exit_code != 0 and isinstance(res.exception, StorageError)


# ---------------------------------------------------------------- real rollout output (rollout + filters stages)


def _real_run(tmp_path: Path, policy: Any, faults: Any = None, **over: Any):
    from hopforge.rollouts import run_rollouts
    from hopforge.testing.scripted import ScriptedServer
    from tests.rollouts.rollout_fixtures import rollout_cfg, write_wiki

    out = tmp_path / "out"
    write_wiki(out)
    with ScriptedServer(policy, faults=faults) as server:
        cfg = rollout_cfg(out, server.url, **over)
        run_rollouts(cfg)
    return cfg, out


@pytest.mark.parametrize("protocol", ["chat", "text"])
def test_real_rollouts_with_filters_and_labels_export_and_format(tmp_path, protocol):
    from hopforge.filters import run_filters
    from hopforge.labels.stage import run_labels
    from hopforge.stage import resolve, selection_for
    from hopforge.storage import query_arrow
    from hopforge.testing.scripted import FaultPlan, OraclePolicy
    from tests.rollouts.rollout_fixtures import QUESTIONS as ROLLOUT_QUESTIONS

    cfg, out = _real_run(tmp_path, OraclePolicy(ROLLOUT_QUESTIONS), FaultPlan(schedule={3: "garbage"}),
                         **{"teacher.protocol": protocol, "rollout.retries": 4})
    run_filters(cfg)
    run_labels(cfg)
    sel = selection_for(resolve(cfg, "labels"))  # what the publish stage exports: this chain
    kept = {r["trajectory_id"] for r in query_arrow(out, "SELECT trajectory_id FROM kept", selection=sel).to_pylist()}
    assert kept
    manifest = export_dataset(cfg, "trl", tmp_path / "trl", include_rejected=True, selection=sel)
    rows = _rows(_load(tmp_path / "trl", manifest))
    src = query_arrow(out, "SELECT trajectory_id, turn_index, role, content, raw_output, tool_call_id, tool_name, "
                           "parse_error, loss_weight FROM turns ORDER BY trajectory_id, turn_index",
                      selection=sel).to_pylist()
    assert len(rows) == len({t["trajectory_id"] for t in src})
    parse_errors = substituted = 0
    for row in rows:
        tools = _check_trl_conversational(row)  # every tool message answers a call made before it
        _apply_chat_template(row["messages"], tools)
        turns = _trimmed([t for t in src if t["trajectory_id"] == row["trajectory_id"]])
        assert len(turns) == len(row["messages"])
        for m, t in zip(row["messages"], turns, strict=True):
            if t["role"] == "assistant":
                # labelled (kept) trajectories carry the label stage's weights; others the default,
                # except a call the parser rejected, which is never trained on
                default = 0.0 if t["parse_error"] else 1.0
                want = t["loss_weight"] if t["loss_weight"] is not None else default
                assert m["loss_weight"] == pytest.approx(want)
                if t["parse_error"] and not t["content"]:
                    assert m["content"] == (t["raw_output"] or "")
                    substituted += 1
                assert bool(m["tool_calls"]) == (t["tool_name"] is not None)
            else:
                assert m["loss_weight"] == 0.0
        for i, t in enumerate(turns):
            if t["parse_error"] and i + 1 < len(turns):
                parse_errors += 1
                # the rejected call's error message is sent back as a user turn, not an orphan tool result
                assert row["messages"][i + 1]["role"] == "user" and turns[i + 1]["role"] in {"tool", "user"}
    assert parse_errors >= 1
    assert substituted >= (1 if protocol == "chat" else 0)  # chat: bad JSON args, empty content
    from hopforge.publish.card import render_card

    card = render_card(cfg, tmp_path / "trl", selection=sel).read_text()
    assert "trajectories come from the scripted test teacher" in card
    assert f"| kept | {len(kept)} |" in card
    # rule labels without a judge are labels: the card must not call those turns unlabelled
    assert "| (rules only) |" in card and "(unlabelled)" not in card and "no turn label" not in card


def test_real_long_horizon_rollout_windows_start_where_the_teacher_summarized(tmp_path):
    from hopforge.stage import resolve, selection_for
    from hopforge.storage import query_arrow
    from hopforge.testing.scripted import LoopPolicy

    cfg, out = _real_run(tmp_path, LoopPolicy(10_000, titles=["Long page"]),
                         **{"teacher.context_tokens": 3000, "teacher.max_tokens": 64, "rollout.max_turns": 30,
                            "export.window_turns": 8})
    sel = selection_for(resolve(cfg, "rollouts"))
    summarized = query_arrow(out, "SELECT trajectory_id, tool_call_id FROM turns WHERE role = 'assistant' "
                                  "AND context_action = 'summarized'", selection=sel).to_pylist()
    assert summarized, "the rollout did not summarise its context; the fixture needs a longer horizon"
    manifest = export_dataset(cfg, "trl", tmp_path / "w", include_rejected=True, selection=sel)  # turn_limit: not kept
    assert manifest["source"]["runs"]["trajectories"] == [resolve(cfg, "rollouts").fingerprint]
    rows = _rows(_load(tmp_path / "w", manifest))
    first_call = {(r["trajectory_id"], r["window"]): next(m for m in r["messages"] if m["role"] == "assistant")
                  ["tool_calls"][0]["id"] for r in rows}
    for s in summarized:
        assert (s["trajectory_id"], s["tool_call_id"]) in {(k[0], v) for k, v in first_call.items() if k[1] > 0}
    for r in rows:
        assert sum(m["role"] == "assistant" for m in r["messages"]) <= 8
        _check_trl_conversational(r)
    assert manifest["counts"]["windows"]["context_summary"] >= len(summarized)


def test_cli_push_to_hub_flag_uses_hf_token_and_uploads(run_dir, tmp_path, monkeypatch):
    import huggingface_hub

    out, _ = run_dir
    made = []

    def fake_ctor(token=None):
        made.append(FakeHfApi(tmp_path / "hub", token))
        return made[-1]

    monkeypatch.setattr(huggingface_hub, "HfApi", fake_ctor)
    monkeypatch.setenv("HF_TOKEN", "hf_cli_secret")
    dest = tmp_path / "cli"
    res = CliRunner().invoke(app, ["export", "--out", str(out), "--dest", str(dest), "--push-to-hub", "me/ds"])
    assert res.exit_code == 0, res.output
    assert made[0].token == "hf_cli_secret" and "hf_cli_secret" not in res.output
    assert [c[0] for c in made[0].calls] == ["create_repo", "upload_folder"]
    assert made[0].calls[0][3] is True  # export.hub_private defaults to a private repo
    pushed = tmp_path / "hub" / "me/ds"
    assert (pushed / "README.md").is_file() and (pushed / MANIFEST_NAME).is_file()
    assert sorted(p.name for p in (pushed / "data").iterdir()) == sorted(p.name for p in (dest / "data").iterdir())


def test_exported_tools_are_the_tools_the_teacher_saw():
    from hopforge.rollouts.protocol import TOOLS

    assert TOOL_SCHEMAS is TOOLS
