"""LLM composer: a teacher model turns a chain and its plan into one obfuscated question.

The production composer. It uses only the teacher client contract (``async
complete_text(messages, *, max_tokens, temperature, stop)``), so any backend works: the
CPU llama.cpp server, vLLM, an OpenAI-compatible API, or the scripted test server. The
prompt follows the WebSailor / DeepDive recipe: the model sees every entity with the clues
the plan allows (each fits several pages of the dump alone; together they fit only the
answer) and, per hop, the fact that links it to the next entity with the sentence stating
it. It must write one question in the dump's language whose answer is the final entity,
naming no entity of the chain. Its output is parsed leniently (a "Question:" prefix,
quotes, surrounding chatter) and then goes through exactly the checks template questions
go through: leaks in any form, one-shot and give-away retrieval, the certificate, the
offline replay and ``malformed`` (which also rejects a question in the wrong language).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from hopforge.synth.compose import Chain, Composed, entity_phrase
from hopforge.synth.describe import is_person, vague_dates

LANGUAGE_NAMES = {"en": "English", "ltg": "Latgalian", "lv": "Latvian", "lt": "Lithuanian", "de": "German",
                  "fr": "French", "es": "Spanish", "it": "Italian", "pt": "Portuguese", "nl": "Dutch", "pl": "Polish",
                  "ru": "Russian", "uk": "Ukrainian", "cs": "Czech", "sv": "Swedish", "fi": "Finnish", "et": "Estonian",
                  "ja": "Japanese", "zh": "Chinese", "ko": "Korean", "ar": "Arabic", "tr": "Turkish", "hi": "Hindi"}


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code.split("-")[0], f"the language with code {code!r}")


def system_prompt(language: str) -> str:
    lang = language_name(language)
    return (
        "You write hard multi-hop questions for training web-search agents. You are given a chain of "
        "entities from an encyclopedia, the only clues you may use for each, and the fact that relates each "
        f"entity to the next. Write ONE question in {lang} whose only correct answer is the FINAL entity. Rules: "
        "never write the name of any entity in the chain, nor a word derived from one (no plurals, adjectives "
        "or -isms of a name); describe each entity only by its clues; state every link as the fact given, "
        "never as \"its article links to\"; keep every date vague; the question must require following every "
        "fact in order; output only the question, on one line, ending with a question mark."
    )


def render_chain(chain: Chain, language: str = "en") -> str:
    """The user message: entities with their allowed clues, and the facts linking them."""
    plan = chain.plan
    assert plan is not None, "chains are planned before they are composed"
    lines = []
    for i, title in enumerate(chain.titles):
        role = "START" if i == 0 else "ANSWER" if i == chain.hops else f"HOP {i}"
        clues = "; ".join(c.text for c in plan.clues[i]) or "(no clue: say only what kind of thing it is)"
        lines.append(f"{role}: {title} -- clues: {clues} (in short: {entity_phrase(plan.clues[i], is_person(chain.pages[i]))})")
        if i < chain.hops:
            f = chain.facts[i]
            lines.append(f"  fact: {title} {f.phrase} {chain.titles[i + 1]}")
            if f.sentence:
                lines.append(f"  stated as: {vague_dates(f.sentence)}")
    lines.append(f"Write the question now, in {language_name(language)}.")
    return "\n".join(lines)


def parse_question(text: str) -> str:
    """The question in a model reply: drop thinking, labels and quotes; keep the first line with a '?'."""
    text = re.sub(r"<think>.*?</think>", "", text or "", flags=re.S).strip()
    lines = [ln.strip().strip('"“”').strip() for ln in text.splitlines() if ln.strip()]
    lines = [re.sub(r"^(?:\*\*)?(?:question|q|jautōjums|frage|question)\s*[:.]\s*(?:\*\*)?\s*", "", ln,
                    flags=re.I).strip('"“” ') for ln in lines]
    for ln in lines:
        if ln.endswith(("?", "？")):
            return ln
    return "\n".join(lines)  # the malformed check rejects it with the reason


class LLMComposer:
    """Composes with a teacher client; ``client_factory()`` returns an async context manager client."""

    def __init__(self, client_factory: Callable[[], AbstractAsyncContextManager[Any]], *, model: str,
                 max_tokens: int = 200, temperature: float = 0.7, concurrency: int = 16,
                 language: str = "en") -> None:
        self.client_factory = client_factory
        self.name = f"llm:{model}"
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.concurrency = concurrency
        self.language = language

    @classmethod
    def from_factory(cls, factory: Callable[[], AbstractAsyncContextManager[Any]], **kw: Any) -> LLMComposer:
        return cls(factory, **kw)

    def compose(self, chains: list[Chain]) -> list[Composed]:
        return asyncio.run(self.acompose(chains))

    async def acompose(self, chains: list[Chain]) -> list[Composed]:
        sem = asyncio.Semaphore(self.concurrency)
        async with self.client_factory() as client:
            async def one(chain: Chain) -> Composed:
                messages = [{"role": "system", "content": system_prompt(self.language)},
                            {"role": "user", "content": render_chain(chain, self.language)}]
                async with sem:
                    raw = await client.complete_text(messages, max_tokens=self.max_tokens,
                                                     temperature=self.temperature, stop=None)
                return Composed(question=parse_question(raw), answer=chain.answer, answer_type="entity",
                                composer=self.name, raw=raw, language=self.language)

            return list(await asyncio.gather(*(one(c) for c in chains)))
