"""Tests for src/hopforge/synth/compose_llm.py with an in-test fake teacher (the complete_text contract)."""

from __future__ import annotations

from contextlib import asynccontextmanager

from tests.synth.conftest import path_of

from hopforge.synth.checks import run_checks
from hopforge.synth.compose_llm import LLMComposer, parse_question, render_chain
from hopforge.synth.graph_view import GraphView
from hopforge.synth.questions import chains_from_paths


class FakeTeacher:
    """Answers from a list of canned replies, recording the prompts it saw."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.calls = []

    async def complete_text(self, messages, *, max_tokens, temperature, stop=None):
        self.calls.append((messages, max_tokens, temperature))
        return self.replies.pop(0)


def _composer(fake):
    @asynccontextmanager
    async def factory():
        yield fake

    return LLMComposer(factory, model="fake-1", max_tokens=77, temperature=0.3, concurrency=2)


def test_llm_composer_prompt_parse_and_checks(toy_out):
    view = GraphView.load(toy_out)
    path = ["Aldmoor", "Brannock Abbey", "Cedric Vane", "Duskwater Press (publisher)"]
    chains, pages = chains_from_paths(view, [path_of(view, path)] * 3, seed=0)
    fake = FakeTeacher([
        "<think>let me see</think>Question: \"Which publishing house did a poet inspired by ruins near a "
        "Westshire market town help found in the early 1920s?\"",
        "Sure, here is a question about Duskwater Press (publisher).",
        "Which press published the collections of the poet inspired by Brannock Abbey?",
    ])
    out = _composer(fake).compose(chains)
    messages, max_tokens, temperature = fake.calls[0]
    assert max_tokens == 77 and temperature == 0.3 and messages[0]["role"] == "system"
    user = messages[1]["content"]
    assert "ANSWER: Duskwater Press (publisher)" in user
    assert "His collections were issued by Duskwater Press, which he co-founded." in user
    assert out[0].composer == "llm:fake-1"
    assert out[0].question.startswith("Which publishing house") and out[0].question.endswith("?")
    results = [{r.name: r for r in run_checks(c, ch, view, pages)} for c, ch in zip(out, chains, strict=True)]
    assert results[0]["malformed"].passed and results[0]["answer_leak"].passed
    assert results[1]["malformed"].reason == "no_question_mark"
    assert results[1]["answer_leak"].reason == "answer_leaked"
    assert results[2]["answer_leak"].reason == "walk_entity_named"


def test_parse_question_variants():
    assert parse_question("**Question:** What is it?") == "What is it?"
    assert parse_question("Here you go:\nWhich river is this?\nHope it helps") == "Which river is this?"
    assert parse_question("") == ""


def test_render_chain_obfuscates_descriptions(toy_out):
    view = GraphView.load(toy_out)
    chains, _ = chains_from_paths(view, [path_of(view, ["Harrow Lane Poets", "Cedric Vane"])], seed=0)
    text = render_chain(chains[0])
    assert "active from the early 1910s to the early 1930s" in text
