"""Bad-input sweep: hypothesis fuzzing of everything that parses text we do not control.

* wikitext (the graph stage's extraction): any page text parses, or the page is
  rejected by ingest (it never takes the batch down), within a time limit;
* model outputs: the native tool-call parser and the text-protocol (``Action:``)
  parser never raise: a bad output becomes ``parse_error`` on the turn; the
  answer-judge and turn-judge parsers raise only ``ModelOutputError``;
* model-chosen tool arguments: the offline environment answers any search query
  or visit title (including ``../../etc/passwd``) with an observation string.

Each example runs under a SIGALRM wall-clock limit, so a hang fails the test
instead of hanging the suite. Example counts stay modest (2 shared cores).
"""

from __future__ import annotations

from pathlib import Path

import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hopforge.errors import ModelOutputError
from hopforge.filters.correctness import parse_answer_verdict
from hopforge.labels.judge import LABELS, parse_judge_output
from hopforge.text.titles import SiteInfo
from hopforge.graph.wikitext import extract
from hopforge.rollouts.protocol import ChatProtocol, TextProtocol
from tests.reliability.conftest import time_limit

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)
LIMIT_S = 5.0  # per example; the graph stage's own per-page limit defaults to 10 s

SITE = SiteInfo(namespaces={0: "", 6: "File", 10: "Template", 14: "Category"})

# Wikitext: random text is mostly plain; markup fragments make the parser work.
MARKUP = st.sampled_from([
    "[[", "]]", "[[A|b]]", "[[Category:X]]", "[[File:x.jpg|thumb|[[y]]]]", "{{", "}}", "{{Infobox x|a=[[b]]|c=",
    "{{Short description|", "{{lang|fr|", "|", "=", "==", "== H ==\n", "'''", "''", "<ref>", "</ref>", "<ref name=a/>",
    "<!--", "-->", "{|", "|}", "|-", "<nowiki>", "</nowiki>", "<br/>", "<table>", "\n", "\n\n", "*", "#", ":", ";",
    "&amp;", "&#x27;", "__NOTOC__", "#REDIRECT [[Z]]", "[[../../etc/passwd]]", "<script>alert(1)</script>",
    "[http://x y]", "{{{1}}}", "{{#if:a|b}}", "[[:Category:Q]]", "[[en:Foo]]", "[[A#B|c]]d", "\u00a0", "(; born)",
])
WIKITEXT = st.lists(st.one_of(MARKUP, st.text(max_size=20)), max_size=60).map("".join)


@FUZZ
@given(title=st.text(min_size=1, max_size=40), text=WIKITEXT)
def test_wikitext_extraction_finishes_and_keeps_its_invariants(title: str, text: str) -> None:
    with time_limit(LIMIT_S, f"extract({title!r}, {len(text)} chars)"):
        try:
            page = extract(title, text, SITE, {0})
        except RecursionError:
            return  # documented: ingest rejects the page as parser_error ("nesting too deep")
    assert isinstance(page.text, str) and isinstance(page.lead, str)
    assert page.lead == "" or page.lead in page.text
    for ln in page.links:
        assert ln.target and ln.position >= 0 and isinstance(ln.anchor, str) and isinstance(ln.sentence, str)
    assert [ln.position for ln in page.links] == sorted(ln.position for ln in page.links)


