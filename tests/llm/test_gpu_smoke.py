"""benchmarks/gpu_smoke.sh cannot run here (no GPU): its command-line assembly is checked with
--dry-run, its refusal without a GPU, and the report's reading of vLLM's prefix-cache counters."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hopforge.config import load_config

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_smoke.sh"


def smoke(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO / "src"), "DUMP": "/data/enwiki-233.xml.bz2"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=120)


def test_dry_run_assembles_one_vllm_replica_per_gpu_and_the_pool_config(tmp_path: Path) -> None:
    out = tmp_path / "smoke"
    r = smoke("Qwen/Qwen3-8B", "--replicas", "2", "--out", str(out), "--port", "8200", "--dry-run", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    replicas = [ln for ln in lines if ln.startswith("CUDA_VISIBLE_DEVICES=")]
    assert len(replicas) == 2
    for i, line in enumerate(replicas):
        env, *cmd = shlex.split(line)
        assert env == f"CUDA_VISIBLE_DEVICES={i}"
        assert cmd[:3] == ["vllm", "serve", "Qwen/Qwen3-8B"]
        assert cmd[cmd.index("--port") + 1] == str(8200 + i) and cmd[cmd.index("--max-model-len") + 1] == "32768"
        joined = " ".join(cmd)
        assert "--enable-auto-tool-choice --tool-call-parser hermes" in joined
        assert joined.endswith("--enable-prefix-caching")
    cfg = load_config(out / "gpu-smoke.toml")
    assert cfg.teacher.backend == "vllm" and cfg.teacher.base_urls == ["http://127.0.0.1:8200", "http://127.0.0.1:8201"]
    assert cfg.synth.n_questions == 50 and cfg.graph.dump == "/data/enwiki-233.xml.bz2"
    assert f"hopforge run --config {out}/gpu-smoke.toml --json {out}/run-summary.json" in lines
    assert lines[-1].endswith("--metrics http://127.0.0.1:8200,http://127.0.0.1:8201")


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_without_a_gpu_it_refuses_with_one_line(tmp_path: Path) -> None:
    r = smoke("Qwen/Qwen3-8B", "--out", str(tmp_path / "o"), tmp_path=tmp_path)
    assert r.returncode == 2 and "no NVIDIA GPU here" in r.stderr


@pytest.mark.parametrize(("args", "message"), [((), "usage:"), (("--dry-run",), "usage:"),
                                                (("M", "--replicas", "0"), "--replicas must be a positive integer"),
                                                (("M", "--bogus"), "usage:")])
def test_bad_arguments(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    r = smoke(*args, tmp_path=tmp_path)
    assert r.returncode == 2 and message in r.stderr


def test_report_reads_vllm_prefix_cache_counters() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from gpu_smoke_report import prefix_counters, resent_ratio
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    page = """# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="Qwen/Qwen3-8B"} 1.5e+06
vllm:prefix_cache_queries_total{engine="1",model_name="Qwen/Qwen3-8B"} 500000.0
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="Qwen/Qwen3-8B"} 1.4e+06
vllm:prefix_cache_hits_total{engine="1",model_name="Qwen/Qwen3-8B"} 480000.0
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen3-8B"} 3.0
"""
    assert prefix_counters(page) == (2_000_000.0, 1_880_000.0)
    assert resent_ratio(2_000_000, 1_880_000, 100_000) == pytest.approx(1.2)
    assert prefix_counters("vllm:num_requests_running 1.0\n") is None
