"""Rule labels per turn and the loss-weight policies.

Rule labels (every turn gets a row; a label that does not apply is null):

* ``valid_call`` (assistant turns with a call): it parses, names a real tool, and its arguments are valid.
* ``tool_error``: assistant turn: its call failed (parse error or an error observation);
  tool turn (or the user turn carrying an unparsed call's error): the observation is an error.
* ``novel_query`` (search/visit calls): the normalised query or page was not asked before;
  False marks a repeat.
* ``progress`` (calls and observations): the observation reveals a hop entity of the
  question's path (a title from ``path[1:]``) or a hop's evidence sentence not revealed
  before. Any unrevealed hop counts, not only the next one, since agents may find hop 3
  before hop 2 from one search result page.
* ``redundant``: the observation adds no new information (every line of it was seen
  before), or the call repeats an earlier one.
* ``recovery`` (assistant calls): a valid, successful call made while an earlier error
  is still unanswered, i.e. the turn that fixes it.

Policies turning labels into ``loss_weight`` (observations, tool, system and user turns
always weigh 0, they are not the model's output):

* ``rules-v1``: an assistant call weighs 1 when it is valid, did not fail, is not a
  repeat, and either makes progress or brings new information (a recovery qualifies
  by the same test); the final ``answer`` call weighs 1 when valid; everything else 0.
* ``judge-v1``: essential 1, not_necessary ``not_necessary_weight`` (0 by default, the
  Nanbeige4.1 recipe masks them), harmful 0. A window whose judge output is malformed
  falls back to ``rules-v1`` for its turns, and says so in ``judge_rationale``. A bad call
  (invalid, or failed) weighs 0 under either policy: the format filter keeps trajectories
  that recovered from such calls precisely because the labels mask them.
"""

from __future__ import annotations

import re
from typing import Any

from hopforge.storage.episodes import TOOLS, Call, Episode
from hopforge.storage.tools import MAX_K, validate_args

RULES_POLICY = "rules-v1"
JUDGE_POLICY = "judge-v1"

_PAREN = re.compile(r"\s*\([^)]*\)\s*$")
# Units of information in an observation: sentences and lines. A character-class split is ~5x
# faster than a look-behind sentence splitter, and splitting "3.5" in two costs nothing here.
_UNIT_SPLIT = re.compile(r"[.!?\n]+")


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def _hop_targets(question: dict[str, Any] | None) -> list[tuple[int, list[str]]]:
    """(hop, needles) for hops 1..n: the hop's title (without a "(disambiguation)" suffix) and evidence sentence."""
    if not question:
        return []
    path = question.get("path") or []
    sentences = {e.get("hop"): e.get("sentence") for e in question.get("evidence") or [] if e}
    out = []
    for hop in range(1, len(path)):
        needles = [n for n in (_norm(_PAREN.sub("", path[hop])), _norm(sentences.get(hop) or "")) if len(n) >= 2]
        out.append((hop, needles))
    return out


def valid_call(call: Call) -> bool:
    return not call.parse_error and call.tool_name in TOOLS and validate_args(call.tool_name, call.args, max_k=MAX_K)[1] is None


def rule_labels(episode: Episode) -> list[dict[str, Any]]:
    """One ``turn_labels`` row per turn (without policy fields), in turn order."""
    calls = {c.turn_index: c for c in episode.calls()}
    targets = _hop_targets(episode.question)
    revealed: set[int] = set()
    seen_units: set[str] = set()
    seen_keys: set[tuple[str, str]] = set()
    obs_info: dict[int, tuple[bool, bool]] = {}  # tool turn index -> (progress, redundant)
    open_error = False

    def observe(obs: dict[str, Any]) -> tuple[bool, bool]:
        idx = obs["turn_index"]
        if idx in obs_info:
            return obs_info[idx]
        low = (obs.get("content") or "").casefold()
        text = " ".join(low.split())
        progress = False
        if not obs.get("error"):
            for hop, needles in targets:
                if hop not in revealed and any(n in text for n in needles):
                    revealed.add(hop)
                    progress = True
        units = {" ".join(u.split()) for u in _UNIT_SPLIT.split(low)}
        units.discard("")
        new = units - seen_units
        seen_units.update(units)
        obs_info[idx] = (progress, bool(obs.get("error")) or not new)
        return obs_info[idx]

    rows = []
    for t in episode.turns:
        idx, role = t["turn_index"], t.get("role")
        row: dict[str, Any] = {"trajectory_id": episode.trajectory_id, "turn_index": idx, "valid_call": None,
                               "tool_error": None, "novel_query": None, "progress": None, "redundant": None,
                               "recovery": None}
        call = calls.get(idx) if role == "assistant" else None
        if call is not None:
            valid = valid_call(call)
            failed = call.failed
            row["valid_call"] = valid
            row["tool_error"] = failed
            if call.tool_name in ("search", "visit"):
                row["novel_query"] = call.key not in seen_keys
                seen_keys.add(call.key)
            progress, redundant = observe(call.observation) if call.observation else (False, False)
            row["progress"] = progress
            row["redundant"] = redundant or row["novel_query"] is False
            ok = valid and not failed
            row["recovery"] = open_error and ok
            if not ok:
                open_error = True
            elif row["recovery"]:
                open_error = False
        elif role == "tool" or (role == "user" and t.get("error")):
            # A call that did not parse has no call id: the chat protocol sends its error back as a user turn.
            progress, redundant = observe(t)
            row.update(tool_error=bool(t.get("error")), progress=progress, redundant=redundant)
        rows.append(row)
    return rows


def rule_weight(turn: dict[str, Any], label: dict[str, Any], call: Call | None) -> float:
    """``rules-v1`` loss weight of one turn (see module docstring)."""
    if turn.get("role") != "assistant" or call is None or not label["valid_call"] or label["tool_error"]:
        return 0.0
    if call.tool_name == "answer":
        return 1.0
    if label["novel_query"] is False:
        return 0.0
    return 1.0 if label["progress"] or not label["redundant"] else 0.0


def judge_weight(judge_label: str, not_necessary_weight: float) -> float:
    return {"essential": 1.0, "not_necessary": not_necessary_weight, "harmful": 0.0}[judge_label]


def judge_policy_name(not_necessary_weight: float) -> str:
    return JUDGE_POLICY if not_necessary_weight == 0 else f"{JUDGE_POLICY}:not_necessary={not_necessary_weight:g}"


def apply_rules_policy(episode: Episode, labels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fill judge/policy fields with the rule policy (no judge)."""
    calls = {c.turn_index: c for c in episode.calls()}
    for turn, label in zip(episode.turns, labels, strict=True):
        label.update(judge_label=None, judge_rationale=None, label_policy=RULES_POLICY,
                     loss_weight=rule_weight(turn, label, calls.get(turn["turn_index"])))
    return labels
