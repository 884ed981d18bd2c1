"""Long horizons: folding in one large step with a cached head, append-only histories between folds
(measured by the scripted server's prefix log), and a 600-tool-call trajectory through rollout ->
filters -> labels -> export within the context limit."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow.parquet as pq

from hopforge.filters import run_filters
from hopforge.labels.stage import run_labels
from hopforge.publish.stage import export_dir, run_publish
from hopforge.rollouts import run_rollouts
from hopforge.rollouts.protocol import ChatProtocol, TextProtocol, prompt_text
from hopforge.storage import query_arrow
from hopforge.testing.scripted import LoopPolicy, Reply, ScriptedRequest, ScriptedServer
from tests.rollouts.rollout_fixtures import QUESTIONS, rollout_cfg, write_wiki


def call(name: str, args: dict, cid: str) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": f"thinking {cid}", "tool_calls": [
        {"id": cid, "type": "function", "function": {"name": name, "arguments": orjson.dumps(args).decode()}}]}}]}


def chat_history(n: int, obs_chars: int = 500) -> tuple[ChatProtocol, object]:
    chat = ChatProtocol("m", max_tokens=64, temperature=0.0)
    conv, _ = chat.start("Q")
    for i in range(n):
        turn = chat.parse(call("visit", {"title": f"P{i}"}, f"c{i}"))
        chat.append_turn(conv, turn)
        chat.append_observation(conv, turn, f"Page: P{i}\n" + "y" * obs_chars)
    return chat, conv


def test_a_fold_keeps_the_head_byte_for_byte_summarises_the_middle_and_keeps_the_last_turn() -> None:
    chat, conv = chat_history(12)
    before = chat.body(conv)
    target = conv.chars // 2
    first = chat.fold(conv, target, max_lines=6)
    after = chat.body(conv)
    msgs = orjson.loads(after)["messages"]
    summary_at = next(i for i, m in enumerate(msgs) if m["role"] == "user" and m["content"].startswith("Summary"))
    # The head (system, question, the oldest turns) is unchanged: a server's cached prefix survives.
    head = after[: after.index(b'{"role":"user","content":"Summary')]
    assert before.startswith(head) and summary_at >= 4
    assert first == 12 - 1 - (summary_at - 2) // 2 and conv.chars <= target
    assert msgs[-2]["tool_calls"][0]["id"] == "c11" and msgs[-1]["tool_call_id"] == "c11"  # the last pair
    assert '- visit("P' in msgs[summary_at]["content"] and "-> Page: P" in msgs[summary_at]["content"]
    assert conv.chars == sum(len(p) for p in conv.parts)
    # Later folds keep the same head and replace the summary and what followed it.
    for i in range(12, 20):
        turn = chat.parse(call("visit", {"title": f"P{i}"}, f"c{i}"))
        chat.append_turn(conv, turn)
        chat.append_observation(conv, turn, f"Page: P{i}\n" + "y" * 500)
    assert chat.fold(conv, target, max_lines=6) == 8
    again = orjson.loads(chat.body(conv))["messages"]
    assert chat.body(conv).startswith(head) and len(again) == summary_at + 3
    assert again[-1]["tool_call_id"] == "c19"
    lines = again[summary_at]["content"].split("\n")[1:]
    # At most 6 lines: the newest 5 folded turns, and a count of the older ones.
    assert len(lines) == 6 and lines[0] == f"- ({first + 8 - 5} earlier steps not shown)"
    assert lines[-1].startswith('- visit("P18") -> Page: P18')
    assert chat.fold(conv, target) == 0  # nothing between the summary and the last turn


def test_text_protocol_folds_the_same_way() -> None:
    p = TextProtocol("m", max_tokens=64, temperature=0.0)
    conv, _ = p.start("Which river?")
    for i in range(10):
        turn = p.parse({"choices": [{"text": f" Step {i}.\nAction: visit[P{i}]"}]})
        p.append_turn(conv, turn)
        p.append_observation(conv, turn, f"Page: P{i}\n" + "z" * 400)
    before = prompt_text(conv)
    assert p.fold(conv, conv.chars // 2) > 0
    after = prompt_text(conv)
    cut = after.index("\n(Earlier steps, folded")
    assert before.startswith(after[:cut]) and "- visit(\"P" in after
    assert after.endswith("Action: visit[P9]\nObservation: Page: P9\n" + "z" * 400 + "\nThought:")


def test_histories_are_append_only_between_folds_and_the_window_holds(wiki: Path) -> None:
    """Every request that follows a turn without a context event extends the previous prompt
    exactly (the server's prefix log); a fold re-sends only the summary and the last turn."""
    with ScriptedServer(LoopPolicy(10_000, titles=["Long page", "Veloria", "Marren"])) as server:
        cfg = rollout_cfg(wiki, server.url, **{"teacher.context_tokens": 6000, "teacher.max_tokens": 64,
                                                 "rollout.max_turns": 120})
        stats = run_rollouts(cfg)
        log = list(server.prefix_log)
    assert stats.status == {"turn_limit": 3} and stats.errors == 0
    events = query_arrow(wiki, "SELECT trajectory_id, turn_index, context_action, tokens_in FROM turns "
                               "WHERE role = 'assistant' ORDER BY trajectory_id, turn_index").to_pylist()
    folds = sum(1 for e in events if e["context_action"] != "none")
    assert folds >= 6 and all(e["context_action"] in ("none", "summarized") for e in events)
    assert max(e["tokens_in"] for e in events) <= 6000 - 64  # the window held
    traj = query_arrow(wiki, "SELECT sum(context_events) AS n FROM trajectories").to_pylist()[0]["n"]
    assert traj == folds
    by_key: dict[str, list] = {}
    for key, prompt, prefix, new in log:
        by_key.setdefault(key, []).append((prompt, prefix, new))
    for key, reqs in by_key.items():
        acts = [e["context_action"] for e in events if e["trajectory_id"] == key][1:]  # action before request i+1
        for (p0, _, _), (p1, x1, n1), act in zip(reqs, reqs[1:], acts, strict=False):
            if act == "none":
                assert x1 == p0 and p1 - p0 == n1  # appended, nothing rewritten
            else:
                assert x1 > p1 // 3  # the head survived the fold
    later = [(p, x, n) for _, p, x, n in log if x >= 0]
    ratio = sum(p - x for p, x, _ in later) / sum(n for *_, n in later)
    assert ratio < 1.5, ratio


class SixHundredCalls:
    """599 distinct search/visit calls (no loops for the degeneration filter to catch), then the right
    answer: a policy that needs 600 tool calls."""

    def __init__(self, answer: str, titles: list[str]) -> None:
        self.answer = answer
        self.visits = [(t, 0) for t in titles] + [("Long page", p) for p in range(4)]

    def __call__(self, req: ScriptedRequest) -> Reply:
        t = req.turn
        if t >= 599:
            return Reply("answer", {"text": self.answer}, thought="Done.")
        if t % 30 == 29 and t // 30 < len(self.visits):
            title, page = self.visits[t // 30]
            return Reply("visit", {"title": title, "page": page}, thought=f"Read {t}.")
        return Reply("search", {"query": f"amber trade route {t}"}, thought=f"Search {t}.")


def test_six_hundred_tool_calls_end_to_end_within_the_context_limit(tmp_path: Path) -> None:
    out = tmp_path / "out"
    q = QUESTIONS[0]  # Which river flows through the capital of Veloria? -> Sella
    policy = SixHundredCalls(q["answer"], ["Veloria", "Marren", "Sella (river)", "Ostra Optics", "Hanne Lind"])
    ctx, reply = 8192, 128
    with ScriptedServer(policy) as server:
        cfg = write_wiki(out, [q], cfg=rollout_cfg(out, server.url, **{
            "teacher.backend": "openai", "teacher.context_tokens": ctx, "teacher.max_tokens": reply,
            "rollout.max_turns": 600, "rollout.token_budget": 10_000_000,
            # tokens_in counts every prompt the teacher read (600 of them): raise the size cut.
            "filters.max_tokens": 100_000_000, "export.window_turns": 50, "export.validation_fraction": 0.0}))
        stats = run_rollouts(cfg)
        resent = server.stats()["resent_ratio"]
    assert stats.status == {"answered": 1} and stats.errors == 0
    t = query_arrow(out, "SELECT num_turns, num_tool_calls, context_events, final_answer FROM trajectories").to_pylist()[0]
    assert t["num_turns"] == 600 and t["num_tool_calls"] == 600 and t["final_answer"] == "Sella"
    assert t["context_events"] >= 20  # folded many times, each one large step
    turns = query_arrow(out, "SELECT max(tokens_in) AS m, count(*) FILTER (WHERE context_action = 'summarized') "
                             "AS folds FROM turns WHERE role = 'assistant'").to_pylist()[0]
    assert turns["m"] <= ctx - reply and turns["folds"] == t["context_events"]
    assert resent < 1.5

    filt = run_filters(cfg)
    assert filt.kept == 1, filt.rejects
    labels = run_labels(cfg)
    assert labels.assistant_turns == 600
    pub = run_publish(cfg)
    assert pub.trajectories == 1
    dest = export_dir(cfg)
    manifest = orjson.loads((dest / "export_manifest.json").read_bytes())
    assert manifest["counts"]["windows"]["windowed_trajectories"] == 1
    # Windows start where the teacher's own context was folded (context_summary), else a deterministic one.
    assert manifest["counts"]["windows"]["context_summary"] >= 10
    rows = pq.read_table(next((dest / "data").glob("train-*.parquet"))).to_pylist()
    assert len(rows) == sum(manifest["counts"]["samples"].values()) >= 12
    later = sorted(rows, key=lambda r: r["window"])[1:]
    assert all("Progress so far" in r["messages"][1]["content"] for r in later)  # each opens with its summary
