"""Turn judge: the teacher labels assistant turns essential / not_necessary / harmful (Nanbeige4.1 recipe).

Cost is one request per window of ``window`` assistant turns of a trajectory,
not one per turn: the prompt shows the question, its reference answer and path,
the transcript up to the window's last call and its observation (turns truncated to keep the prompt
small), and asks for one JSON object per assistant turn of the window.

Parsing is strict: a JSON array whose turn numbers are exactly the window's
assistant turns, each with a known label and a non-empty rationale. Anything
else (prose, a missing or extra turn, an unknown label, an unexpected client
error) makes the whole window fall back to the rule policy, and
``judge_rationale`` says why. A :class:`TeacherError` (the client gave up after
its retries) stops the run instead: labels written so far stay, a re-run resumes.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import orjson

from hopforge.errors import ModelOutputError, TeacherError
from hopforge.llm.client import TextClient
from hopforge.storage.episodes import Episode
from hopforge.labels.rules import (
    RULES_POLICY,
    apply_rules_policy,
    judge_policy_name,
    judge_weight,
    rule_labels,
)

LABELS = ("essential", "not_necessary", "harmful")
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")

JUDGE_PROMPT = """You review one window of a search agent's trajectory on a multi-hop question.
Question: {question}
Reference answer: {answer}
Reference path (hops the agent must find): {path}

Transcript (T<n> = turn n; long turns are cut):
{transcript}

Label every assistant turn among {turns}:
- essential: the step moves the search toward the answer (finds a hop, fixes an error, gives the answer);
- not_necessary: harmless but adds nothing (a repeat, a detour, a redundant lookup);
- harmful: an error, a wrong turn that misleads later steps, or a wrong answer.
Reply with a JSON array only, one object per listed turn, in order:
[{{"turn": <n>, "label": "essential" | "not_necessary" | "harmful", "rationale": "<one short sentence>"}}]"""


def _render_turn(t: dict[str, Any], chars: int) -> str:
    role = t.get("role")
    if role == "assistant" and t.get("tool_name"):
        args = {k: v for k, v in (t.get("tool_args") or {}).items() if v is not None}
        body = f"{(t.get('content') or '').strip()} CALL {t['tool_name']}({orjson.dumps(args).decode()})".strip()
    elif role == "assistant" and t.get("parse_error"):
        body = f"UNPARSEABLE CALL: {(t.get('raw_output') or t.get('content') or '')} ({t['parse_error']})"
    elif role == "tool" and t.get("error"):
        body = f"ERROR: {t['error']}"
    else:
        body = t.get("content") or ""
    body = " ".join(body.split())
    if len(body) > chars:
        body = body[: chars - 1] + "…"
    return f"T{t['turn_index']} [{role}] {body}"


def windows(episode: Episode, window: int) -> list[list[int]]:
    """Assistant turn indices, in consecutive groups of at most ``window``."""
    idx = [t["turn_index"] for t in episode.turns if t.get("role") == "assistant"]
    return [idx[i : i + window] for i in range(0, len(idx), window)]


def judge_prompt(episode: Episode, turns: Sequence[int], chars: int = 400, context_chars: int = 120,
                 context_turns: int = 40) -> str:
    """The prompt for one window. Turns before the window are context only: they are cut to
    ``context_chars`` and at most the last ``context_turns`` are shown, so late windows of a long
    trajectory still fit a small teacher's context."""
    q = episode.question or {}
    # Show the window's last call together with its observation: a call is judged by what it found.
    end = next((t["turn_index"] for t in episode.turns
                if t.get("role") == "assistant" and t["turn_index"] > turns[-1]), None)
    shown = [t for t in episode.turns if t.get("role") != "system" and (end is None or t["turn_index"] < end)]
    before = [t for t in shown if t["turn_index"] < turns[0]]
    inside = [t for t in shown if t["turn_index"] >= turns[0]]
    lines = []
    if len(before) > context_turns:
        lines.append(f"(… {len(before) - context_turns} earlier turns omitted)")
        before = before[-context_turns:]
    lines += [_render_turn(t, context_chars) for t in before]
    lines += [_render_turn(t, chars) for t in inside]
    return JUDGE_PROMPT.format(question=q.get("question"), answer=q.get("answer"),
                               path=" -> ".join(q.get("path") or []), transcript="\n".join(lines),
                               turns=", ".join(f"T{i}" for i in turns))


