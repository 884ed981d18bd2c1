"""A tiny real tokenizer for tests of the tokenized export and the weighted trainer: byte-level BPE
trained in a second on the given texts, with ChatML or Gemma special tokens and a chat template.

Real in every way that matters to the export (a transformers fast tokenizer with offsets, special
tokens matched in text, a Jinja chat template), small enough to build per test, and it needs no
download. The Gemma 3 GGUF's own tokenizer is used by the slow tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

# ChatML with Hermes-style tools: a tool role, structured tool calls, reasoning_content, a tools list.
CHATML_TOOLS_TEMPLATE = (
    "{%- if tools -%}"
    "{{- '<|im_start|>system\\n' + (messages[0].content if messages and messages[0].role == 'system' else '')"
    " + '\\n\\n# Tools\\n<tools>' -}}"
    "{%- for t in tools -%}{{- '\\n' + (t | tojson) -}}{%- endfor -%}"
    "{{- '\\n</tools><|im_end|>\\n' -}}"
    "{%- elif messages and messages[0].role == 'system' -%}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'user' -%}{{- '<|im_start|>user\\n' + m.content + '<|im_end|>\\n' -}}"
    "{%- elif m.role == 'assistant' -%}{{- '<|im_start|>assistant\\n' -}}"
    "{%- if m.reasoning_content -%}{{- '<think>\\n' + m.reasoning_content + '\\n</think>\\n' -}}{%- endif -%}"
    "{{- m.content -}}"
    "{%- for c in m.tool_calls or [] -%}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' + c.function.name + '\", \"arguments\": ' + (c.function.arguments | tojson)"
    " + '}\\n</tool_call>' -}}"
    "{%- endfor -%}{{- '<|im_end|>\\n' -}}"
    "{%- elif m.role == 'tool' -%}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + m.content + '\\n</tool_response><|im_end|>\\n' -}}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"]


def tiny_tokenizer(texts: Iterable[str], *, style: str = "chatml", vocab_size: int = 600,
                   save_to: str | Path | None = None) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts``.

    ``style="chatml"`` sets :data:`CHATML_TOOLS_TEMPLATE`; ``style="gemma"`` has Gemma's special
    tokens and no chat template (like the Gemma 3 GGUF: pass the bundled ``gemma3`` template)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = CHATML_SPECIALS if style == "chatml" else GEMMA_SPECIALS
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(list(texts), trainer)
    if style == "chatml":
        tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                      additional_special_tokens=specials[1:])
        tok.chat_template = CHATML_TOOLS_TEMPLATE
    else:
        tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                      additional_special_tokens=specials[3:])
    if save_to is not None:
        tok.save_pretrained(str(save_to))
    return tok
