"""Every route of the viewer through FastAPI's TestClient, on hand-built rows."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.viewer.viewer_rows import SCRIPT, write_many_questions

from hopforge.config import load_config
from hopforge.errors import SQLGuardError
from hopforge.stage import selection_for
from hopforge.storage import ShardWriter, guard_sql
from hopforge.testing.stages import complete_chain
from hopforge.viewer import create_app
from hopforge.viewer.app import TEMPLATES

ESCAPED_SCRIPT = "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;"


def client_for(out, card=None) -> TestClient:
    # The viewer accepts only Host 127.0.0.1/localhost (DNS-rebinding guard); TestClient's default is "testserver".
    return TestClient(create_app(out, card), base_url="http://127.0.0.1:8765")


@pytest.fixture(scope="module")
def client(_small_run_once):
    """One app for the read-only tests (opening the catalog is most of a test's time)."""
    with client_for(_small_run_once) as c:
        yield c


@pytest.fixture
def fresh_client(small_run):
    """An app over a private copy, for tests that add files."""
    with client_for(small_run) as c:
        yield c


def question_ids(html: str) -> list[str]:
    return re.findall(r'<a href="/q/([^"]+)">', html)


def test_overview_shows_funnel_rejects_and_tables(client):
    r = client.get("/")
    assert r.status_code == 200
    funnel = dict(re.findall(r"<tr><td>([a-z ]+)</td><td class=\"n\">([\d,]+)</td></tr>", r.text))
    assert funnel["questions written"] == "3"
    assert funnel["questions passing checks"] == "2"
    assert funnel["trajectories"] == "3"
    assert funnel["trajectories answered"] == "2"
    assert funnel["trajectories kept"] == "1"
    assert '<a href="/questions?reason=answer_mismatch">answer_mismatch</a>' in r.text
    # a page-level reject is counted but not linked: no question carries it
    assert "<td>parser_timeout</td><td class=\"n\">1</td>" in r.text
    assert "No data card found" in r.text


def test_overview_links_card_plots_and_serves_only_card_files(small_run, fresh_client):
    client = fresh_client
    plots = small_run / "export" / "plots"
    plots.mkdir(parents=True)
    (plots / "hops.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    (small_run / "export" / "README.md").write_text("# Data card <script>x</script>\n")
    r = client.get("/")
    assert '<p><a href="/card/0/README.md">export/README.md</a></p>' in r.text
    assert '<img class="plot" src="/card/1/hops.png" alt="export/plots/hops.png">' in r.text
    assert client.get("/card/1/hops.png").content.startswith(b"\x89PNG")
    readme = client.get("/card/0/README.md")
    assert readme.headers["content-type"].startswith("text/plain")  # shown as text, never as HTML
    # Only files found by the scan, by their index and name: nothing else under OUT or outside it.
    assert client.get("/card/0/hops.png").status_code == 404
    assert client.get("/card/7/README.md").status_code == 404
    assert client.get("/card/0/..%2F..%2Fquestions%2F_manifest.jsonl").status_code == 404
    assert client.get("/files/questions/_manifest.jsonl").status_code == 404


def test_card_directory_given_explicitly(small_run, tmp_path):
    dest = tmp_path / "hf-export"
    (dest / "plots").mkdir(parents=True)
    (dest / "plots" / "tokens.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    with client_for(small_run, card=dest) as c:
        r = c.get("/")
        assert '<img class="plot" src="/card/0/tokens.png" alt="plots/tokens.png">' in r.text
        assert f"from <code>{dest.resolve()}</code>" in r.text
    with client_for(small_run, card=tmp_path / "empty") as c:
        assert "No data card found in" in c.get("/").text


def test_question_list_first_page_in_id_order_with_details(client):
    r = client.get("/questions")
    assert r.status_code == 200
    assert question_ids(r.text) == ["q1", "q2", "q3"]
    assert '<b id="total">3</b>' in r.text
    row_q1 = r.text[r.text.index('href="/q/q1"'):r.text.index('href="/q/q2"')]
    # 2 trajectories, 1 kept, max 9 turns, solve rates 0.50 / 0.00, t3's reject reason
    assert [c for c in re.findall(r'<td class="n">([^<]+)</td>', row_q1)] == ["2", "2", "1", "9", "0.50 / 0.00"]
    assert '<span class="chip bad">answer_mismatch</span>' in row_q1
    assert 'rel="next"' not in r.text and 'rel="prev"' not in r.text
    assert "rows 1–3, page" in r.text


@pytest.mark.parametrize(("query", "expected"), [
    ("hops=3", ["q2"]),
    ("hops=1", ["q3"]),
    ("status=kept", ["q1"]),
    ("status=rejected", ["q2", "q3"]),  # q1 has a rejected attempt but also a kept one
    ("status=failed_checks", ["q3"]),
    ("reason=answer_mismatch", ["q1"]),
    ("reason=ambiguous_answer", ["q3"]),
    ("reason=turn_limit_reached&hops=3", ["q2"]),
    ("solve_min=0.9", ["q2"]),
    ("solve_max=0.6", ["q1"]),
    ("turns_min=30", ["q2"]),
    ("turns_max=6", ["q1"]),  # t3 has 5 turns
    ("text=CASTELLANE", ["q1"]),
    ("text=%27%3B+DROP+TABLE+questions%3B+--", []),
    ("reason=%27+OR+1%3D1+--", []),
])
def test_question_list_filters(client, query, expected):
    r = client.get(f"/questions?{query}")
    assert r.status_code == 200, r.text
    assert question_ids(r.text) == expected
    assert f'<b id="total">{len(expected)}</b>' in r.text


def test_reason_options_are_those_of_questions_and_trajectories(client):
    r = client.get("/questions")
    options = re.findall(r'<option value="([a-z_]+)"', r.text[r.text.index('name="reason"'):])
    assert options == ["ambiguous_answer", "answer_mismatch", "turn_limit_reached"]


def test_question_list_keeps_filters_in_the_form(client):
    r = client.get("/questions?hops=2&status=kept&text=castellane")
    assert 'name="hops" type="number" min="1" value="2"' in r.text
    assert '<option value="kept" selected>' in r.text
    assert 'name="text" value="castellane"' in r.text


@pytest.mark.parametrize(("query", "message"), [
    ("hops=two", "hops must be an integer"),
    ("solve_min=high", "solve_min must be a number"),
    ("status=lost", "unknown status filter"),
])
def test_question_list_bad_filter_values_are_400(client, query, message):
    r = client.get(f"/questions?{query}")
    assert r.status_code == 400
    assert message in r.text


def test_question_page_draws_the_walk_with_evidence(client):
    r = client.get("/q/q1")
    assert r.status_code == 200
    chain = r.text[r.text.index('<ol class="chain"'):r.text.index("</ol>")]
    assert re.findall(r'<span class="title">([^<]+)</span>', chain) == [
        "Rivermouth Observatory", "Halden Vale", "Orrin Castellane"]
    assert "The observatory stands above <mark>Halden</mark>, a valley town." in chain
    assert "The vale was surveyed by <mark>Orrin Castellane</mark> in 1871." in chain
    assert '<span class="chip">O. Castellane</span>' in r.text
    assert "<td>answer_unique</td><td><span class=\"chip good\">pass</span></td>" in r.text
    assert 'href="/t/t1">attempt 0</a>' in r.text and 'href="/t/t3">attempt 1</a>' in r.text
    assert "start pagerank" in r.text  # the walk row was joined


def test_question_page_escapes_untrusted_text(client):
    r = client.get("/q/q3")
    assert r.status_code == 200
    assert "<script" not in r.text
    assert ESCAPED_SCRIPT in r.text
    assert "<span class=\"chip bad\">fail</span>" in r.text
    assert "ambiguous_answer" in r.text


def test_trajectory_timeline(client):
    r = client.get("/t/t1")
    assert r.status_code == 200
    assert '<a href="#turn-5">The answer first appears in an observation at turn 5' in r.text
    turns = re.findall(r'<div class="turn ([^"]+)" id="turn-(\d+)">', r.text)
    assert [int(i) for _, i in turns] == list(range(9))
    classes = {int(i): c.split() for c, i in turns}
    assert classes[2][:2] == ["lw-full", "judge-essential"]
    assert classes[6][:2] == ["lw-part", "judge-not_necessary"]
    assert classes[3][0] == "lw-zero" and "answer-turn" in classes[5]
    assert '<div class="context-event" id="context-4">context summarized at turn 4</div>' in r.text
    # observations collapsed, except the one where the answer first appears
    assert r.text.count('<details class="observation" >') == 2
    assert r.text.count('<details class="observation" open>') == 1
    assert 'surveyed by <mark class="answer">orrin castellane</mark> in 1871' in r.text
    assert '<code>search(query="observatory river mouth", k=5)</code>' in r.text
    assert '<pre class="thought">I should find the observatory first.</pre>' in r.text
    assert "<span>812 ms</span><span>tokens 300 / 40</span>" in r.text
    assert '<b>0</b> · <a href="/t/t3" title="answered">1</a>' in r.text  # the other attempt, one click away
    assert "<script" not in r.text and ESCAPED_SCRIPT in r.text


def test_trajectory_with_parse_error_and_no_labels(client):
    r = client.get("/t/t3")
    assert r.status_code == 200
    assert "parse error: no tool call found" in r.text
    assert "&lt;tool&gt;broken" in r.text
    assert "never appears in an observation" in r.text
    assert '<span class="chip bad" title="filter/answer_match' in r.text
    assert "lw-unlabelled" in r.text


def test_unknown_ids_are_404(client):
    assert client.get("/q/nope").status_code == 404
    r = client.get("/t/%3Cscript%3E")
    assert r.status_code == 404 and "&#39;&lt;script&gt;&#39;" in r.text


def test_sql_box_runs_read_only_queries_escaped(client):
    r = client.get("/sql", params={"q": "SELECT question_id, hops FROM questions ORDER BY question_id"})
    assert r.status_code == 200
    assert re.findall(r"<tr><td>(q\d)</td><td>(\d)</td></tr>", r.text) == [("q1", "2"), ("q2", "3"), ("q3", "1")]
    r = client.get("/sql", params={"q": "SELECT 1 AS a, 2 AS a"})
    assert "<tr><th>a</th><th>a_1</th></tr>" in r.text and "<tr><td>1</td><td>2</td></tr>" in r.text
    r = client.get("/sql", params={"q": f"SELECT '{SCRIPT}' AS s"})
    assert "<script" not in r.text.replace("<textarea", "") and ESCAPED_SCRIPT in r.text
    assert client.get("/sql").status_code == 200


@pytest.mark.parametrize("sql", [
    "COPY questions TO '/tmp/hopforge-leak.csv'",
    "ATTACH '/tmp/other.duckdb' AS other",
    "SELECT 1; DROP TABLE questions",
    "INSTALL httpfs",
    "SET enable_external_access = true",
])
def test_sql_box_refuses_with_the_guards_message(client, sql):
    with pytest.raises(SQLGuardError) as err:
        guard_sql(sql)
    r = client.get("/sql", params={"q": sql})
    assert r.status_code == 400
    expected = str(err.value).replace("'", "&#39;")
    assert f'<p class="err" id="sql-error">{expected}</p>' in r.text
    assert not Path("/tmp/hopforge-leak.csv").exists()


def test_sql_box_refuses_file_access_outside_the_data(client):
    r = client.get("/sql", params={"q": "SELECT * FROM read_csv('/etc/passwd')"})
    assert r.status_code == 400
    assert "refused: Permission Error" in r.text and "root:" not in r.text


def test_security_headers_and_host_check(client):
    r = client.get("/")
    assert "script-src" not in r.headers["content-security-policy"]  # default-src 'none' forbids scripts
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    assert client.get("/", headers={"host": "attacker.example"}).status_code == 400
    assert client.get("/", headers={"host": "localhost:8765"}).status_code == 200
    with TestClient(create_app(client.app.state.catalog.out)) as default_host:  # Host: testserver
        assert default_host.get("/").status_code == 400


def test_templates_never_mark_data_safe():
    for tpl in TEMPLATES.glob("*.html"):
        assert "|safe" not in tpl.read_text().replace(" ", ""), tpl


def test_new_shards_show_up_without_restarting(small_run, fresh_client):
    client = fresh_client
    assert '<b id="total">3</b>' in client.get("/questions").text
    with ShardWriter(small_run, "questions", run_id="r2") as w:
        w.write({"question_id": "q4", "question": "A late question?", "answer": "Late", "hops": 2})
    r = client.get("/questions")
    assert '<b id="total">4</b>' in r.text and "q4" in question_ids(r.text)
    assert "questions written</td><td class=\"n\">4" in client.get("/").text


def test_missing_data_directory_is_a_clear_error(tmp_path):
    with client_for(tmp_path / "absent") as c:
        r = c.get("/questions")
    assert r.status_code == 400
    assert "does not exist" in r.text


def _link(html: str, rel: str) -> str:
    return re.search(rf'<a href="([^"]+)" rel="{rel}">', html).group(1).replace("&amp;", "&")


def test_paging_over_200k_questions_returns_the_right_slices(tmp_path):
    t0 = time.perf_counter()
    out = write_many_questions(tmp_path / "big", 200_000, rows_per_shard=50_000)
    build_s = time.perf_counter() - t0
    with client_for(out) as c:
        r = c.get("/questions")
        assert question_ids(r.text) == [f"q{i:08d}" for i in range(50)]
        assert '<b id="total">200,000</b>' in r.text and "page <span id=\"page-no\">1</span> of 4,000" in r.text
        assert 'rel="prev"' not in r.text
        # follow "next" twice and "previous" once, as a person would
        for page in (1, 2):
            r = c.get(_link(r.text, "next"))
            assert question_ids(r.text) == [f"q{i:08d}" for i in range(50 * page, 50 * page + 50)]
        assert question_ids(c.get(_link(r.text, "prev")).text) == [f"q{i:08d}" for i in range(50, 100)]
        # a deep page crosses into the fourth shard
        t0 = time.perf_counter()
        r = c.get("/questions", params={"page": 3601})
        deep_s = time.perf_counter() - t0
        assert question_ids(r.text) == [f"q{i:08d}" for i in range(180_000, 180_050)]
        # a filtered deep page keeps the filter in its links (hops = 2 + i % 4, so hops=5 is i % 4 == 3)
        r = c.get("/questions", params={"hops": 5, "page": 500})
        assert question_ids(r.text) == [f"q{4 * k + 3:08d}" for k in range(24_950, 25_000)]
        assert '<b id="total">50,000</b>' in r.text
        assert _link(r.text, "prev") == "/questions?hops=5&page=499"
        r = c.get("/questions", params={"hops": 5, "page": 1000})
        assert question_ids(r.text) == [f"q{i:08d}" for i in range(199_803, 200_000, 4)]
        assert 'rel="next"' not in r.text  # the last page
        last = c.get("/questions", params={"page": 4000})
        assert question_ids(last.text)[-1] == "q00199999" and 'rel="next"' not in last.text
        assert question_ids(c.get("/questions", params={"page": 4001}).text) == []
        assert c.get("/questions", params={"page": 0}).status_code == 400
    assert build_s < 30, f"building 200k rows took {build_s:.1f}s"
    assert deep_s < 5, f"a deep page took {deep_s:.2f}s"


def test_a_300_turn_trajectory_renders_every_turn_and_jumps_to_the_answer(tmp_path):
    out = tmp_path / "data"
    with ShardWriter(out, "questions", run_id="r1") as w:
        w.write({"question_id": "qL", "question": "Long?", "answer": "Needle Hill", "answer_aliases": ["Mt. Needle"],
                 "hops": 4})
    rows = [{"trajectory_id": "tL", "question_id": "qL", "turn_index": 0, "role": "user", "content": "Long?"}]
    for i in range(1, 300):
        if i % 2:
            rows.append({"trajectory_id": "tL", "question_id": "qL", "turn_index": i, "role": "assistant",
                         "reasoning": f"step {i}", "tool_name": "search", "tool_args": {"query": f"q{i}", "k": 3}})
        else:
            text = "Mt. Needle rises here." if i == 212 else f"result {i} about Needle Hillside"
            rows.append({"trajectory_id": "tL", "question_id": "qL", "turn_index": i, "role": "tool",
                         "tool_name": "search", "content": text,
                         "context_action": "truncated" if i == 150 else "none"})
    with ShardWriter(out, "turns", run_id="r1") as w:
        w.write_many(rows)
    with client_for(out) as c:
        r = c.get("/t/tL")
    assert r.status_code == 200
    assert len(re.findall(r'<div class="turn [^"]+" id="turn-\d+">', r.text)) == 300
    # "Needle Hillside" is not the answer (whole words only); the alias at turn 212 is
    assert '<a href="#turn-212">The answer first appears in an observation at turn 212' in r.text
    assert '<mark class="answer">Mt. Needle</mark> rises here.' in r.text
    assert '<div class="context-event" id="context-150">context truncated at turn 150</div>' in r.text
    minimap = r.text[r.text.index('<nav class="minimap"'):r.text.index("</nav>")]
    ticks = re.findall(r'<a href="#turn-(\d+)" class="([^"]+)"', minimap)
    assert [int(i) for i, _ in ticks] == list(range(300))
    assert "answer-tick" in ticks[212][1] and "context-tick" in ticks[150][1] and "role-assistant" in ticks[1][1]
    assert "status <b>–</b>" in r.text  # turns written before the trajectory row: still readable


def test_data_from_a_newer_schema_is_refused_with_the_reason(small_run):
    manifest = small_run / "kept" / "_manifest.jsonl"
    manifest.write_text(re.sub(r'"schema_version":\d+', '"schema_version":999', manifest.read_text()))
    with client_for(small_run) as c:
        r = c.get("/")
    assert r.status_code == 400
    assert "table &#39;kept&#39; was written with schema version 999" in r.text and "upgrade hopforge" in r.text


def test_the_question_list_shows_one_chain_of_stage_runs(tmp_path):
    out = tmp_path / "data"
    chains = []
    for seed, ids in ((0, range(4)), (1, range(2, 5))):  # q2 and q3 in both runs
        cfg = load_config(None, {"run.out": str(out), "run.seed": seed, "graph.dump": "fixture-wiki.xml"})
        qs = [{"question_id": f"q{i}", "question": f"Q{i}?", "answer": "A", "hops": 2, "passed": True} for i in ids]
        chains.append(complete_chain(cfg, {"questions": {"questions": qs}})["questions"])
    with client_for(out) as c:  # the most recently completed chain, each question once
        r = c.get("/questions")
        assert question_ids(r.text) == ["q2", "q3", "q4"] and '<b id="total">3</b>' in r.text
    pinned = create_app(out, selection=lambda: selection_for(chains[0]))  # `hopforge view --config`
    with TestClient(pinned, base_url="http://127.0.0.1:8765") as c:
        assert question_ids(c.get("/questions").text) == ["q0", "q1", "q2", "q3"]