def parse_judge_output(text: str, turns: Sequence[int]) -> dict[int, tuple[str, str]]:
    """turn -> (label, rationale); raises :class:`ModelOutputError` on anything but the exact expected shape."""
    body = _FENCE.sub("", text.strip())
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ModelOutputError(f"not a JSON array ({e})") from None
    if not isinstance(data, list):
        raise ModelOutputError(f"expected a JSON array, got {type(data).__name__}")
    out: dict[int, tuple[str, str]] = {}
    for item in data:
        if not isinstance(item, dict) or set(item) != {"turn", "label", "rationale"}:
            raise ModelOutputError(f"item {str(item)[:80]!r} lacks exactly turn/label/rationale")
        turn, label, rationale = item["turn"], item["label"], item["rationale"]
        if not isinstance(turn, int) or isinstance(turn, bool) or turn in out:
            raise ModelOutputError(f"bad or repeated turn {turn!r}")
        if label not in LABELS:
            raise ModelOutputError(f"turn {turn}: unknown label {label!r}")
        if not isinstance(rationale, str) or not rationale.strip():
            raise ModelOutputError(f"turn {turn}: empty rationale")
        out[turn] = (label, " ".join(rationale.split())[:300])
    if set(out) != set(turns):
        missing, extra = sorted(set(turns) - set(out)), sorted(set(out) - set(turns))
        raise ModelOutputError(f"turns do not match the window: missing {missing}, unexpected {extra}")
    return out


class TurnJudge:
    """Labels episodes with the teacher; counts requests and fallbacks."""

    def __init__(self, client: TextClient, *, window: int, not_necessary_weight: float = 0.0,
                 max_tokens: int = 1024, turn_chars: int = 400) -> None:
        self.client = client
        self.window = window
        self.not_necessary_weight = not_necessary_weight
        self.max_tokens = max_tokens
        self.turn_chars = turn_chars
        self.requests = 0
        self.fallback_windows = 0

    async def label(self, episode: Episode) -> list[dict[str, Any]]:
        """Full ``turn_labels`` rows: rule labels plus the judge's label and weight per assistant turn."""
        labels = apply_rules_policy(episode, rule_labels(episode))
        by_turn = {row["turn_index"]: row for row in labels}
        policy = judge_policy_name(self.not_necessary_weight)
        for row in labels:  # non-assistant rows weigh 0 under either policy
            row["label_policy"] = policy
        for turns in windows(episode, self.window):
            self.requests += 1
            try:
                text = await self.client.complete_text(
                    [{"role": "user", "content": judge_prompt(episode, turns, self.turn_chars)}],
                    max_tokens=self.max_tokens, temperature=0.0)
                verdicts = parse_judge_output(text, turns)
            except TeacherError:
                raise  # the client gave up after its retries: stop rather than rule-label everything
            except Exception as e:  # noqa: BLE001 - any other failure of the judge means: use the rules
                self.fallback_windows += 1
                why = f"judge_fallback: {type(e).__name__}: {e}"[:300]
                for i in turns:
                    by_turn[i].update(judge_label=None, judge_rationale=why, label_policy=RULES_POLICY)
                continue
            for i, (label, rationale) in verdicts.items():
                row = by_turn[i]
                # A bad call the format filter masked never trains, whatever the judge thinks of it:
                # the student must not learn to emit malformed or failing calls.
                masked = row["valid_call"] is False or row["tool_error"] is True
                row.update(judge_label=label, judge_rationale=rationale,
                           loss_weight=0.0 if masked else judge_weight(label, self.not_necessary_weight))
        return labels

    async def label_many(self, episodes: Sequence[Episode], concurrency: int = 8) -> list[list[dict[str, Any]]]:
        sem = asyncio.Semaphore(concurrency)

        async def one(ep: Episode) -> list[dict[str, Any]]:
            async with sem:
                return await self.label(ep)

        return list(await asyncio.gather(*(one(ep) for ep in episodes)))
