"""The numbers benchmarks/gpu_smoke.sh prints after its pipeline run: the funnel, rollout tokens/s and
the re-sent ratio from vLLM's prefix-cache counters.

    python benchmarks/gpu_smoke_report.py --out OUT --summary OUT/run-summary.json \\
        --metrics http://127.0.0.1:8100,http://127.0.0.1:8101
"""

from __future__ import annotations

import argparse
import re
import urllib.request
from pathlib import Path

import orjson

# vLLM (v1 engine) counts prompt tokens looked up in / found in its prefix cache. Prometheus adds
# "_total" to counters; labels (model_name, engine) vary by version.
_COUNTER = re.compile(r"^vllm:prefix_cache_(queries|hits)(?:_total)?(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$", re.M)


def prefix_counters(metrics_text: str) -> tuple[float, float] | None:
    """(queried, hit) prompt tokens summed over the series in one /metrics page; None when absent."""
    sums = {"queries": 0.0, "hits": 0.0}
    seen = False
    for kind, value in _COUNTER.findall(metrics_text):
        sums[kind] += float(value)
        seen = True
    return (sums["queries"], sums["hits"]) if seen else None


def resent_ratio(queried: float, hit: float, new_tokens: int) -> float | None:
    """Prompt tokens prefilled anew over the tokens the turns added (1.0: append-only)."""
    return (queried - hit) / new_tokens if new_tokens else None


def new_tokens(out: Path) -> int:
    """Completion tokens plus tool-result tokens of the chain's trajectories: what the turns added."""
    from hopforge.storage import query_arrow

    row = query_arrow(out, "SELECT (SELECT coalesce(sum(tokens_out), 0) FROM trajectories) + "
                           "(SELECT coalesce(sum(tokens_in), 0) FROM turns WHERE role <> 'assistant' "
                           "AND turn_index > 1) AS n").to_pylist()[0]
    return int(row["n"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--summary", type=Path, required=True, help="the JSON of `hopforge run --json`")
    ap.add_argument("--metrics", required=True, help="comma-separated vLLM base URLs")
    a = ap.parse_args(argv)
    summary = orjson.loads(a.summary.read_bytes())
    rows = summary["funnel"]["rows"]
    print("funnel (this chain):", ", ".join(f"{t} {n['run']:,}" for t, n in rows.items() if n["run"]))
    ro = next((s for s in summary["stages"] if s["stage"] == "rollouts"), None)
    if ro and ro["seconds"]:
        st = ro["stats"]
        print(f"rollouts: {st.get('trajectories', 0)} trajectories, {st.get('turns', 0)} turns, "
              f"{st.get('tokens', 0) / ro['seconds']:,.0f} tokens/s (prompt + completion) over {ro['seconds']:.0f} s")
    queried = hit = 0.0
    found = False
    for url in [u for u in a.metrics.split(",") if u]:
        with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=10) as r:  # noqa: S310 - our replicas
            got = prefix_counters(r.read().decode())
        if got is not None:
            found = True
            queried, hit = queried + got[0], hit + got[1]
    if not found:
        print("re-sent ratio: n/a (this vLLM exposes no vllm:prefix_cache_queries/hits counters)")
        return
    n = new_tokens(a.out)
    ratio = resent_ratio(queried, hit, n)
    print(f"prefix cache: {hit:,.0f} of {queried:,.0f} prompt tokens hit ({hit / max(queried, 1):.1%})")
    print(f"re-sent ratio: {ratio:.2f} (prompt tokens prefilled anew {queried - hit:,.0f} / tokens added {n:,})"
          if ratio is not None else "re-sent ratio: n/a (no tokens added)")


if __name__ == "__main__":
    main()