def test_deeply_nested_wikitext_is_rejected_by_ingest_not_fatal(tmp_path: Path) -> None:
    """The one exception extract documents (RecursionError on absurd nesting) becomes a reject row."""
    import bz2

    from hopforge.config import load_config
    from hopforge.graph import run_ingest
    from hopforge.storage import read_table

    deep = "{{a|" * 3000 + "x" + "}}" * 3000
    pages = [("Fine page", "'''Fine''' links to [[Other page]]."), ("Deep page", deep),
             ("Other page", "Plain [[Fine page]] text.")]
    xml = ['<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">',
           "<siteinfo><sitename>W</sitename><dbname>testwiki</dbname><base>https://x/</base>"
           '<namespaces><namespace key="0" case="first-letter" /></namespaces></siteinfo>']
    for i, (t, body) in enumerate(pages, 1):
        xml.append(f"<page><title>{t}</title><ns>0</ns><id>{i}</id><revision><id>{i}</id>"
                   f"<timestamp>2024-01-01T00:00:00Z</timestamp><text>{body}</text></revision></page>")
    xml.append("</mediawiki>")
    dump = tmp_path / "deep.xml.bz2"
    dump.write_bytes(bz2.compress("\n".join(xml).encode()))
    cfg = load_config(None, {"run.out": str(tmp_path / "out"), "graph.dump": str(dump), "graph.workers": 1})
    with time_limit(120, "run_ingest on a 3-page dump"):
        run_ingest(cfg)
    titles = set(read_table(cfg.run.out, "pages", columns=["title"]).column(0).to_pylist())
    assert {"Fine page", "Other page"} <= titles
    if "Deep page" not in titles:  # parsed fine on this mwparserfromhell build, or rejected with a reason
        rej = read_table(cfg.run.out, "rejects").to_pylist()
        assert any(r["reason"] in ("parser_error", "parser_timeout") and "Deep page" in r["detail"] for r in rej), rej


# ---------------------------------------------------------------- model outputs: the rollout parsers

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=12)
TOOL_NAME = st.sampled_from(["search", "visit", "answer", "serch", "", "Search", "visit ", "../x"]) | st.text(max_size=8)
ARGS = st.one_of(
    st.text(max_size=40),  # raw (maybe invalid) JSON text, as servers send it
    st.dictionaries(st.sampled_from(["query", "k", "title", "page", "text", "x"]), JSONISH, max_size=4).map(
        json.dumps),
    JSONISH)  # already-parsed arguments (some servers), any type
TOOL_CALL = st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.none(), st.text(max_size=8), st.integers()),
    "type": st.just("function"),
    "function": st.one_of(JSONISH, st.fixed_dictionaries({"name": TOOL_NAME}, optional={"arguments": ARGS}))})
MESSAGE = st.fixed_dictionaries({}, optional={
    "role": st.just("assistant"),
    "content": st.one_of(st.none(), st.text(max_size=80), JSONISH,
                         st.text(max_size=30).map(lambda s: f"<think>{s}</think>answer")),
    "tool_calls": st.one_of(st.none(), st.lists(st.one_of(TOOL_CALL, JSONISH), max_size=3), JSONISH),
    "reasoning_content": st.one_of(st.none(), st.text(max_size=30), JSONISH)})
CHAT_RESPONSE = st.one_of(
    JSONISH,
    st.fixed_dictionaries({"choices": st.one_of(
        JSONISH, st.lists(st.fixed_dictionaries({"message": st.one_of(MESSAGE, JSONISH)},
                                                optional={"finish_reason": JSONISH}), max_size=2))},
                          optional={"usage": st.one_of(JSONISH, st.fixed_dictionaries(
                              {"prompt_tokens": JSONISH, "completion_tokens": JSONISH}))}))

ACTION_TEXT = st.lists(st.one_of(
    st.sampled_from(["Action: ", "Action:search[", "Action: visit[", "Action: answer[", "]", "[", "|", "\n",
                     "Observation:", "Question:", "Thought:", "<think>", "</think>", "Action: serch[[x",
                     "Action: visit[../../etc/passwd|2]", "Action: search[a]\nAction: answer[b]"]),
    st.text(max_size=15)), max_size=20).map("".join)
TEXT_RESPONSE = st.one_of(
    JSONISH,
    st.fixed_dictionaries({"choices": st.lists(st.fixed_dictionaries(
        {"text": st.one_of(ACTION_TEXT, JSONISH)}, optional={"finish_reason": JSONISH}), max_size=2)},
        optional={"usage": JSONISH}))


def _check_turn(turn) -> None:
    # Exactly one of: a validated action, or a parse error the engine turns into an error observation.
    assert (turn.action is None) != (turn.parse_error is None), turn
    if turn.action is not None:
        assert turn.action.name in ("search", "visit", "answer")
        if turn.action.name == "visit":
            assert isinstance(turn.action.args["title"], str) and turn.action.args["page"] >= 0
    else:
        assert isinstance(turn.parse_error, str) and turn.parse_error
    assert isinstance(turn.content, str)


