"""The verifiable reward for RL on hopforge questions: 1.0 when the policy's final answer is correct,
else 0.0, by the very rule the correctness filter applies (:func:`hopforge.text.answers.answer_is_correct`:
normalised exact match or token F1 >= threshold, against the answer and every alias).

Usable from TRL's ``GRPOTrainer`` (``reward_funcs=[AnswerReward()]``: dataset columns arrive as
keyword lists) and from verl (``custom_reward_function.path=.../rewards.py``,
``custom_reward_function.name=compute_score``). The rows of ``hopforge export --format rl`` carry
everything both need: ``prompt``, ``answer``, ``answer_aliases``, ``f1_threshold`` and verl's
``data_source`` / ``reward_model`` / ``extra_info``.

The final answer is the completion's last ``answer`` call: a structured tool call (conversational
completions), a ``<tool_call>{"name": "answer", ...}</tool_call>`` block, the text protocol's
``Action: answer[...]``, or an ``<answer>...</answer>`` tag. A completion with none scores 0: a
policy that never calls ``answer`` did not answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from hopforge.text.answers import answer_is_correct

DEFAULT_F1_THRESHOLD = 0.8  # filters.f1_threshold's default; the RL export writes the chain's own

_TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)
_TEXT_ACTION = re.compile(r"^\s*Action:\s*answer\[(.*)\]\s*$", re.M)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)


def _args(raw: Any) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _from_text(text: str) -> str | None:
    found: list[tuple[int, str]] = []
    for m in _TOOL_CALL.finditer(text):
        try:
            call = json.loads(m.group(1))
        except ValueError:
            continue
        if isinstance(call, dict) and call.get("name") == "answer":
            t = _args(call.get("arguments")).get("text")
            if isinstance(t, str):
                found.append((m.start(), t))
    found += [(m.start(), m.group(1)) for m in _TEXT_ACTION.finditer(text)]
    found += [(m.start(), m.group(1)) for m in _ANSWER_TAG.finditer(text)]
    return max(found)[1].strip() if found else None


def extract_answer(completion: Any) -> str | None:
    """The final answer of a completion (a string, a message, or a list of messages), or None."""
    if completion is None:
        return None
    if isinstance(completion, str):
        return _from_text(completion)
    if isinstance(completion, Mapping):
        completion = [completion]
    answer = None
    for m in completion:
        if not isinstance(m, Mapping) or m.get("role", "assistant") != "assistant":
            continue
        for call in m.get("tool_calls") or []:
            fn = call.get("function") or {}
            if fn.get("name") == "answer":
                t = _args(fn.get("arguments")).get("text")
                if isinstance(t, str):
                    answer = t.strip()
        text = _from_text(m.get("content") or "")
        if text is not None:
            answer = text
    return answer


def answer_reward(completion: Any, answer: str, aliases: Sequence[str] | None = (),
                  f1_threshold: float = DEFAULT_F1_THRESHOLD) -> float:
    """1.0 when the completion's final answer is correct (the filter's rule), else 0.0."""
    prediction = extract_answer(completion)
    if prediction is None or not prediction.strip():
        return 0.0
    return 1.0 if answer_is_correct(prediction, answer, aliases or (), f1_threshold) else 0.0


class AnswerReward:
    """A TRL ``GRPOTrainer`` reward function: ``(prompts, completions, **columns) -> list[float]``.

    Reads the ``answer``, ``answer_aliases`` and ``f1_threshold`` columns of the RL export
    (``f1_threshold`` falls back to the one given here)."""

    __name__ = "hopforge_answer"

    def __init__(self, f1_threshold: float = DEFAULT_F1_THRESHOLD) -> None:
        self.f1_threshold = f1_threshold

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], *, answer: Sequence[str],
                 answer_aliases: Sequence[Sequence[str] | None] | None = None,
                 f1_threshold: Sequence[float | None] | None = None, **_: Any) -> list[float]:
        n = len(completions)
        aliases = answer_aliases if answer_aliases is not None else [()] * n
        thresholds = f1_threshold if f1_threshold is not None else [None] * n
        return [answer_reward(c, a, al or (), t if t is not None else self.f1_threshold)
                for c, a, al, t in zip(completions, answer, aliases, thresholds, strict=True)]


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None
                  ) -> float:
    """verl's custom reward function. ``ground_truth`` is the answer (``reward_model.ground_truth``);
    aliases and the threshold come from ``extra_info`` (the RL export fills both)."""
    info = extra_info or {}
    if isinstance(ground_truth, Mapping):
        answer, aliases = ground_truth.get("answer") or "", ground_truth.get("aliases") or ()
    else:
        answer, aliases = str(ground_truth), info.get("answer_aliases") or ()
    return answer_reward(solution_str, answer, aliases, float(info.get("f1_threshold") or DEFAULT_F1_THRESHOLD))
