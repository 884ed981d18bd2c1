"""Question quality report (issue 15): how hard, unique, leak-free and followable the questions are.

For each dump: ingest (graph stage), run the question stage (``--n`` template questions, ``--seed``),
then report, from the questions table (the same SQL the data card runs,
``hopforge.publish.card.QUESTION_QUALITY_QUERIES``): pass rate, reject reasons, one-shot top-5 rate,
give-away rate, leak rate by form, certificate distribution, solvability rate, hops distribution and
the stage's seconds.

Independent cross-checks (not the code that gates the questions):

* an independent BM25 over whole pages (title + text, one document per page), written in this
  file with its own tokenizer and no stop words (the gates use the project's bm25s indexes): the
  answer page's rank for the whole question (top 5 = one-shot) and for each sentence or
  comma-separated clause alone (rank 1 = give-away);
* an independent, over-inclusive leak scan: any word of the question that starts with the first
  letters of a walk entity's title or redirect word (at least 5 letters, all but its last two)
  counts as a possible leak. It flags harmless words too ("American" for "America"); they are
  listed for a person to read.

    PYTHONPATH=src python benchmarks/question_quality.py --dump ../shared/wiki/enwiki-233.xml.bz2 \
        --n 1000 --seed 7 [--work DIR] [--samples 30]

Wall seconds are measured around the stage (``seconds`` in its stats) and as process CPU time;
they are reported, never asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import resource
import sys
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np

from hopforge.config import load_config
from hopforge.graph import run_ingest
from hopforge.publish.card import QUESTION_QUALITY_QUERIES
from hopforge.stage import resolve, selection_for
from hopforge.storage import query_arrow, read_table
from hopforge.synth import run_questions

_CLAUSE = re.compile(r"[.;,()?!]+")


class WholePageIndex:
    """Okapi BM25 (k1 = 1.2, b = 0.75) with one document per page (title + text), written here with
    scipy: its own tokenizer (lowercase words, no stop-word list), so it shares no code or setting
    with the index the gates use."""

    def __init__(self, titles: list[str], texts: list[str], k1: float = 1.2, b: float = 0.75) -> None:
        import scipy.sparse as sp

        self.row = {t: i for i, t in enumerate(titles)}
        docs = [re.findall(r"\w+", f"{t} {x}".lower()) for t, x in zip(titles, texts, strict=True)]
        self.vocab: dict[str, int] = {}
        rows, cols, vals = [], [], []
        for i, d in enumerate(docs):
            for w, c in Counter(d).items():
                rows.append(i)
                cols.append(self.vocab.setdefault(w, len(self.vocab)))
                vals.append(c)
        tf = sp.csr_matrix((np.asarray(vals, float), (rows, cols)), shape=(len(docs), len(self.vocab)))
        n_docs = len(docs)
        df = np.bincount(cols, minlength=len(self.vocab))
        self.idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5))
        lengths = np.asarray([len(d) for d in docs], float)
        norm = k1 * (1 - b + b * lengths / lengths.mean())
        tf = tf.tocoo()
        w = tf.data * (k1 + 1) / (tf.data + norm[tf.row])
        self.weights = sp.csc_matrix((w, (tf.row, tf.col)), shape=tf.shape)

    def rank(self, query: str, title: str) -> int | None:
        ids = sorted({self.vocab[w] for w in re.findall(r"\w+", query.lower()) if w in self.vocab})
        if not ids or title not in self.row:
            return None
        scores = np.asarray(self.weights[:, ids] @ self.idf[ids]).ravel()
        s = scores[self.row[title]]
        return None if s <= 0 else int(np.count_nonzero(scores > s)) + 1


def possible_leaks(question: str, names: list[str]) -> list[str]:
    words = [w.lower() for w in re.findall(r"\w+", question)]
    found = []
    for name in names:
        for part in re.findall(r"\w+", name):
            if len(part) >= 5 and part[:1].isupper():
                stem = part[:-2].lower()
                found += [f"{w} ~ {name}" for w in words if w.startswith(stem)]
    return found


def report(dump: Path, work: Path, n: int, seed: int, samples: int, overrides: dict[str, object] | None = None
           ) -> str:
    out = work / dump.name.split(".")[0]
    cfg = load_config(None, {"run.out": str(out), "graph.dump": str(dump), "graph.workers": 2, "run.seed": seed,
                             "synth.n_questions": n, **(overrides or {})})
    extra = "".join(f", {k} = {v}" for k, v in (overrides or {}).items())
    lines = [f"### {dump.name}: {n} template questions, seed {seed}{extra}", ""]
    if resolve(cfg, "graph").complete() is None:
        g = run_ingest(cfg)
        lines.append(f"Graph: {g.nodes} nodes, {g.edges} edges (ingest {g.seconds:.1f} s).")
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        stats = run_questions(cfg)
    except Exception as e:  # noqa: BLE001 - the report shows the one line the CLI would print
        lines += [f"The question stage refuses: `{e}`", ""]
        return "\n".join(lines)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if stats.empty:
        lines += [f"Empty question stage: {stats.empty}.", "", f"Stage seconds {stats.seconds:.1f}.", ""]
        return "\n".join(lines)
    sel = selection_for(resolve(cfg, "questions"))
    q = {k: query_arrow(out, v, selection=sel).to_pylist() for k, v in QUESTION_QUALITY_QUERIES.items()}
    rows = read_table(out, "questions", run=sel["questions"][0]).to_pylist()
    passed = [r for r in rows if r["passed"]]
    p = q["pass_rate"][0]
    lines += [f"Stage time {stats.seconds:.1f} s wall (`seconds` in its stats); this process {wall:.1f} s wall, "
              f"{cpu:.1f} s CPU; load average {os.getloadavg()[0]:.1f}; peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB.", "",
              f"**{p['passed']} of {p['questions']} passed** (pass rate {p['pass_rate']}).", ""]
    lines += ["| questions | count | one-shot top-5 | give-away | leak | unique (1 candidate) | solvable by replay |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['scope']} | {r['questions']} | {r['one_shot_top5_rate']} | {r['giveaway_rate']} | "
              f"{r['leak_rate']} | {r['unique_rate']} | {r['solvable_rate']} |" for r in q["quality"]]
    reasons = query_arrow(out, "SELECT step, reason, count(*) AS n FROM rejects WHERE stage = 'questions' "
                          "GROUP BY ALL ORDER BY n DESC, step, reason", selection=sel).to_pylist()
    lines += ["", "Reject reasons (a question can fail several checks): " +
              ", ".join(f"`{r['reason']}` {r['n']}" for r in reasons) + "."]
    lines += ["", "Certificate (pages fitting the whole question): " +
              ", ".join(f"{r['candidates']}: {r['questions']} ({r['passed']} passed)" for r in q["certificates"]) + "."]
    lines += ["Hops (questions / passed): " + ", ".join(f"{r['hops']}: {r['questions']} / {r['passed']}"
                                                        for r in q["hops"]) + "."]
    leaks = Counter((lk["form"], lk["source"]) for r in rows for lk in (r["leaks"] or []))
    lines += ["Leaks by form and name source (all questions): " +
              (", ".join(f"{f}/{s} {c}" for (f, s), c in leaks.most_common()) or "none") + "."]
    struct = [r for r in rows if all(c["passed"] for c in r["checks"] if c["name"] in ("shortcut", "single_page"))]
    lines += [f"Link-structure ceiling: {len(struct)} of {len(rows)} walks pass `shortcut` and `single_page` "
              f"(checks that predate issue 15); {len(passed)} of those {len(struct)} pass every new gate too."]

    # Independent cross-checks on the passed questions.
    pages = read_table(out, "pages", run=sel["pages"][0], columns=["title", "text"])
    index = WholePageIndex(pages.column("title").to_pylist(), [t or "" for t in pages.column("text").to_pylist()])
    red = read_table(out, "redirects", run=sel["redirects"][0], columns=["title", "target"]).to_pylist()
    redirects: dict[str, list[str]] = {}
    for r in red:
        redirects.setdefault(r["target"], []).append(r["title"])
    one_shot = give = 0
    flagged: list[str] = []
    for r in passed:
        rk = index.rank(r["question"], r["answer"])
        one_shot += rk is not None and rk <= 5
        clauses = [c.strip() for c in _CLAUSE.split(r["question"]) if len(c.split()) >= 2]
        give += any(index.rank(c, r["answer"]) == 1 for c in clauses)
        names = [t for t in r["path"]] + [x for t in r["path"] for x in redirects.get(t, [])]
        flagged += [f"{x} ({r['question_id'][:8]})" for x in possible_leaks(r["question"], names)]
    k = max(len(passed), 1)
    lines += ["", f"Independent whole-page BM25 index (title + text), passed questions: one-shot top-5 rate "
              f"{one_shot / k:.3f} ({one_shot} of {len(passed)}), give-away rate {give / k:.3f} ({give} of "
              f"{len(passed)}). Independent prefix leak scan: {len(flagged)} word(s) flagged"
              + (f": {', '.join(sorted(set(flagged))[:12])}" if flagged else "") + "."]
    if samples and passed:
        rng = random.Random(seed)
        lines += ["", f"{min(samples, len(passed))} random passed questions (answer in brackets):", ""]
        for r in rng.sample(passed, min(samples, len(passed))):
            lines.append(f"1. ({r['hops']} hops) {r['question']} [{r['answer']}]")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dump", action="append", type=Path, required=True, help="dump file (repeatable)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--work", type=Path, default=None, help="OUT parent directory (default: a temp dir)")
    ap.add_argument("--samples", type=int, default=0, help="random passed questions to print")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for a trade-off run, e.g. synth.min_clue_pages=3 (repeatable)")
    a = ap.parse_args(argv)
    overrides = {k: _value(v) for k, v in (x.split("=", 1) for x in a.set)}
    work = a.work or Path(tempfile.mkdtemp(prefix="qq-"))
    head = [f"Command: `PYTHONPATH=src python benchmarks/question_quality.py {' '.join(sys.argv[1:])}`",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
            f"date {date.today().isoformat()}", ""]
    print("\n".join(head + [report(d.resolve(), work, a.n, a.seed, a.samples, overrides) for d in a.dump]))


def _value(text: str) -> object:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


if __name__ == "__main__":
    main()
