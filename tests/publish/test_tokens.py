"""The tokenized export (src/hopforge/publish/tokens.py, export --format tokens) on a scripted-oracle
pipeline: every token carries its turn, labels are -100 outside the assistant's tokens, weights are
the turn's loss_weight on its assistant tokens; the spans add up to the full render; a template
without a tool role renders observations as user messages and says so; a template that cannot be
split is an error naming the trajectory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hopforge.cli import app
from hopforge.errors import ConfigError
from hopforge.filters import run_filters
from hopforge.labels.stage import run_labels
from hopforge.publish.export import export_dataset
from hopforge.publish.tokens import IGNORE_INDEX, TemplateError, TokenFormatter, chat_input
from hopforge.rollouts import run_rollouts
from hopforge.stage import resolve, selection_for
from hopforge.storage import query_arrow
from hopforge.testing.tokenizers import tiny_tokenizer
from tests.rollouts.rollout_fixtures import PAGES, QUESTIONS, rollout_cfg, write_wiki

pytest.importorskip("transformers")


def corpus() -> list[str]:
    return [*PAGES.values(), *(q["question"] for q in QUESTIONS), "search visit answer query title page text k",
            "Error: Call exactly one tool <tool_call> </tool_call> <tool_response> </tool_response> <think>"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The scripted oracle over the fixture wiki, filtered and labelled (2 kept trajectories)."""
    out = tmp_path_factory.mktemp("tokens") / "out"
    cfg = rollout_cfg(out)
    write_wiki(out, cfg=cfg)
    run_rollouts(cfg)
    run_filters(cfg)
    run_labels(cfg)
    return cfg, selection_for(resolve(cfg, "labels"))


@pytest.fixture(scope="module")
def chatml_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("chatml-tok")
    tiny_tokenizer(corpus(), save_to=d)
    return d


def labelled_turns(cfg, sel) -> dict[str, dict[int, dict]]:
    rows = query_arrow(cfg.run.out, "SELECT trajectory_id, turn_index, role, loss_weight, content FROM turns "
                                    "WHERE trajectory_id IN (SELECT trajectory_id FROM kept)", selection=sel).to_pylist()
    out: dict[str, dict[int, dict]] = {}
    for r in rows:
        out.setdefault(r["trajectory_id"], {})[r["turn_index"]] = r
    return out


def test_tokens_export_labels_weights_and_turns_per_token(pipeline, chatml_dir, tmp_path):
    cfg, sel = pipeline
    cfg = cfg.model_copy(update={"export": cfg.export.model_copy(update={"tokenizer": str(chatml_dir)})})
    dest = tmp_path / "tokens"
    manifest = export_dataset(cfg, "tokens", dest, selection=sel)
    tok = TokenFormatter(chatml_dir).tok
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files={"train": str(dest / "data" / "*.parquet")})["train"]
    assert len(ds) == 2 and manifest["counts"]["trajectories"] == 2
    turns = labelled_turns(cfg, sel)
    weighted = assistant = 0
    for row in ds:
        n = len(row["input_ids"])
        assert n == row["num_tokens"] == len(row["labels"]) == len(row["loss_weights"]) == len(row["turn_index"])
        tt = turns[row["trajectory_id"]]
        # Turn indices run in order over the whole row: every token belongs to one message.
        assert row["turn_index"] == sorted(row["turn_index"]) and set(row["turn_index"]) <= set(tt)
        for i in range(n):
            t = tt[row["turn_index"][i]]
            if row["labels"][i] == IGNORE_INDEX:
                assert row["loss_weights"][i] == 0.0
            else:
                assert t["role"] == "assistant" and row["labels"][i] == row["input_ids"][i]
                assert row["loss_weights"][i] == pytest.approx(t["loss_weight"])
        # Each assistant turn's labelled tokens decode to exactly what the model generates after the
        # role header: its text, its tool call, the end-of-turn marker.
        for idx, t in tt.items():
            if t["role"] != "assistant":
                continue
            ids = [row["labels"][i] for i in range(n) if row["turn_index"][i] == idx and row["labels"][i] != -100]
            text = tok.decode(ids)
            assert text.startswith(t["content"]) and text.endswith("</tool_call><|im_end|>\n"), text
            head = [row["input_ids"][i] for i in range(n) if row["turn_index"][i] == idx and row["labels"][i] == -100]
            assert tok.decode(head) == "<|im_start|>assistant\n"
        # Observations and prompts are never labelled; the whole row decodes to the template's render.
        obs = [i for i in range(n) if tt[row["turn_index"][i]]["role"] != "assistant"]
        assert obs and all(row["labels"][i] == IGNORE_INDEX for i in obs)
        assert tok.decode(row["input_ids"]).startswith("<|im_start|>system\n")
        weighted += sum(w > 0 for w in row["loss_weights"])
        assistant += sum(x != -100 for x in row["labels"])
    tm = manifest["tokens"]
    assert (tm["weighted_tokens"], tm["assistant_tokens"]) == (weighted, assistant) and 0 < weighted <= assistant
    assert tm["chat_template"]["tool_role"] is True and tm["chat_template"]["source"] == "the tokenizer's own"
    assert manifest["loss_weights"]["policies"] == {"rules-v1": sum(
        1 for tt in turns.values() for t in tt.values() if t["role"] == "assistant")}


