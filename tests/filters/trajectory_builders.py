"""Hand-built questions and trajectories for the filter and label tests.

An action list describes a trajectory compactly; :func:`make_episode` expands it
into the system/user/assistant/tool turn rows the rollout stage writes:

    ("search", "query", "observation")      a search call and its result
    ("visit", "Title", "observation")       a visit call and its page text
    ("fail", "search", "query", "error")    a call whose observation is an error
    ("bad", "raw text", "parse error")      an assistant turn that did not parse
    ("say", "text")                         an assistant turn without a call
    ("answer", "text")                      the final answer call
"""

from __future__ import annotations

from typing import Any

from hopforge.config import Config
from hopforge.stage import StageRun, resolve
from hopforge.storage.episodes import Episode
from hopforge.testing.stages import FIXTURE, complete_chain

QUESTION = {
    "question_id": "q1",
    "walk_id": "w1",
    "question": "Which river flows through the capital of the country where the Zorblax violin maker was born?",
    "answer": "The Danube",
    "answer_aliases": ["Donau", "Danube River"],
    "answer_type": "entity",
    "path": ["Zorblax", "Austria", "Vienna", "Danube"],
    "hops": 3,
    "evidence": [
        {"hop": 1, "src": "Zorblax", "dst": "Austria", "anchor": "Austria",
         "sentence": "Zorblax was a violin maker born in Austria."},
        {"hop": 2, "src": "Austria", "dst": "Vienna", "anchor": "Vienna",
         "sentence": "The capital of Austria is Vienna."},
        {"hop": 3, "src": "Vienna", "dst": "Danube", "anchor": "Danube",
         "sentence": "Vienna lies on the Danube."},
    ],
    "answer_facts": [],
    "composer": "template",
    "checks": [],
    "passed": True,
    "seed": 0,
}

GOOD_ACTIONS = [
    ("search", "Zorblax violin maker", "1. Zorblax: Zorblax was a violin maker born in Austria."),
    ("visit", "Austria", "Austria is a country. The capital of Austria is Vienna."),
    ("visit", "Vienna", "Vienna is a city. Vienna lies on the Danube."),
    ("answer", "Danube"),
]


def question(qid: str = "q1", **kw: Any) -> dict[str, Any]:
    return {**QUESTION, "question_id": qid, **kw}


def make_turns(tid: str, qid: str, actions: list[tuple]) -> list[dict[str, Any]]:
    base = {"trajectory_id": tid, "question_id": qid, "reasoning": None, "tool_call_id": None, "tool_name": None,
            "tool_args": None, "raw_output": None, "parse_error": None, "tokens_in": 10, "tokens_out": 5,
            "latency_ms": 1.0, "error": None, "context_action": "none"}
    turns = [{**base, "role": "system", "content": "You are a search agent."},
             {**base, "role": "user", "content": "Question?"}]

    def call(name: str, args: dict[str, Any], content: str = "") -> str:
        cid = f"c{len(turns)}"
        turns.append({**base, "role": "assistant", "content": content or f"Let me {name}.", "tool_call_id": cid,
                      "tool_name": name, "tool_args": args})
        return cid

    for a in actions:
        kind = a[0]
        if kind in ("search", "visit"):
            cid = call(kind, {"query": a[1]} if kind == "search" else {"title": a[1]})
            turns.append({**base, "role": "tool", "content": a[2], "tool_call_id": cid, "tool_name": kind})
        elif kind == "fail":
            cid = call(a[1], {"query": a[2]} if a[1] == "search" else {"title": a[2]})
            turns.append({**base, "role": "tool", "content": "", "tool_call_id": cid, "tool_name": a[1],
                          "error": a[3]})
        elif kind == "bad":
            turns.append({**base, "role": "assistant", "content": a[1], "raw_output": a[1], "parse_error": a[2]})
        elif kind == "say":
            turns.append({**base, "role": "assistant", "content": a[1]})
        elif kind == "answer":
            call("answer", {"text": a[1]}, content="I have it.")
        elif kind == "call":  # arbitrary tool name / args: ("call", name, args)
            cid = call(a[1], a[2])
            turns.append({**base, "role": "tool", "content": "ok", "tool_call_id": cid, "tool_name": a[1]})
        else:
            raise ValueError(kind)
    for i, t in enumerate(turns):
        t["turn_index"] = i
    return turns


