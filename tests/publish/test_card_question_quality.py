"""The question-quality part of the data card (hopforge.publish.card, issue 15): its figures are the
questions table's quality columns, as `hopforge sql` computes them independently."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from hopforge.cli import app
from hopforge.publish.card import render_card
from hopforge.publish.export import export_dataset
from hopforge.synth import run_questions
from tests.synth.conftest import TOY_LINKS, TOY_PAGES, TOY_REDIRECTS, build_graph, toy_config


def _sql(out, query):
    res = CliRunner().invoke(app, ["sql", query, "--out", str(out), "--format", "json"])
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def _rows(text, header):
    lines = text.splitlines()
    start = lines.index(header)
    out = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        out.append([c.strip().replace("\\", "") for c in ln.strip().strip("|").split("|")])
    return out


def test_card_shows_the_question_quality_figures(tmp_path):
    out = tmp_path / "data"
    build_graph(out, TOY_PAGES, TOY_LINKS, TOY_REDIRECTS)
    cfg = toy_config(out, **{"synth.n_questions": 20, "synth.hops_min": 2, "synth.hops_max": 3})
    run_questions(cfg)
    dest = tmp_path / "export"
    export_dataset(cfg, "trl", dest)
    text = render_card(cfg, dest).read_text()

    (counts,) = _sql(out, "SELECT count(*) AS n, count(*) FILTER (WHERE passed) AS p FROM questions")
    assert re.search(rf"\b{counts['p']} of {counts['n']} composed questions passed every check", text)
    rates = {r[0]: r for r in _rows(text, "| questions | count | one-shot top-5 | give-away | leak | unique | solvable |")}
    (passed,) = _sql(out, "SELECT count(*) AS n, avg(CASE WHEN solvable THEN 1 ELSE 0 END) AS s, "
                          "avg(CASE WHEN best_clue_rank = 1 THEN 1 ELSE 0 END) AS g FROM questions WHERE passed")
    assert int(rates["passed"][1]) == passed["n"] == counts["p"]
    assert float(rates["passed"][6]) == round(passed["s"], 3) == 1.0  # every passed question is solvable
    assert float(rates["passed"][3]) == round(passed["g"], 3) == 0.0  # and has no give-away clue
    certs = _rows(text, "| pages fitting the whole question | questions | passed |")
    by_sql = _sql(out, "SELECT candidates AS c, count(*) AS n FROM questions GROUP BY 1")
    assert sum(int(r[1]) for r in certs) == sum(r["n"] for r in by_sql) == counts["n"]
    hops = {int(r[0]): int(r[1]) for r in _rows(text, "| hops | questions | passed |")}
    assert hops == {r["hops"]: r["n"] for r in _sql(out, "SELECT hops, count(*) AS n FROM questions GROUP BY 1")}
    assert "No question names a walk entity in any form." in text
    assert re.search(r"the question stage\s+took [0-9.]+ s", text)