def test_the_rendered_spans_add_up_to_the_full_render(pipeline, chatml_dir):
    cfg, sel = pipeline
    f = TokenFormatter(chatml_dir)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Which river?"},
            {"role": "assistant", "content": "Search.", "reasoning_content": "plan",
             "tool_calls": [{"id": "c1", "type": "function",
                             "function": {"name": "search", "arguments": '{"query": "Veloria"}'}}],
             "loss_weight": 0.5, "turn_index": 2},
            {"role": "tool", "content": "Veloria is a country.", "tool_call_id": "c1", "name": "search",
             "loss_weight": 0.0, "turn_index": 3},
            {"role": "assistant", "content": "Done.", "loss_weight": 0.0, "turn_index": 4}]
    for m, t in zip(msgs[:2], (0, 1)):
        m["turn_index"] = t
    row = f(msgs, what="hand-made")
    chat = chat_input(msgs, f.info)
    full = f.tok.apply_chat_template(chat.messages, tools=chat.tools, chat_template=f.template, tokenize=False)
    assert f.tok.decode(row["input_ids"]) == full
    by_turn = {t: f.tok.decode([x for x, ti in zip(row["input_ids"], row["turn_index"]) if ti == t]) for t in range(5)}
    assert "".join(by_turn[t] for t in range(5)) == full
    assert by_turn[2] == ('<|im_start|>assistant\n<think>\nplan\n</think>\nSearch.\n<tool_call>\n'
                          '{"name": "search", "arguments": {"query": "Veloria"}}\n</tool_call><|im_end|>\n')
    assert by_turn[3] == "<|im_start|>user\n<tool_response>\nVeloria is a country.\n</tool_response><|im_end|>\n"
    w = [x for x, t in zip(row["loss_weights"], row["turn_index"]) if t == 2 and x > 0]
    assert w and set(w) == {0.5} and not any(x for x, t in zip(row["loss_weights"], row["turn_index"]) if t != 2)
    # The weight-0 assistant turn is labelled (its tokens are the assistant's) but weighs 0.
    assert any(lab != -100 for lab, t in zip(row["labels"], row["turn_index"]) if t == 4)


def test_a_template_without_a_tool_role_gets_observations_as_user_messages(pipeline, tmp_path):
    cfg, sel = pipeline
    d = tmp_path / "gemma-like"
    tiny_tokenizer(corpus(), style="gemma", save_to=d)
    with pytest.raises(ConfigError, match="has no chat template; pass --chat-template"):
        TokenFormatter(d)
    f = TokenFormatter(d, "gemma3")
    assert (f.info.tool_role, f.info.tool_calls, f.info.tools_param) == (False, False, False)
    dest = tmp_path / "tokens"
    manifest = export_dataset(cfg, "tokens", dest, selection=sel, token_formatter=f)
    ct = manifest["tokens"]["chat_template"]
    assert ct["observations"] == "user messages in <tool_response> tags" and ct["source"].startswith("bundled gemma3")
    import pyarrow.parquet as pq

    row = pq.read_table(next((dest / "data").glob("*.parquet"))).to_pylist()[0]
    text = f.tok.decode(row["input_ids"])
    assert text.startswith("<bos><start_of_turn>user\nYou are a research agent") and "<tools>" in text
    assert "<start_of_turn>user\n<tool_response>\nSearch results for" in text
    assert '<start_of_turn>model\n' in text and "<tool_call>\n{\"name\": \"search\"" in text
    trained = f.tok.decode([x for x in row["labels"] if x != -100])
    assert "<tool_response>" not in trained and "<tool_call>" in trained and trained.endswith("<end_of_turn>\n")


