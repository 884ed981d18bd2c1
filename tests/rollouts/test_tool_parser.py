"""Client-side tool-call parsing (teacher.tool_parser) for servers that return calls as message text.

The sample outputs are the shapes an instruct model served without a tool parser writes (as
reported for Qwen2.5-Coder-1.5B-Instruct on llama-cpp-python's OpenAI server in issue 16): a
bare JSON object, a `<tools>` wrapper, Hermes `<tool_call>` blocks, the chat template's doubled
braces, and an invented tool result written after the call. No such model is available on this
project's machines, so they are reproduced by hand, byte for byte in those shapes, not captured.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hopforge.rollouts import run_rollouts
from hopforge.rollouts.protocol import ChatProtocol
from hopforge.rollouts.tool_parser import STOP, extract_calls
from hopforge.storage import query_arrow
from hopforge.testing.scripted import OraclePolicy, ScriptedServer
from tests.rollouts.rollout_fixtures import QUESTIONS, rollout_cfg, write_wiki

INVENTED = "\n<tool_response>\n[1] Veloria (passage 11:0)\nVeloria's capital is Port Amber.\n</tool_response>"

# (parser, message text, expected call (name, typed args) or None, expected parse error fragment or None)
SAMPLES = [
    ("json", '{"name": "search", "arguments": {"query": "capital of Veloria", "k": 5}}',
     ("search", {"query": "capital of Veloria", "k": 5}), None),
    ("json", '{"name": "search", "arguments": {"query": "capital of Veloria", "k": 5}}\n\nObservation: [1] Veloria\n'
             "The capital of Veloria is Port Amber, a city on the coast.\n\n"
             '{"name": "answer", "arguments": {"text": "Port Amber"}}',
     ("search", {"query": "capital of Veloria", "k": 5}), None),
    ("json", '<tools>\n{"name": "visit", "arguments": {"title": "Marren", "page": 0}}\n</tools>',
     ("visit", {"title": "Marren", "page": 0}), None),
    ("json", '{{"name": "answer", "arguments": {{"text": "Sella"}}}}', ("answer", {"text": "Sella"}), None),
    ("json", 'Let me search.\n{{"name": "search", "arguments": {"query": "Sella river"}}}',
     ("search", {"query": "Sella river", "k": 5}), None),
    ("json", '```json\n{"name": "visit", "arguments": {"title": "Ostra Optics"}}\n```',
     ("visit", {"title": "Ostra Optics", "page": 0}), None),
    ("json", '{"name": "search", "arguments": "{\\"query\\": \\"Quillon 3\\"}"}', ("search", {"query": "Quillon 3", "k": 5}),
     None),
    ("json", '{"type": "function", "function": {"name": "answer", "arguments": {"text": "Hanne Lind"}}}',
     ("answer", {"text": "Hanne Lind"}), None),
    ("json", '{"name": "browse", "arguments": {"url": "https://example.org"}}', None, "unknown tool 'browse'"),
    ("json", '{"name": "search", "arguments": {"q": "Marren"}}', None, "unknown argument(s) ['q']"),
    ("json", "The river that flows through Marren is the Sella.", None, "no tool call"),
    ("hermes", 'I need the capital first.\n<tool_call>\n{"name": "search", "arguments": {"query": "Veloria capital"}}\n'
               "</tool_call>" + INVENTED, ("search", {"query": "Veloria capital", "k": 5}), None),
    # the stop sequence cut the closing tag: an unterminated last block counts
    ("hermes", '<tool_call>\n{"name": "visit", "arguments": {"title": "Marren", "page": 1}}\n',
     ("visit", {"title": "Marren", "page": 1}), None),
    ("hermes", '<tool_call>\n{{"name": "answer", "arguments": {{"text": "Sella"}}}}\n</tool_call>',
     ("answer", {"text": "Sella"}), None),
    ("hermes", '<tool_call>\n{"name": "search", "arguments": {"query": }\n</tool_call>', None,
     "<tool_call> block is not a JSON object"),
    # hermes reads tags only: a bare object is prose to it
    ("hermes", '{"name": "search", "arguments": {"query": "Veloria"}}', None, "no tool call"),
]


def chat_resp(content: str) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20}}


@pytest.mark.parametrize(("parser", "text", "call", "error"), SAMPLES)
def test_recorded_shapes_parse_like_native_calls(parser: str, text: str, call: tuple | None, error: str | None) -> None:
    proto = ChatProtocol("m", max_tokens=64, temperature=0.0, tool_parser=parser)
    turn = proto.parse(chat_resp(text))
    if call is None:
        assert turn.action is None and error in (turn.parse_error or ""), turn.parse_error
        assert turn.raw_output == text
        return
    assert turn.parse_error is None, turn.parse_error
    assert (turn.action.name, turn.action.args) == call
    # The history gets the call well-formed and nothing the model wrote after it.
    history = turn.message["content"]
    assert "Port Amber" not in history and "Observation" not in history and "{{" not in history
    assert turn.raw_output == text  # what the model really wrote stays inspectable


def test_two_calls_take_the_first_and_note_the_extra() -> None:
    proto = ChatProtocol("m", max_tokens=64, temperature=0.0, tool_parser="hermes")
    text = ('<tool_call>{"name": "search", "arguments": {"query": "a"}}</tool_call>\n'
            '<tool_call>{"name": "search", "arguments": {"query": "b"}}</tool_call>')
    turn = proto.parse(chat_resp(text))
    assert turn.action.args["query"] == "a" and turn.extra_calls == 1


def test_requests_carry_stop_sequences_and_the_format_and_results_come_back_as_tool_responses() -> None:
    proto = ChatProtocol("m", max_tokens=64, temperature=0.0, tool_parser="hermes")
    conv, opening = proto.start("Which river?")
    body = orjson.loads(proto.body(conv, 7, "traj-1"))
    assert body["stop"] == STOP["hermes"] == ["</tool_call>", "<tool_response>"]
    assert body["seed"] == 7 and body["user"] == "traj-1"
    assert "<tool_call>" in body["messages"][0]["content"] and body["tools"]  # the schemas still go out
    turn = proto.parse(chat_resp('Find it.\n<tool_call>\n{"name": "search", "arguments": {"query": "river"}}\n'))
    proto.append_turn(conv, turn)
    role, call_id = proto.append_observation(conv, turn, "[1] Sella (river) (passage 3:0)")
    assert (role, call_id) == ("tool", "call_0") and turn.action.call_id == "call_0"
    msgs = orjson.loads(proto.body(conv))["messages"]
    assert msgs[2] == {"role": "assistant", "content": 'Find it.\n<tool_call>\n{"name":"search","arguments":'
                                                       '{"query":"river"}}\n</tool_call>'}
    assert msgs[3] == {"role": "user", "content": "<tool_response>\n[1] Sella (river) (passage 3:0)\n</tool_response>"}
    # a turn without a call answers with an error the model can read, recorded as a user turn
    bad = proto.parse(chat_resp("I think it is the Sella."))
    proto.append_turn(conv, bad)
    assert bad.parse_error.startswith("no tool call: write <tool_call>")
    assert proto.append_observation(conv, bad, "Error: no tool call")[0] == "tool"


def test_the_json_parser_stops_at_the_wrappers_and_observations() -> None:
    assert STOP["json"] == ["</tool_call>", "</tools>", "<tool_response>", "\nObservation:"]
    assert len(STOP["json"]) <= 4  # the OpenAI API refuses more


def test_bad_parser_settings_are_clear_errors() -> None:
    from hopforge.config import load_config
    from hopforge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"tool_parser = 'hermes' parses chat messages.*teacher.protocol = 'chat'"):
        load_config(None, {"teacher.backend": "cpu", "teacher.tool_parser": "hermes"})
    with pytest.raises(ConfigError, match="teacher.tool_parser"):
        load_config(None, {"teacher.tool_parser": "xml"})
    with pytest.raises(ValueError, match="unknown tool parser"):
        ChatProtocol("m", max_tokens=1, temperature=0, tool_parser="xml")


@pytest.mark.parametrize(("fmt", "parser"), [("hermes", "hermes"), ("tools", "json"), ("json", "json")])
def test_rollouts_against_a_server_without_a_tool_parser(tmp_path: Path, fmt: str, parser: str) -> None:
    """The scripted oracle writes its calls into the message text, then an invented result (cut by
    the stop sequences, as a real server does): with the parser every trajectory is correct."""
    wiki = tmp_path / "out"
    with ScriptedServer(OraclePolicy(QUESTIONS), tool_format=fmt) as server:
        cfg = write_wiki(wiki, cfg=rollout_cfg(wiki, server.url, **{"teacher.backend": "openai",
                                                                    "teacher.tool_parser": parser}))
        stats = run_rollouts(cfg)
    assert stats.status == {"answered": 3} and stats.errors == 0
    t = query_arrow(wiki, "SELECT question_id, final_answer FROM trajectories ORDER BY question_id").to_pylist()
    assert [r["final_answer"] for r in t] == ["Hanne Lind", "nothing", "Sella"]
    rows = query_arrow(wiki, "SELECT role, tool_call_id, raw_output FROM turns WHERE trajectory_id = "
                             "(SELECT min(trajectory_id) FROM trajectories) AND role IN ('assistant', 'tool') "
                             "ORDER BY turn_index").to_pylist()
    assert [r["tool_call_id"] for r in rows[:4]] == ["call_0", "call_0", "call_1", "call_1"]
    assert all("Invented result" not in (r["raw_output"] or "") for r in rows)  # cut by a stop sequence


def test_without_the_parser_text_calls_are_parse_errors(tmp_path: Path) -> None:
    wiki = tmp_path / "out"
    with ScriptedServer(OraclePolicy(QUESTIONS), tool_format="hermes") as server:
        cfg = write_wiki(wiki, cfg=rollout_cfg(wiki, server.url, **{"teacher.backend": "openai",
                                                                    "rollout.max_turns": 3}))
        stats = run_rollouts(cfg)
    assert stats.status == {"turn_limit": 3}
    errs = query_arrow(wiki, "SELECT DISTINCT parse_error FROM turns WHERE role = 'assistant'").to_pylist()
    assert errs == [{"parse_error": "no tool call: call search, visit or answer"}]


FRAGMENTS = st.sampled_from(['{', '}', '{{', '}}', '"name"', '"arguments"', ':', ',', '"search"', '"answer"',
                             '<tool_call>', '</tool_call>', '<tools>', '</tools>', '```json', '```', '[', ']',
                             '"text"', '"query"', '1', 'null', '\\', '"', ' ', '\n', 'Observation:', '\x00', 'é'])


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=300), st.lists(FRAGMENTS, max_size=60).map("".join)),
       st.sampled_from(["hermes", "json"]))
def test_the_parser_never_raises(text: str, parser: str) -> None:
    calls, error = extract_calls(text, parser)
    assert isinstance(calls, list) and (error is None or isinstance(error, str))
    turn = ChatProtocol("m", max_tokens=8, temperature=0.0, tool_parser=parser).parse(chat_resp(text))
    assert (turn.action is None) == (turn.parse_error is not None)


def test_the_parser_survives_pathological_nesting() -> None:
    for text in ("{" * 50_000, "[" * 50_000 + "]" * 50_000, '{"name": "search", "arguments": ' + "[" * 20_000):
        calls, _ = extract_calls(text, "json")
        assert calls == []
