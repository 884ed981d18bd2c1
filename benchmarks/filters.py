"""Filter + rule-label throughput and MinHash dedup time on synthetic data.

    PYTHONPATH=src python benchmarks/filters.py [--trajectories 2000] [--questions 100000] [--e2e 1000]

* steps: the in-memory filter chain (format, effort, degeneration, answer, duplicate
  trajectory) plus rule labels on synthetic 50-turn trajectories (24 calls, ~1.5 kB
  observations), extrapolated to 100,000 trajectories.
* e2e: run_filters + run_labels through storage (zstd Parquet shards in a temp dir),
  i.e. including episode reassembly and writing kept / rejects / turn_labels.
* minhash: near_duplicate_questions (MinHash + LSH, 128 permutations) on synthetic
  ~18-word questions, extrapolated linearly to 1M (LSH insert/query is O(1) per item;
  signatures dominate).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "filters"))

from trajectory_builders import make_turns, question, trajectory  # noqa: E402

from hopforge.config import load_config  # noqa: E402
from hopforge.filters.correctness import AnswerFilter  # noqa: E402
from hopforge.filters.dedup import DuplicateTrajectoryFilter, near_duplicate_questions  # noqa: E402
from hopforge.filters.degeneration import DegenerationFilter  # noqa: E402
from hopforge.filters.effort import EffortFilter  # noqa: E402
from hopforge.storage.episodes import Episode  # noqa: E402
from hopforge.filters.format import FormatFilter  # noqa: E402
from hopforge.labels.rules import apply_rules_policy, rule_labels  # noqa: E402
from hopforge.filters import run_filters  # noqa: E402
from hopforge.labels.stage import run_labels  # noqa: E402
from hopforge.testing.stages import complete_chain  # noqa: E402
from hopforge.filters.steps import FilterPipeline  # noqa: E402

VOCAB = [f"w{i}" for i in range(5000)] + ["Austria", "Vienna", "Danube", "river", "capital", "born"]


def synthetic(n: int, seed: int = 0) -> tuple[list[dict], list[Episode]]:
    rng = random.Random(seed)
    q = question("q0")
    questions, episodes = [], []
    for i in range(n):
        qid = f"q{i // 4}"  # 4 attempts per question
        if i % 4 == 0:
            text = "Which river flows through " + " ".join(rng.choices(VOCAB[:5000], k=14)) + "?"
            questions.append({**q, "question_id": qid, "question": text})
        actions = [("say", " ".join(rng.choices(VOCAB, k=30)))]
        for j in range(23):
            obs = " ".join(rng.choices(VOCAB, k=250))
            if j % 2:
                actions.append(("visit", f"Page {rng.randrange(10_000)}", obs))
            else:
                actions.append(("search", " ".join(rng.choices(VOCAB, k=4)), obs))
        actions.append(("answer", "Danube" if rng.random() < 0.7 else "Rhine"))
        turns = make_turns(f"t{i}", qid, actions)
        episodes.append(Episode(trajectory(f"t{i}", qid, actions, num_turns=len(turns)), turns, questions[-1]))
    return questions, episodes


def bench_steps(n: int) -> dict:
    _, eps = synthetic(n)
    assert len(eps[0].turns) == 50, len(eps[0].turns)
    steps = [FormatFilter(), EffortFilter(3, 500_000), DegenerationFilter(), AnswerFilter(0.8),
             DuplicateTrajectoryFilter()]
    kept: list[Episode] = []
    c0 = time.process_time()
    t0 = time.perf_counter()
    asyncio.run(FilterPipeline(steps).run(eps, kept.append, lambda *a: None))
    t1 = time.perf_counter()
    for ep in eps:
        apply_rules_policy(ep, rule_labels(ep))
    t2 = time.perf_counter()
    cpu = time.process_time() - c0
    total = t2 - t0
    return {"trajectories": n, "kept": len(kept), "filter_s": t1 - t0, "label_s": t2 - t1, "cpu_s": cpu,
            "traj_per_s": n / total, "traj_per_cpu_s": n / cpu, "extrapolated_100k_s": 100_000 * total / n}


def bench_e2e(n: int) -> dict:
    questions, eps = synthetic(n, seed=1)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        cfg = load_config(None, {"run.out": str(out), "graph.dump": "bench.xml"})
        # The synthetic rows, recorded as the complete output of the stages before the filter stage.
        complete_chain(cfg, {"questions": {"questions": questions},
                             "rollouts": {"trajectories": [e.trajectory for e in eps],
                                          "turns": [t for e in eps for t in e.turns]}})
        c0 = time.process_time()
        t0 = time.perf_counter()
        rep = run_filters(cfg)
        t1 = time.perf_counter()
        lab = run_labels(cfg)
        t2 = time.perf_counter()
        cpu = time.process_time() - c0
    return {"trajectories": n, "kept": rep.kept, "labelled": lab.trajectories, "filter_s": t1 - t0,
            "label_s": t2 - t1, "cpu_s": cpu, "traj_per_s": n / (t2 - t0), "traj_per_cpu_s": n / cpu,
            "extrapolated_100k_s": 100_000 * (t2 - t0) / n, "funnel": [(s["step"], s["in"], s["kept"])
                                                                       for s in rep.steps]}


def bench_minhash(n: int) -> dict:
    rng = random.Random(2)
    words = [f"t{i}" for i in range(20_000)]
    qs = []
    for i in range(n):
        if i % 10 == 9:  # every tenth question is a one-word edit of the previous one
            base = qs[-1]["question"].split()
            base[rng.randrange(len(base))] = rng.choice(words)
            text = " ".join(base)
        else:
            text = " ".join(rng.choices(words, k=18))
        qs.append({"question_id": f"q{i:08d}", "question": text})
    c0 = time.process_time()
    t0 = time.perf_counter()
    dups = near_duplicate_questions(qs, threshold=0.7, num_perm=128)
    s = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {"questions": n, "planted_near_duplicates": n // 10, "found": len(dups), "seconds": s, "cpu_s": cpu,
            "extrapolated_1m_s": s * 1_000_000 / n, "extrapolated_1m_cpu_s": cpu * 1_000_000 / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trajectories", type=int, default=2000)
    ap.add_argument("--e2e", type=int, default=1000)
    ap.add_argument("--questions", type=int, default=100_000)
    a = ap.parse_args()
    for name, fn, n in (("steps", bench_steps, a.trajectories), ("e2e", bench_e2e, a.e2e),
                        ("minhash", bench_minhash, a.questions)):
        if n:
            print(name, {k: round(v, 3) if isinstance(v, float) else v for k, v in fn(n).items()}, flush=True)


if __name__ == "__main__":
    main()
