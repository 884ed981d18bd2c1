"""Answer-correctness filter: normalised exact match, token F1, and an optional LLM judge.

The rule check compares the final answer with the question's answer and ALL its
aliases (:mod:`hopforge.text.answers`). When ``judge`` is given, every
non-empty answer the rules reject (a near miss: "JFK" for "John F. Kennedy" has
F1 0 but is right) is sent to the teacher once; its verdict and one-line
rationale go into the ``kept`` row or the reject's detail. A judge reply that
does not parse is never counted as correct; a request that fails stops the run
(nothing decided is lost, a re-run resumes) rather than rejecting for good.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from hopforge.errors import ModelOutputError, TeacherError
from hopforge.text.answers import answer_is_correct, match_answer
from hopforge.storage.episodes import Episode
from hopforge.filters.steps import KEEP, Decision, Filter
from hopforge.llm.client import TextClient


@dataclass(frozen=True)
class AnswerVerdict:
    verdict: str  # correct | incorrect | malformed
    rationale: str


ANSWER_JUDGE_PROMPT = """You grade answers to multi-hop trivia questions.
Question: {question}
Reference answer: {answer}
Accepted aliases: {aliases}
Candidate answer: {prediction}

Is the candidate the same entity or value as the reference (a different name, spelling or level of detail
for the same thing counts as correct; a different thing is incorrect)?
Reply with one line of JSON and nothing else: {{"verdict": "correct" or "incorrect", "rationale": "<one sentence>"}}"""

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


def parse_answer_verdict(text: str) -> AnswerVerdict:
    """Strictly parse the judge's JSON; raises :class:`ModelOutputError` on anything else."""
    body = _FENCE.sub("", text.strip())
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ModelOutputError(f"answer judge reply is not JSON ({e}): {text[:200]!r}") from None
    if not isinstance(data, dict) or data.get("verdict") not in ("correct", "incorrect"):
        raise ModelOutputError(f"answer judge reply lacks verdict correct|incorrect: {text[:200]!r}")
    rationale = data.get("rationale")
    if not isinstance(rationale, str) or not rationale.strip():
        raise ModelOutputError(f"answer judge reply lacks a rationale: {text[:200]!r}")
    return AnswerVerdict(data["verdict"], " ".join(rationale.split()))


def final_answer(episode: Episode) -> str:
    answer = episode.trajectory.get("final_answer")
    if answer:
        return answer
    for c in reversed(episode.calls()):
        if c.tool_name == "answer":
            return str(c.args.get("text") or "")
    return ""


class AnswerFilter(Filter):
    name = "answer"

    def __init__(self, f1_threshold: float, judge: TextClient | None = None, concurrency: int = 8,
                 judge_max_tokens: int = 128) -> None:
        super().__init__()
        self.f1_threshold = f1_threshold
        self.judge = judge
        self.concurrency = concurrency
        self.judge_max_tokens = judge_max_tokens
        self.judge_requests = 0

    def _rule(self, episode: Episode) -> dict[str, Any]:
        q = episode.question or {}
        prediction, answer, aliases = final_answer(episode), q.get("answer") or "", q.get("answer_aliases") or ()
        m = match_answer(prediction, answer, aliases)
        return {"exact": m.exact, "f1": m.f1, "matched": m.matched,
                "correct": answer_is_correct(prediction, answer, aliases, self.f1_threshold)}

    async def prepare(self, episodes: Sequence[Episode]) -> None:
        if self.judge is None:
            return
        near = [ep for ep in episodes
                if ep.question and final_answer(ep).strip() and not self._rule(ep)["correct"]]
        sem = asyncio.Semaphore(self.concurrency)

        async def one(ep: Episode) -> None:
            async with sem:
                ep.notes["answer_verdict"] = await self._ask(ep)

        await asyncio.gather(*(one(ep) for ep in near))

    async def _ask(self, ep: Episode) -> AnswerVerdict:
        q = ep.question or {}
        prompt = ANSWER_JUDGE_PROMPT.format(question=q.get("question"), answer=q.get("answer"),
                                            aliases="; ".join(q.get("answer_aliases") or []) or "(none)",
                                            prediction=final_answer(ep))
        self.judge_requests += 1
        try:
            text = await self.judge.complete_text([{"role": "user", "content": prompt}],  # type: ignore[union-attr]
                                                  max_tokens=self.judge_max_tokens, temperature=0.0)
        except Exception as e:
            # Rejections are final, so an unreachable judge must not reject near misses it would have
            # accepted: stop; decisions made so far are written and a re-run resumes from here.
            raise TeacherError(f"answer judge request failed for trajectory {ep.trajectory_id} "
                               f"({type(e).__name__}: {e}); re-run to resume") from e
        try:
            return parse_answer_verdict(text)
        except ModelOutputError as e:
            return AnswerVerdict("malformed", str(e)[:300])

    def filter(self, episode: Episode) -> Decision:
        if episode.question is None:
            return Decision(False, "question_missing", "no questions row for this trajectory")
        prediction = final_answer(episode)
        if not prediction.strip():
            return Decision(False, "empty_answer")
        rule = self._rule(episode)
        verdict: AnswerVerdict | None = episode.notes.get("answer_verdict")
        episode.notes["correctness"] = {
            "correct": rule["correct"] or (verdict is not None and verdict.verdict == "correct"),
            "f1": rule["f1"],
            "judge_verdict": verdict.verdict if verdict else None,
            "judge_rationale": verdict.rationale if verdict else None,
        }
        if episode.notes["correctness"]["correct"]:
            return KEEP
        detail = f"answer {prediction[:100]!r} vs {episode.question['answer']!r}: best f1 {rule['f1']:.2f}"
        if verdict:
            detail += f"; judge {verdict.verdict}: {verdict.rationale}"
        return Decision(False, "answer_mismatch", detail)