def trajectory(tid: str, qid: str, actions: list[tuple], **kw: Any) -> dict[str, Any]:
    final = next((a[1] for a in reversed(actions) if a[0] == "answer"), None)
    calls = sum(1 for a in actions if a[0] in ("search", "visit", "fail", "call"))
    row = {"trajectory_id": tid, "question_id": qid, "attempt": 0, "teacher_backend": "scripted",
           "teacher_model": "fake", "status": "answered" if final else "turn_limit", "final_answer": final,
           "num_turns": 0, "num_tool_calls": calls, "tokens_in": 1000, "tokens_out": 200, "retries": 0, "errors": 0,
           "context_events": 0, "error": None, "started_at": None, "finished_at": None, "wall_seconds": 1.0}
    row.update(kw)
    return row


def make_episode(actions: list[tuple] = GOOD_ACTIONS, *, tid: str = "t1", q: dict[str, Any] | None = None,
                 **kw: Any) -> Episode:
    q = q if q is not None else question()
    turns = make_turns(tid, q["question_id"], actions)
    traj = trajectory(tid, q["question_id"], actions, num_turns=len(turns), **kw)
    return Episode(traj, turns, q)


LOOP = ("search", "Zorblax", "nothing")
Q2 = question("q2", question="Who wrote the novel adapted into the film directed by the Quux director?",
              answer="Jane Doe", answer_aliases=[], path=["Quux", "Film", "Jane Doe"])


def funnel_episodes(*extra: Episode) -> list[Episode]:
    """Nine trajectories, each meant for one outcome of the filter funnel (kept: good, alias, other-q)."""
    return [
        make_episode(GOOD_ACTIONS, tid="good"),
        make_episode([*GOOD_ACTIONS[:-1], ("answer", "donau")], tid="alias"),  # alias, other case
        make_episode(GOOD_ACTIONS, tid="dup-of-good"),  # identical action sequence
        make_episode([*GOOD_ACTIONS[:-1], ("answer", "Rhine")], tid="wrong"),
        make_episode([LOOP, LOOP, LOOP, *GOOD_ACTIONS], tid="loop"),
        make_episode([("search", "x", "y"), ("answer", "Danube")], tid="lazy"),
        make_episode(GOOD_ACTIONS[:-1], tid="unfinished"),
        # Four bad calls: beyond the masking cap (filters.max_masked_calls = 3), so rejected as before masking.
        make_episode([*[("bad", "{oops", "no JSON")] * 4, *GOOD_ACTIONS], tid="unparseable"),
        make_episode([("search", "Quux film", "Film by a director. The novel is by Jane Doe."),
                      ("visit", "Film", "Adapted from Jane Doe's novel."), ("visit", "Jane Doe", "Writer."),
                      ("answer", "Jane Doe")], tid="other-q", q=Q2),
        *extra,
    ]


def write_dataset(cfg: Config, questions: list[dict[str, Any]], episodes: list[Episode],
                  turns_per_shard: int = 1000) -> dict[str, StageRun]:
    """Record ``questions`` and the episodes' trajectories and turns as the complete output of the
    question and rollout stages of ``cfg`` (graph and screen complete with no rows), so the filter
    stage of ``cfg`` reads them. Turns go into shards of ``turns_per_shard`` rows, in order.
    """
    turns = [t for ep in episodes for t in ep.turns]
    chunks = [turns[i:i + turns_per_shard] for i in range(0, len(turns), turns_per_shard)] or [[]]
    rollouts = resolve(cfg, "rollouts")
    for chunk in chunks[:-1]:  # every chunk but the last is its own group; complete_chain commits the last
        rollouts.commit({"turns": chunk}, FIXTURE)
    return complete_chain(cfg, {"questions": {"questions": questions},
                                "rollouts": {"trajectories": [ep.trajectory for ep in episodes],
                                             "turns": chunks[-1]}})


class FakeTeacher:
    """A tiny ``complete_text`` client: replies from a function of the prompt, records every request."""

    def __init__(self, reply) -> None:
        self.reply = reply
        self.requests: list[str] = []

    async def complete_text(self, messages, *, max_tokens, temperature, stop=None) -> str:
        prompt = messages[-1]["content"]
        self.requests.append(prompt)
        return self.reply(prompt)
