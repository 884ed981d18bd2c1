"""LLM composer: a teacher model turns a walk's chain into one obfuscated question.

It uses only the teacher client contract (``async complete_text(messages, *,
max_tokens, temperature, stop)``), so any backend works: the CPU llama.cpp
server, vLLM, an OpenAI-compatible API, or a fake in tests. The prompt follows
the WebSailor / DeepDive recipe: the model sees every entity with its
description and the sentence that links it to the next one, and must write one
question whose answer is the final entity, naming no entity on the path and
blurring dates and names. Its output is parsed leniently (a "Question:" prefix,
quotes, surrounding chatter); anything still unusable is kept verbatim for the
``malformed`` check to reject with a reason.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from hopforge.synth.compose import Chain, Composed
from hopforge.synth.describe import describe, vague_dates

SYSTEM = (
    "You write hard multi-hop trivia questions for training web-search agents. You are given a chain of "
    "Wikipedia entities, each linked to the next by a sentence. Write ONE question in English whose only "
    "correct answer is the FINAL entity. Rules: never write the name of any entity in the chain (use "
    "descriptions instead); make every date vague (\"in the early 1990s\", \"the late 18th century\"); prefer "
    "partial or indirect descriptions over names; the question must require following every link in order; "
    "output only the question, on one line, ending with a question mark."
)


def render_chain(chain: Chain) -> str:
    """The user message: entities with descriptions, and the linking sentences."""
    lines = []
    for i, (title, page) in enumerate(zip(chain.titles, chain.pages, strict=True)):
        role = "START" if i == 0 else "ANSWER" if i == chain.hops else f"HOP {i}"
        desc, _ = describe(page, title, chain.scrub, n=2)
        lines.append(f"{role}: {title} -- {desc}")
        if i < chain.hops:
            ev = chain.evidence[i]
            if ev.get("sentence"):
                lines.append(f"  link to next ({ev.get('anchor') or ''}): {vague_dates(ev['sentence'])}")
    facts = "; ".join(f"{kv['key']} = {kv['value']}" for kv in chain.answer_facts[:8])
    if facts:
        lines.append(f"ANSWER facts: {facts}")
    lines.append("Write the question now.")
    return "\n".join(lines)


def parse_question(text: str) -> str:
    """The question in a model reply: drop thinking, labels and quotes; keep the first line with a '?'."""
    text = re.sub(r"<think>.*?</think>", "", text or "", flags=re.S).strip()
    lines = [ln.strip().strip('"“”').strip() for ln in text.splitlines() if ln.strip()]
    lines = [re.sub(r"^(?:\*\*)?(?:question|q)\s*[:.]\s*(?:\*\*)?\s*", "", ln, flags=re.I).strip('"“” ')
             for ln in lines]
    for ln in lines:
        if ln.endswith("?"):
            return ln
    return "\n".join(lines)  # the malformed check rejects it with the reason


class LLMComposer:
    """Composes with a teacher client; ``client_factory()`` returns an async context manager client."""

    def __init__(self, client_factory: Callable[[], AbstractAsyncContextManager[Any]], *, model: str,
                 max_tokens: int = 200, temperature: float = 0.7, concurrency: int = 16) -> None:
        self.client_factory = client_factory
        self.name = f"llm:{model}"
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.concurrency = concurrency

    @classmethod
    def from_factory(cls, factory: Callable[[], AbstractAsyncContextManager[Any]], **kw: Any) -> LLMComposer:
        return cls(factory, **kw)

    def compose(self, chains: list[Chain]) -> list[Composed]:
        return asyncio.run(self.acompose(chains))

    async def acompose(self, chains: list[Chain]) -> list[Composed]:
        sem = asyncio.Semaphore(self.concurrency)
        async with self.client_factory() as client:
            async def one(chain: Chain) -> Composed:
                messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": render_chain(chain)}]
                async with sem:
                    raw = await client.complete_text(messages, max_tokens=self.max_tokens,
                                                     temperature=self.temperature, stop=None)
                # The model's wording is free text; the ambiguity check compares the answer's head
                # feature (its short description or infobox type), which any faithful question conveys.
                _, clue = describe(chain.pages[-1], chain.titles[-1], chain.scrub, n=1)
                return Composed(question=parse_question(raw), answer=chain.answer, answer_type="entity",
                                composer=self.name, final_clue=clue[:1], raw=raw)

            return list(await asyncio.gather(*(one(c) for c in chains)))
