"""Hugging Face dataset cards generated from the data, never written by hand.

``render_card(cfg, dest)`` reads the export manifest in ``dest``, runs the
DuckDB queries in :data:`CARD_QUERIES` in the guarded read-only catalog
``query_arrow`` and ``hopforge sql`` use, so every number in the card is one
``hopforge sql`` away), draws PNG plots with matplotlib's Agg backend, and
renders ``data_cards/dataset_card.md.j2`` into ``dest/README.md``.

Wikipedia and model text are untrusted: the Jinja environment autoescapes
every value (no raw HTML passes), table cells also escape Markdown syntax, and
example rows sit in ``<pre>`` blocks where Markdown is not interpreted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
import re
import site
import sys
import sysconfig
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from hopforge import __version__
from hopforge.config import Config
from hopforge.errors import StorageError
from hopforge.storage.catalog import guard_sql, open_catalog
from hopforge.publish.export import MANIFEST_NAME

log = logging.getLogger(__name__)

TEMPLATE_NAME = "dataset_card.md.j2"


def _template_dir() -> Path:
    """data_cards/ of the source tree (editable install, tests), else where a wheel installed it.

    A wheel puts its data files under the install scheme's data root: ``sys.prefix`` for a venv
    or system install, the user base for ``pip install --user``.
    """
    source = Path(__file__).resolve().parents[3] / "data_cards"
    if (source / TEMPLATE_NAME).exists():
        return source
    roots = [sys.prefix, sysconfig.get_path("data"), site.getuserbase()]
    for root in roots:
        candidate = Path(root) / "share" / "hopforge" / "data_cards"
        if (candidate / TEMPLATE_NAME).exists():
            return candidate
    return Path(sys.prefix) / "share" / "hopforge" / "data_cards"  # named in the not-found error


TEMPLATE_DIR = _template_dir()
PLOT_SIZE_IN = (6.4, 4.0)
PLOT_DPI = 100  # -> 640 x 400 pixel PNGs
EXAMPLE_CHARS = 400
EXAMPLES = 2

_KEPT = "trajectory_id IN (SELECT trajectory_id FROM kept)"

# Question quality (issue 15), over the questions table's quality columns (schema v2; rows written
# before it have nulls there and are left out of the rates). benchmarks/question_quality.py runs
# the same queries. "one-shot" = the answer page in the search index's top 5 for the whole question;
# "give-away" = one clue of the question alone ranks it first.
QUESTION_QUALITY_QUERIES: dict[str, str] = {
    "quality": """
        SELECT scope, count(*) AS questions,
               round(avg(CASE WHEN one_shot_rank <= 5 THEN 1.0 ELSE 0.0 END), 3) AS one_shot_top5_rate,
               round(avg(CASE WHEN best_clue_rank = 1 THEN 1.0 ELSE 0.0 END), 3) AS giveaway_rate,
               round(avg(CASE WHEN len(leaks) > 0 THEN 1.0 ELSE 0.0 END), 3) AS leak_rate,
               round(avg(CASE WHEN candidates = 1 THEN 1.0 ELSE 0.0 END), 3) AS unique_rate,
               round(avg(CASE WHEN solvable THEN 1.0 ELSE 0.0 END), 3) AS solvable_rate
        FROM (SELECT 'all' AS scope, * FROM questions UNION ALL SELECT 'passed', * FROM questions WHERE passed)
        WHERE solvable IS NOT NULL GROUP BY scope ORDER BY scope""",
    "pass_rate": """
        SELECT count(*) AS questions, count(*) FILTER (WHERE passed) AS passed,
               round(count(*) FILTER (WHERE passed) / greatest(count(*), 1), 3) AS pass_rate FROM questions""",
    "leaks": """
        SELECT l.form, l.source, count(*) AS leaks, count(DISTINCT question_id) AS questions
        FROM (SELECT question_id, unnest(leaks) AS l FROM questions) GROUP BY ALL ORDER BY leaks DESC, 1, 2""",
    "certificates": """
        SELECT CASE WHEN candidates >= 5 THEN '5+' ELSE CAST(candidates AS VARCHAR) END AS candidates,
               count(*) AS questions, count(*) FILTER (WHERE passed) AS passed
        FROM questions WHERE candidates IS NOT NULL GROUP BY 1 ORDER BY 1""",
    "hops": """
        SELECT hops, count(*) AS questions, count(*) FILTER (WHERE passed) AS passed FROM questions
        GROUP BY 1 ORDER BY 1""",
}

# Every number in the card comes from one of these. Tests run the same facts
# through `hopforge sql` with independently written SQL and compare.
CARD_QUERIES: dict[str, str] = {
    "funnel": """
        SELECT * FROM (
            SELECT 1 AS ord, 'pages' AS stage, count(*) AS rows FROM pages UNION ALL
            SELECT 2, 'walks', count(*) FROM walks UNION ALL
            SELECT 3, 'questions', count(*) FROM questions UNION ALL
            SELECT 4, 'trajectories', count(*) FROM trajectories UNION ALL
            SELECT 5, 'turns', count(*) FROM turns UNION ALL
            SELECT 6, 'kept', count(*) FROM kept
        ) ORDER BY ord""",
    "rejects": """
        SELECT stage, step, reason, count(*) AS rows FROM rejects
        GROUP BY ALL ORDER BY rows DESC, stage, step, reason""",
    "hops": """
        SELECT q.hops, count(*) AS trajectories, count(k.trajectory_id) AS kept,
               round(count(k.trajectory_id) / count(*), 3) AS keep_rate
        FROM trajectories t JOIN questions q USING (question_id) LEFT JOIN kept k USING (trajectory_id)
        GROUP BY q.hops ORDER BY q.hops""",
    "turns": f"""
        SELECT num_turns AS turns, count(*) AS trajectories FROM trajectories WHERE {_KEPT}
        GROUP BY 1 ORDER BY 1""",
    "tool_calls": f"""
        SELECT num_tool_calls AS tool_calls, count(*) AS trajectories FROM trajectories WHERE {_KEPT}
        GROUP BY 1 ORDER BY 1""",
    "tools": f"""
        SELECT tool_name AS tool, count(*) AS calls FROM turns
        WHERE role = 'assistant' AND tool_name IS NOT NULL AND {_KEPT}
        GROUP BY 1 ORDER BY calls DESC, tool""",
    "tokens": f"""
        SELECT count(*) AS trajectories, sum(tokens_in + tokens_out) AS total,
               min(tokens_in + tokens_out) AS min, round(median(tokens_in + tokens_out), 1) AS median,
               round(avg(tokens_in + tokens_out), 1) AS mean,
               round(quantile_cont(tokens_in + tokens_out, 0.9), 1) AS p90, max(tokens_in + tokens_out) AS max
        FROM trajectories WHERE {_KEPT}""",
    "token_values": f"SELECT tokens_in + tokens_out AS tokens FROM trajectories WHERE {_KEPT}",
    "labels": f"""
        SELECT CASE WHEN loss_weight IS NULL THEN '(unlabelled)' ELSE coalesce(judge_label, '(rules only)') END
                   AS label, count(*) AS turns,
               round(avg(loss_weight), 3) AS mean_weight
        FROM turns WHERE role = 'assistant' AND {_KEPT}
        GROUP BY 1 ORDER BY turns DESC, label""",
    "solve": """
        SELECT count(*) AS questions, round(avg(solve_rate_no_tools), 3) AS no_tools,
               round(avg(solve_rate_tools), 3) AS with_tools, max(k) AS k
        FROM difficulty""",
    "sources": """
        SELECT source, count(*) AS pages, max(revision_timestamp) AS latest_revision
        FROM pages GROUP BY source ORDER BY source""",
    "teachers": """
        SELECT teacher_backend AS backend, teacher_model AS model, count(*) AS trajectories
        FROM trajectories GROUP BY ALL ORDER BY trajectories DESC, backend, model""",
    "composers": "SELECT composer, count(*) AS questions FROM questions GROUP BY 1 ORDER BY 2 DESC, 1",
    **{f"question_{k}": v for k, v in QUESTION_QUALITY_QUERIES.items()},
    "examples": f"""
        SELECT t.trajectory_id, q.question, q.answer, q.hops
        FROM (SELECT DISTINCT trajectory_id, question_id FROM kept) t JOIN questions q USING (question_id)
        ORDER BY t.trajectory_id LIMIT {EXAMPLES}""",
}


def card_stats(out: str | Path, selection: Mapping[str, Sequence[str]] | None = None
               ) -> dict[str, list[dict[str, Any]]]:
    """Run every card query (plus the example turns) in one guarded catalog; rows as dicts.

    Same views, guard and read-only lock as :func:`query_arrow` (and so ``hopforge sql``),
    opened once: building the catalog costs ~0.5 s, and a card runs ~16 queries.
    """
    stats: dict[str, list[dict[str, Any]]] = {}
    with open_catalog(out, selection) as con:
        for name, sql in CARD_QUERIES.items():
            stats[name] = _run(con, sql)
        stats["example_turns"] = []
        for ex in stats["examples"]:
            tid = ex["trajectory_id"].replace("'", "''")
            stats["example_turns"] += _run(con, f"""
                SELECT trajectory_id, turn_index, role, content, tool_name, tool_args, loss_weight
                FROM turns WHERE trajectory_id = '{tid}' ORDER BY turn_index""")
    return stats


def _run(con: Any, sql: str) -> list[dict[str, Any]]:
    guard_sql(sql)
    try:
        return con.sql(sql).to_arrow_table().to_pylist()
    except duckdb.Error as e:
        raise StorageError(f"card query failed: {e}\n{sql}") from None


# ---------------------------------------------------------------- escaping

# `<`, `>` and `&` are left to Jinja's HTML autoescape: a backslash before an entity would show it raw.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}#|~!])")


def md_cell(value: Any) -> str:
    """A table-cell-safe string: no newlines, Markdown syntax backslash-escaped (HTML escaping is Jinja's)."""
    if value is None:
        return ""
    if isinstance(value, float):
        value = f"{value:.3f}".rstrip("0").rstrip(".") if value == value else "nan"
    s = " ".join(str(value).split())
    return _MD_SPECIAL.sub(r"\\\1", s)


def yaml_str(value: Any) -> Markup:
    """A double-quoted YAML scalar (JSON is valid YAML) with no raw HTML characters."""
    s = orjson.dumps(str(value)).decode()
    return Markup(s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _clip(text: str | None, n: int = EXAMPLE_CHARS) -> str:
    text = text or ""
    return text if len(text) <= n else text[: n - 3] + "..."


# ---------------------------------------------------------------- plots


def _plot_bar(path: Path, labels: list[str], values: list[float], title: str, xlabel: str, ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=PLOT_SIZE_IN, dpi=PLOT_DPI)
    try:
        ax.bar([str(x) for x in labels], values, color="#3b6ea8")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        for i, v in enumerate(values):
            ax.annotate(f"{v:g}", (i, v), ha="center", va="bottom", fontsize=8)
        if len(labels) > 4 or max((len(str(x)) for x in labels), default=0) > 12:
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)
            for lab in ax.get_xticklabels():
                lab.set_horizontalalignment("right")
        fig.tight_layout()  # keeps the figure size; only moves the axes so rotated labels fit
        fig.savefig(path, dpi=PLOT_DPI, format="png")
    finally:
        plt.close(fig)


def _plot_hist(path: Path, values: list[float], title: str, xlabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=PLOT_SIZE_IN, dpi=PLOT_DPI)
    try:
        ax.hist(values, bins=min(30, max(5, len(set(values)))), color="#3b6ea8")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("trajectories")
        fig.tight_layout()
        fig.savefig(path, dpi=PLOT_DPI, format="png")
    finally:
        plt.close(fig)


PLOT_NAMES = ("hops", "turns", "tool_calls", "labels", "rejects", "tokens")


def draw_plots(stats: dict[str, list[dict[str, Any]]], plot_dir: Path) -> dict[str, str]:
    """PNG plots of the distributions; returns name -> path relative to the card."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}

    def bar(name: str, rows: list[dict], x: str, y: str, title: str, xlabel: str, ylabel: str) -> None:
        if rows:
            _plot_bar(plot_dir / f"{name}.png", [r[x] for r in rows], [r[y] for r in rows], title, xlabel, ylabel)
            made[name] = f"{plot_dir.name}/{name}.png"

    bar("hops", stats["hops"], "hops", "kept", "Kept trajectories by question hops", "hops", "trajectories")
    bar("turns", stats["turns"], "turns", "trajectories", "Turns per kept trajectory", "turns", "trajectories")
    bar("tool_calls", stats["tool_calls"], "tool_calls", "trajectories", "Tool calls per kept trajectory",
        "tool calls", "trajectories")
    bar("labels", stats["labels"], "label", "turns", "Assistant turn labels (kept)", "judge label", "turns")
    by_reason: dict[str, int] = {}
    for r in stats["rejects"]:  # one reason can come from several stages/steps: one bar each reason
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + r["rows"]
    bar("rejects", [{"reason": k, "rows": v} for k, v in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))],
        "reason", "rows", "Rejects by reason", "reason", "rows")
    tokens = [r["tokens"] for r in stats["token_values"] if r["tokens"] is not None]
    if tokens:
        _plot_hist(plot_dir / "tokens.png", tokens, "Tokens per kept trajectory (in + out)", "tokens")
        made["tokens"] = f"{plot_dir.name}/tokens.png"
    return made


# ---------------------------------------------------------------- facts derived for the front matter


def size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
    return next((label for limit, label in bounds if n < limit), "n>100M")


def dump_language(source: str) -> str | None:
    """``enwiki-233.xml.bz2`` -> ``en``; ``ltgwiki-...`` -> ``ltg``; None if not a wiki dump name."""
    m = re.match(r"^([a-z][a-z_-]*?)wiki\b", Path(source).name)
    return m.group(1).replace("_", "-") if m else None


def _limitations(cfg: Config, stats: dict, manifest: dict, n_samples: int) -> list[str]:
    notes = []
    teachers = stats["teachers"]
    funnel = {r["stage"]: r["rows"] for r in stats["funnel"]}
    weak = [t for t in teachers if t["backend"] == "cpu" or re.search(r"(\b|-)(270m|1b)\b", t["model"] or "")]
    if weak:
        kept_rate = funnel["kept"] / funnel["trajectories"] if funnel["trajectories"] else 0.0
        notes.append(
            f"The teacher is a small model ({', '.join(sorted({str(t['model']) for t in weak}))} on the "
            f"{'/'.join(sorted({str(t['backend']) for t in weak}))} backend): it is a weak search agent, "
            "its trajectories "
            f"are short and often wrong ({kept_rate:.0%} of trajectories passed the filters). Use a stronger teacher "
            "(vLLM backend) for data meant to train a student.")
    scripted = sum(t["trajectories"] for t in teachers if t["backend"] == "scripted")
    if scripted:
        notes.append(f"{scripted} trajectories come from the scripted test teacher (a replayed oracle, not a "
                     "model): they exercise the pipeline and are not training data.")
    if any(c["composer"] == "template" for c in stats["composers"]):
        notes.append("Questions are composed from templates over the facts the walk's links state: phrasing is "
                     "repetitive and some questions read unnaturally.")
    labels = {r["label"]: r["turns"] for r in stats["labels"]}
    if "(unlabelled)" in labels:
        notes.append(f"{labels['(unlabelled)']} assistant turns have no turn label; the export gave them loss "
                     f"weight {cfg.export.unlabelled_weight:g}.")
    if n_samples < 1000:
        notes.append(f"Small sample ({n_samples} exported rows): the distributions on this card are noisy.")
    if manifest["format"] == "tokens" and not manifest["tokens"]["chat_template"]["tool_role"]:
        ct = manifest["tokens"]["chat_template"]
        notes.append(f"The student's chat template ({ct['source']}) has no tool role: tool results are rendered "
                     f"as {ct['observations']}, tool calls as {ct['calls']}, and the tool schemas as {ct['tools']}.")
    if manifest["format"] == "rl":
        notes.append("RL rows carry no trajectories: the policy rolls out against `hopforge env serve` (the same "
                     "dump's index) and is scored by `hopforge.publish.rewards`.")
        return notes
    if manifest["reasoning"]["mode"] != "keep":
        notes.append(f"The teacher's thinking was {manifest['reasoning']['mode']!s}"
                     f"{'ped' if manifest['reasoning']['mode'] == 'drop' else 'ed'} in this export.")
    if manifest["windowing"]["window_turns"]:
        notes.append("Long trajectories are cut into windows that share their question: windows of one trajectory "
                     "are not independent samples (they stay in one split).")
    notes.append("Answers are checked automatically against the evidence of the link-graph walk, not by people, "
                 "and reflect the Wikipedia snapshot of the dump, not today's Wikipedia.")
    return notes


# ---------------------------------------------------------------- render


def _examples(stats: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    examples = []
    for r in stats["examples"]:
        lines = []
        for t in (t for t in stats["example_turns"] if t["trajectory_id"] == r["trajectory_id"]):
            if t["role"] == "assistant" and t["tool_name"]:
                args = {k: v for k, v in (t["tool_args"] or {}).items() if v is not None}
                text = f"{t['tool_name']}({orjson.dumps(args, option=orjson.OPT_SORT_KEYS).decode()})"
                weight = "" if t["loss_weight"] is None else f" [w={t['loss_weight']:g}]"
                lines.append(f"assistant{weight}: {_clip(t['content'], 200) + ' ' if t['content'] else ''}{text}")
            else:
                lines.append(f"{t['role']}: {_clip(t['content'])}")
        examples.append({"question": r["question"], "answer": r["answer"], "hops": r["hops"],
                         "trajectory_id": r["trajectory_id"], "lines": lines})
    return examples


def _question_seconds(out: Path, selection: Mapping[str, Sequence[str]] | None) -> float | None:
    """Wall seconds of the question stage runs the card reads (from their completion records)."""
    from hopforge.stage import stage_records

    runs = None if selection is None else set(selection.get("questions", []))
    secs = [r["complete"]["stats"].get("seconds", 0.0) for r in stage_records(out)
            if r["stage"] == "questions" and r["complete"] and (runs is None or r["fingerprint"] in runs)]
    return round(sum(secs), 1) if secs else None


def render_card(cfg: Config, dest: str | Path, *, template_dir: str | Path | None = None,
                selection: Mapping[str, Sequence[str]] | None = None) -> Path:
    """Write ``dest/README.md`` (and ``dest/plots/*.png``) for the export in ``dest``; the figures come
    from the partitions ``selection`` names (the export's chain; None: every partition)."""
    dest = Path(dest)
    manifest_path = dest / MANIFEST_NAME
    if not manifest_path.is_file():
        raise StorageError(f"{dest} has no {MANIFEST_NAME}; run `hopforge export --dest {dest}` before the card")
    try:
        manifest = orjson.loads(manifest_path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise StorageError(f"{manifest_path}: unreadable export manifest ({e})") from None
    out = Path(cfg.run.out)
    stats = card_stats(out, selection)
    plots = draw_plots(stats, dest / "plots")
    samples = manifest["counts"]["samples"]
    n_samples = sum(samples.values())
    sources = [{**s, "source": s["source"] or "unknown dump"} for s in stats["sources"]]
    languages = sorted({lang for s in sources if (lang := dump_language(s["source"] or ""))}) or ["en"]
    latest = max((s["latest_revision"] for s in sources if s["latest_revision"]), default=None)
    context = {
        "manifest": manifest,
        "stats": stats,
        "funnel": stats["funnel"],
        # Every plot name is present (None when its data was empty), so a run that kept
        # nothing (the CPU demo) still renders its card.
        "plots": {name: plots.get(name) for name in PLOT_NAMES},
        "n_samples": n_samples,
        "samples": samples,
        "size_category": size_category(n_samples),
        "languages": languages,
        "wiki_hosts": [f"{lang}.wikipedia.org" for lang in languages],
        "sources": sources,
        "dump_date": latest.date().isoformat() if latest else "unknown",
        "teachers": stats["teachers"],
        "config_hash": manifest["config_hash"],
        "source_config_hashes": manifest["source"]["config_hashes"],
        "source_runs": manifest["source"]["runs"],
        "hopforge_version": __version__,
        "export_version": manifest["hopforge_version"],
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "limitations": _limitations(cfg, stats, manifest, n_samples),
        "examples": _examples(stats),
        "tokens": stats["tokens"][0] if stats["tokens"] else {},
        "solve": stats["solve"][0] if stats["solve"] and stats["solve"][0]["questions"] else None,
        "question_quality": {"pass": stats["question_pass_rate"][0], "rates": stats["question_quality"],
                             "leaks": stats["question_leaks"], "certificates": stats["question_certificates"],
                             "hops": stats["question_hops"], "seconds": _question_seconds(out, selection)}
        if stats["question_quality"] else None,
        "pretty_name": "hopforge multi-hop search trajectories "
                       f"({', '.join(s['source'] for s in sources) or 'no pages'})",
    }
    env = Environment(
        loader=FileSystemLoader(str(template_dir or TEMPLATE_DIR)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["cell"] = md_cell
    env.filters["yaml_str"] = yaml_str
    try:
        template = env.get_template(TEMPLATE_NAME)
    except Exception as e:  # jinja2.TemplateNotFound and syntax errors: name the file
        where = template_dir or TEMPLATE_DIR
        raise StorageError(f"cannot load card template {TEMPLATE_NAME} from {where}: {e}") from None
    text = template.render(**context)
    path = dest / "README.md"
    path.write_text(text, encoding="utf-8")
    log.info("wrote dataset card %s (%d plots)", path, len(plots))
    return path
