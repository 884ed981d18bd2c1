"""Weighted SFT with TRL: a collator and an ``SFTTrainer`` that train with hopforge's per-turn loss weights.

TRL's stock ``SFTTrainer`` trains every assistant token alike; hopforge's labels say which turns a
student should learn from (``turn_labels.loss_weight``: 0 for a masked bad call, a redundant
repeat, a turn the judge called harmful). Here the loss is the weighted mean of the per-token
cross-entropy over the batch's tokens::

    loss = sum_i w_i * l_i / sum_i w_i

where ``l_i`` is the negative log-likelihood of token ``i`` given the tokens before it and ``w_i``
the ``loss_weights`` of that token (the turn's weight on its assistant tokens, 0 elsewhere). With
gradient accumulation the sum runs over every micro-batch of the optimizer step (the trainer
counts ``sum w_i`` over them, as transformers does for token counts), so the result does not
depend on how a batch is split. ``normalize="sequence"`` averages each sequence's weighted mean
instead (every conversation counts the same, however long).

Two inputs, one loss:

* the **tokens** export (``input_ids``, ``labels``, ``loss_weights`` per token) is padded as is;
* the **trl** messages export (``messages`` with ``loss_weight`` per message, ``tools``) is
  rendered and split on the fly with the tokenizer's chat template (:mod:`hopforge.publish.tokens`),
  so weights are computed per token the same way.

Example (the tokens export; docs/export.md has the full run)::

    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from hopforge.publish.trl import WeightedSFTTrainer, weighted_sft_config

    ds = load_dataset("parquet", data_files={"train": "exports/tokens/data/train-*.parquet"})["train"]
    trainer = WeightedSFTTrainer(model=AutoModelForCausalLM.from_pretrained(...),
                                 args=weighted_sft_config("out", max_steps=100),
                                 train_dataset=ds, processing_class=AutoTokenizer.from_pretrained(...))
    trainer.train()

torch, transformers and trl are imported here: install ``hopforge[train]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from trl import SFTConfig, SFTTrainer

from hopforge.publish.tokens import IGNORE_INDEX, TokenFormatter

Normalize = Literal["tokens", "sequence"]


def load_gguf_causal_lm(path: str | Path, dtype: Any = None) -> Any:
    """A trainable causal LM from a GGUF file (e.g. the CPU teacher's Gemma 3 270M).

    transformers dequantizes a GGUF's weights on load but still marks the model quantized, and the
    Trainer refuses to fine-tune a quantized model; the weights are plain tensors by then, so they
    are moved into a model built from the same config without the quantization marker."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    dtype = dtype or torch.float32
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings have no weight of their own in the state dict.
    if [m for m in missing if "lm_head" not in m] or unexpected:
        raise ValueError(f"{path}: weights do not match the architecture (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]})")
    model.tie_weights()
    return model


def weighted_sft_config(output_dir: str, **kwargs: Any) -> SFTConfig:
    """An ``SFTConfig`` for :class:`WeightedSFTTrainer`: the dataset is used as exported (no TRL
    tokenization, no column pruning: ``loss_weights`` and ``messages`` must reach the collator)."""
    kwargs.setdefault("report_to", "none")
    # TRL's default (1024) would silently cut long trajectories in the collator: cut only when asked.
    kwargs.setdefault("max_length", None)
    kwargs.setdefault("dataset_kwargs", {"skip_prepare_dataset": True})
    kwargs["remove_unused_columns"] = False
    return SFTConfig(output_dir=output_dir, **kwargs)


class WeightedCollator:
    """Pads rows of the tokens export, or renders rows of the messages export, into tensors:
    ``input_ids``, ``attention_mask``, ``labels`` (-100 on padding and non-assistant tokens) and
    ``loss_weights`` (0 on padding).

    ``max_length`` cuts sequences from the right (the end of a long trajectory is lost: export
    with ``--window-turns`` to keep every turn inside a student's context instead)."""

    def __init__(self, tokenizer: Any, *, max_length: int | None = None, chat_template: str | None = None,
                 pad_to_multiple_of: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        pad = tokenizer.pad_token_id if tokenizer is not None else None
        self.pad_id = pad if pad is not None else (tokenizer.eos_token_id if tokenizer is not None else 0) or 0
        self._chat_template = chat_template
        self._formatter: TokenFormatter | None = None

    def tokenize_messages(self, messages: Sequence[Mapping[str, Any]], what: str = "row") -> dict[str, list]:
        """One messages-export row's token columns (the weights from its messages' ``loss_weight``)."""
        if self._formatter is None:
            if self.tokenizer is None:
                raise ValueError("rows with `messages` need the tokenizer to render them")
            self._formatter = TokenFormatter(getattr(self.tokenizer, "name_or_path", "tokenizer"),
                                             self._chat_template, tokenizer=self.tokenizer)
        return self._formatter([dict(m) for m in messages], what=what)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        rows = []
        for i, f in enumerate(features):
            if "input_ids" in f and "loss_weights" in f:
                ids, labels, weights = list(f["input_ids"]), list(f["labels"]), list(f["loss_weights"])
            elif "messages" in f:
                t = self.tokenize_messages(f["messages"], what=str(f.get("sample_id") or f"row {i}"))
                ids, labels, weights = t["input_ids"], t["labels"], t["loss_weights"]
            else:
                raise ValueError(f"row {i} has neither input_ids + loss_weights (tokens export) nor messages "
                                 "(trl export)")
            if self.max_length:
                ids, labels, weights = ids[: self.max_length], labels[: self.max_length], weights[: self.max_length]
            rows.append((ids, labels, weights))
        width = max(len(r[0]) for r in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        n = len(rows)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
        weights = torch.zeros((n, width), dtype=torch.float32)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, (ids, lab, w) in enumerate(rows):
            k = len(ids)
            input_ids[i, :k] = torch.tensor(ids, dtype=torch.long)
            labels[i, :k] = torch.tensor(lab, dtype=torch.long)
            weights[i, :k] = torch.tensor(w, dtype=torch.float32)
            mask[i, :k] = 1
        # A token without a label has no loss, whatever its weight says.
        weights = weights * (labels != IGNORE_INDEX)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels, "loss_weights": weights}


def token_nll(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
              ) -> torch.Tensor:
    """Per-token negative log-likelihood, shape (batch, seq - 1): position j scores token j + 1.

    Uses TRL's fused LM head when the trainer patched the model with it (no (batch, seq, vocab)
    logits: Gemma's vocabulary has 262k entries), else the logits."""
    try:
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True,
                    use_cache=False)
        log_probs = getattr(out, "log_probs", None)
    except TypeError:
        log_probs = None
    if log_probs is not None:
        return -log_probs * (labels[:, 1:] != IGNORE_INDEX)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
    target = labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                                            target.clamp(min=0).reshape(-1), reduction="none")
    return nll.view_as(target) * (target != IGNORE_INDEX)


