"""Tests for src/hopforge/synth/compose_llm.py: the production composer against the scripted
OpenAI-compatible server (hopforge.testing.scripted), through the same checks as template output."""

from __future__ import annotations

from hopforge.llm.client import make_teacher
from hopforge.synth.compose_llm import LLMComposer, parse_question, render_chain, system_prompt
from hopforge.synth.questions import check_question, compose_batch, plan_questions
from hopforge.testing.scripted import Reply

from .conftest import chain_of, toy_config, toy_context

CLEAN = ["Aldmoor", "Brannock Abbey", "Cedric Vane", "Duskwater Press (publisher)"]


class Writer:
    """A scripted model: replies by the chain's answer (read from the prompt), recording prompts."""

    def __init__(self, replies: dict[str, str]) -> None:
        self.replies = replies
        self.prompts: list[str] = []

    def __call__(self, req):
        self.prompts.append(req.question)
        for answer, text in self.replies.items():
            if f"ANSWER: {answer} --" in req.question:
                return Reply(raw=text)
        return Reply(raw="I am not sure what to write here.")


def llm_cfg(out, **kw):
    return toy_config(out, **{"synth.composer": "llm", "teacher.backend": "scripted", "teacher.model": "writer-1",
                              "teacher.protocol": "chat", **kw})


def composer(cfg, writer, language="en"):
    return LLMComposer(lambda: make_teacher(cfg, policy=writer), model=cfg.teacher.model, max_tokens=120,
                       temperature=0.2, concurrency=2, language=language)


def run_one(cfg, titles, reply, language="en"):
    ctx, chain = chain_of(cfg, titles)
    writer = Writer({chain.answer: reply})
    (comp,) = composer(cfg, writer, language).compose([chain])
    results, cols = check_question(cfg, ctx, chain, comp)
    return writer, comp, {r.name: r for r in results}, cols


def test_prompt_has_the_plan_facts_and_evidence_and_a_good_question_passes(toy_out):
    cfg = llm_cfg(toy_out)
    good = ("<think>The answer is the press; I must not name it.</think>\n"
            "Question: \"Which company was founded by the fictional poet who painted a ruined monastery that a "
            "market town is home to?\"")
    writer, comp, res, cols = run_one(cfg, CLEAN, good)
    prompt = writer.prompts[0]
    assert "ANSWER: Duskwater Press (publisher) -- clues: a company" in prompt
    assert "fact: Cedric Vane founded Duskwater Press (publisher)" in prompt
    assert "stated as: founder: Cedric Vane" in prompt and "fact: Brannock Abbey was painted by Cedric Vane" in prompt
    assert prompt.endswith("Write the question now, in English.")
    assert comp.composer == "llm:writer-1" and comp.question.startswith("Which company was founded")
    assert all(r.passed for r in res.values()), {n: r.detail for n, r in res.items() if not r.passed}
    assert cols["candidates"] == 1 and cols["solvable"]


def test_leaking_outputs_are_rejected_like_template_ones(toy_out):
    cfg = llm_cfg(toy_out)
    _, _, res, cols = run_one(cfg, CLEAN, "Which of the Duskwater presses did the poet of the abbey found?")
    assert res["answer_leak"].reason == "answer_leaked" and cols["leaks"][0]["form"] == "inflection"
    _, _, res, _ = run_one(cfg, CLEAN, "Which company did the man who painted Brannock Abbey found?")
    assert res["answer_leak"].reason == "walk_entity_named"
    _, _, res, _ = run_one(cfg, CLEAN, "Sure, here is a question about the press.")
    assert res["malformed"].reason == "no_question_mark"


def test_a_whole_batch_through_the_scripted_server(toy_out):
    cfg = llm_cfg(toy_out, **{"synth.n_questions": 6, "synth.hops_min": 2, "synth.hops_max": 2})
    ctx = toy_context(cfg)
    (batch,) = plan_questions(cfg, ctx)
    writer = Writer({})  # every reply is chatter: six malformed questions, each with its reason
    rows, stats = compose_batch(cfg, ctx, batch, composer(cfg, writer))
    assert stats["questions"] == 6 and len(writer.prompts) == 6 and stats["passed"] == 0
    assert all(q["composer"] == "llm:writer-1" for q in rows["questions"])
    assert {r["reason"] for r in rows["rejects"] if r["step"] == "malformed"} == {"no_question_mark"}
    assert sum(r["step"] == "malformed" for r in rows["rejects"]) == 6


def test_question_in_the_dump_language(toy_out):
    cfg = llm_cfg(toy_out, **{"synth.language": "ltg"})
    assert "ONE question in Latgalian" in system_prompt("ltg")
    writer, comp, res, _ = run_one(cfg, CLEAN, "Which company was founded by the poet who painted the abbey?", "ltg")
    assert writer.prompts[0].endswith("Write the question now, in Latgalian.")
    assert comp.language == "ltg" and res["malformed"].reason == "wrong_language"
    _, comp, res, _ = run_one(cfg, CLEAN, "Kura izdevnīceiba beja dybynuota nu dzejnīka, kurs puorzeimēja kluosteri?",
                              "ltg")
    assert res["malformed"].passed


def test_parse_question_variants():
    assert parse_question("**Question:** What is it?") == "What is it?"
    assert parse_question("Here you go:\nWhich river is this?\nHope it helps") == "Which river is this?"
    assert parse_question("") == ""


def test_render_chain_without_clues_says_so(toy_out):
    _, chain = chain_of(toy_config(toy_out, **{"synth.min_clue_pages": 3}), CLEAN)
    assert "(no clue: say only what kind of thing it is)" in render_chain(chain)