def test_a_template_that_cannot_be_split_names_the_trajectory(pipeline, chatml_dir, tmp_path):
    cfg, sel = pipeline
    bad = tmp_path / "bad.jinja"
    # Renders a message count up front: no render is a prefix of the next one.
    bad.write_text("{{ messages | length }}\n{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")
    f = TokenFormatter(chatml_dir, str(bad))
    kept = query_arrow(cfg.run.out, "SELECT min(trajectory_id) AS t FROM kept", selection=sel).to_pylist()[0]["t"]
    with pytest.raises(TemplateError, match=f"trajectory {kept} window 0: the chat template cannot be split"):
        export_dataset(cfg, "tokens", tmp_path / "x", selection=sel, token_formatter=f)
    assert not (tmp_path / "x").exists()


def test_cli_tokens_export(pipeline, chatml_dir, tmp_path):
    cfg, _ = pipeline
    conf = tmp_path / "c.toml"
    conf.write_text('[run]\nrun_id = "test"\n[graph]\ndump = "fixture-wiki.xml"\n'
                    '[teacher]\nbackend = "scripted"\nmodel = "scripted"\n[rollout]\nflush_every = 2\n'
                    'retry_base_s = 0.01\nretry_max_s = 0.05\nrequest_timeout_s = 2.0\n', encoding="utf-8")
    dest = tmp_path / "exp"
    r = CliRunner().invoke(app, ["export", "--config", str(conf), "--out", str(cfg.run.out), "--dest", str(dest),
                                 "--format", "tokens", "--tokenizer", str(chatml_dir)])
    assert r.exit_code == 0, r.output
    m = json.loads((dest / "export_manifest.json").read_text())
    assert m["format"] == "tokens" and m["counts"]["trajectories"] == 2 and m["tokens"]["weighted_tokens"] > 0
    r = CliRunner().invoke(app, ["export", "--config", str(conf), "--out", str(cfg.run.out), "--dest",
                                 str(tmp_path / "none"), "--format", "tokens"])
    assert isinstance(r.exception, ConfigError) and "needs a tokenizer: --tokenizer PATH_OR_GGUF" in str(r.exception)


def test_the_card_says_the_weights_policy_the_weighted_tokens_and_how_to_train(pipeline, chatml_dir, tmp_path):
    from hopforge.publish.card import render_card

    cfg, sel = pipeline
    f = TokenFormatter(chatml_dir)
    dest = tmp_path / "tokens"
    m = export_dataset(cfg, "tokens", dest, selection=sel, token_formatter=f)
    card = render_card(cfg, dest, selection=sel).read_text()
    n_assistant = sum(m["loss_weights"]["policies"].values())
    assert f"Weights policy: **rules-v1** ({n_assistant} assistant turns)." in card
    assert (f"**{m['tokens']['weighted_tokens']}** of {m['tokens']['assistant_tokens']} assistant tokens carry "
            "weight > 0") in card
    assert "from hopforge.publish.trl import WeightedSFTTrainer, weighted_sft_config" in card
    assert "Tool results are tool messages" in card
    # The snippet in the card runs as written (with the model and tokenizer names filled in).
    snippet = card.split("```python\n", 2)[2].split("```", 1)[0]
    assert "WeightedSFTTrainer(model=model, processing_class=tok, train_dataset=ds" in snippet
    # A messages export counts the weighted tokens by the teacher's tokenizer.
    dest2 = tmp_path / "trl"
    m2 = export_dataset(cfg, "trl", dest2, selection=sel)
    card2 = render_card(cfg, dest2, selection=sel).read_text()
    c = m2["counts"]
    assert 0 < c["teacher_weighted_assistant_tokens"] <= c["teacher_assistant_tokens"]
    assert f"**{c['teacher_weighted_assistant_tokens']}** of {c['teacher_assistant_tokens']} assistant" in card2


def test_the_publish_stage_writes_the_tokens_export_of_its_config(pipeline, chatml_dir):
    from hopforge.publish.stage import export_dir, run_publish

    cfg, _ = pipeline
    tcfg = cfg.model_copy(update={"export": cfg.export.model_copy(update={"format": "tokens",
                                                                          "tokenizer": str(chatml_dir)})})
    assert resolve(tcfg, "publish").fingerprint != resolve(cfg, "publish").fingerprint
    stats = run_publish(tcfg)
    m = json.loads((export_dir(tcfg) / "export_manifest.json").read_text())
    assert stats.format == "tokens" and m["format"] == "tokens" and m["tokens"]["tokenizer"] == str(chatml_dir)
    assert export_dir(tcfg) == Path(cfg.run.out) / "export" / "tokens" and stats.trajectories == 2