def weighted_loss(nll: torch.Tensor, weights: torch.Tensor, *, normalize: Normalize = "tokens",
                  denominator: torch.Tensor | float | None = None) -> torch.Tensor:
    """``sum(w * nll) / sum(w)`` over the batch (``normalize="tokens"``; ``denominator`` replaces
    ``sum(w)``, e.g. the sum over every micro-batch of an accumulated step), or the mean over
    sequences of each one's weighted mean (``"sequence"``). ``weights`` are per input token;
    token j + 1's weight goes with ``nll[:, j]``. A batch without weight gives a zero loss."""
    w = weights[:, 1:].to(nll.dtype)
    if normalize == "sequence":
        per_seq = (w * nll).sum(-1) / w.sum(-1).clamp(min=1e-12)
        has = (w.sum(-1) > 0).to(nll.dtype)
        return (per_seq * has).sum() / has.sum().clamp(min=1)
    total = (w * nll).sum()
    denom = w.sum() if denominator is None else torch.as_tensor(denominator, dtype=nll.dtype, device=nll.device)
    return total / denom.clamp(min=1e-12)


class WeightedSFTTrainer(SFTTrainer):
    """``SFTTrainer`` whose loss is the ``loss_weights``-weighted mean of the token NLL (module docstring).

    ``normalize``: ``"tokens"`` (default) or ``"sequence"``. The default collator is
    :class:`WeightedCollator` over ``processing_class`` (``max_length`` from the config)."""

    def __init__(self, *args: Any, normalize: Normalize = "tokens", **kwargs: Any) -> None:
        if normalize not in ("tokens", "sequence"):
            raise ValueError(f"normalize must be 'tokens' or 'sequence', got {normalize!r}")
        self.normalize = normalize
        cfg = kwargs.get("args")
        if cfg is not None:
            cfg.remove_unused_columns = False
            cfg.dataset_kwargs = {**(cfg.dataset_kwargs or {}), "skip_prepare_dataset": True}
        if kwargs.get("data_collator") is None:
            kwargs["data_collator"] = WeightedCollator(kwargs.get("processing_class"),
                                                       max_length=getattr(cfg, "max_length", None))
        super().__init__(*args, **kwargs)
        # "tokens": the loss is already divided by the step's whole sum of weights (below), so the
        # Trainer must not divide it again by the number of accumulated micro-batches.
        self.loss_is_scaled_for_ga = normalize == "tokens"

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | None:
        """The sum of the (shifted) weights over every micro-batch of the optimizer step."""
        if self.normalize != "tokens" or not batch_samples or "loss_weights" not in batch_samples[0]:
            return None
        total = sum(b["loss_weights"][:, 1:].sum() for b in batch_samples)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            total = self.accelerator.gather(total.to(device)).sum()
        return total.to(device)

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        weights = inputs.pop("loss_weights")
        nll = token_nll(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
        loss = weighted_loss(nll, weights, normalize=self.normalize,
                             denominator=num_items_in_batch if self.normalize == "tokens" else None)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None and self.normalize == "tokens":
            loss = loss * self.accelerator.num_processes
        mode = "train" if model.training else "eval"
        self._metrics[mode]["weighted_tokens"].append(float((weights[:, 1:] > 0).sum()))
        return (loss, {"nll": nll}) if return_outputs else loss