@FUZZ
@given(resp=CHAT_RESPONSE)
def test_native_tool_call_parser_never_raises(resp) -> None:
    proto = ChatProtocol("m", max_tokens=16, temperature=0.0)
    with time_limit(LIMIT_S, "ChatProtocol.parse"):
        turn = proto.parse(resp)
        _check_turn(turn)
        conv, _ = proto.start("Q?")
        proto.append_turn(conv, turn)  # the history stays valid JSON whatever the model said
        proto.append_observation(conv, turn, "obs")
        orjson.loads(proto.body(conv))


@FUZZ
@given(resp=TEXT_RESPONSE)
def test_text_protocol_parser_never_raises(resp) -> None:
    proto = TextProtocol("m", max_tokens=16, temperature=0.0)
    with time_limit(LIMIT_S, "TextProtocol.parse"):
        turn = proto.parse(resp)
        _check_turn(turn)
        conv, _ = proto.start("Q?")
        proto.append_turn(conv, turn)
        proto.append_observation(conv, turn, "Observation: fake\nAction: answer[x]")
        orjson.loads(proto.body(conv))


# ---------------------------------------------------------------- model outputs: the judges

VERDICT_TEXT = st.one_of(
    st.text(max_size=80),
    JSONISH.map(lambda o: json.dumps(o)),
    st.fixed_dictionaries({}, optional={"verdict": st.sampled_from(["correct", "incorrect", "yes", ""]) | JSONISH,
                                        "rationale": JSONISH}).map(lambda d: json.dumps(d)),
    st.text(max_size=30).map(lambda s: f"```json\n{s}\n```"))


@FUZZ
@given(text=VERDICT_TEXT)
def test_answer_verdict_parser_raises_only_model_output_error(text: str) -> None:
    with time_limit(LIMIT_S, "parse_answer_verdict"):
        try:
            v = parse_answer_verdict(text)
        except ModelOutputError:
            return
    assert v.verdict in ("correct", "incorrect") and v.rationale.strip()


JUDGE_ITEM = st.fixed_dictionaries({}, optional={
    "turn": st.one_of(st.integers(-2, 8), JSONISH), "label": st.sampled_from([*LABELS, "maybe"]) | JSONISH,
    "rationale": JSONISH})
JUDGE_TEXT = st.one_of(
    st.text(max_size=80),
    JSONISH.map(lambda o: json.dumps(o)),
    st.lists(st.one_of(JUDGE_ITEM, JSONISH), max_size=4).map(lambda x: json.dumps(x)),
    st.lists(JUDGE_ITEM, max_size=3).map(lambda x: "```json\n" + json.dumps(x) + "\n```"))


@FUZZ
@given(text=JUDGE_TEXT, turns=st.lists(st.integers(0, 6), max_size=3, unique=True))
def test_turn_judge_parser_raises_only_model_output_error(text: str, turns: list[int]) -> None:
    with time_limit(LIMIT_S, "parse_judge_output"):
        try:
            out = parse_judge_output(text, turns)
        except ModelOutputError:
            return
    assert set(out) == set(turns) and all(label in LABELS and r for label, r in out.values())


# ---------------------------------------------------------------- model-chosen tool arguments

@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory):
    from hopforge.rollouts.environment import Environment
    from tests.rollouts.rollout_fixtures import write_wiki

    out = tmp_path_factory.mktemp("fuzzenv") / "out"
    write_wiki(out)
    return Environment.from_tables(out), out


@FUZZ
@given(query=st.text(max_size=200), title=st.one_of(st.text(max_size=80), st.sampled_from(
    ["../../etc/passwd", "/etc/passwd", "..", "Veloria/../../x", "C:\\Windows", "\x00", "file:///etc/passwd"])),
       page=st.integers(0, 10**6), k=st.integers(1, 50))
def test_environment_answers_any_query_or_title_without_touching_files(environment, query: str, title: str,
                                                                       page: int, k: int) -> None:
    env, out = environment
    before = sorted(p.name for p in out.parent.iterdir())
    with time_limit(LIMIT_S, "Environment.render_search/render_visit"):
        assert isinstance(env.render_search(query, k), str)
        obs = env.render_visit(title, page)
    assert isinstance(obs, str) and "root:x:0:0" not in obs
    assert sorted(p.name for p in out.parent.iterdir()) == before
