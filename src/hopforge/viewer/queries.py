"""What the viewer reads: parameterised DuckDB queries over the catalog views.

Every query is a constant SQL string; values from the request are bound as ``?``
parameters, never formatted into SQL.

The question list pages in file order (shards as written, rows within a shard) with
``LIMIT ? OFFSET ?`` and no ``ORDER BY``: DuckDB keeps insertion order through scans and
filters and skips whole row groups by their row counts, so page 18,000 of a 1M-row table
costs about what page 1 does (benchmarks/results/viewer.md). Filters that consult another
table are semi-joins, which do not keep insertion order (a test caught pages reshuffling
between requests), so those pages are ordered by ``question_id``: correct, and slower.
Keyset paging on ``question_id`` was measured and dropped: ids are content hashes,
unsorted in the shards, so every ``ORDER BY question_id`` page is a top-n over the whole
table and fetching the page's wide columns decompresses every row group (about twice as
slow at 1M rows). The extra columns of a page
(trajectory counts, solve rates, reject reasons) are fetched for the page's ids only,
never aggregated over the whole table.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import duckdb

from hopforge.errors import StorageError
from hopforge.storage.catalog import fetch_arrow
from hopforge.storage.schemas import SCHEMAS
from hopforge.storage.shards import read_manifest

PAGE_SIZE = 50
SQL_ROW_LIMIT = 500
SQL_TIMEOUT_SECONDS = 30.0

STATUSES = ("all", "kept", "rejected", "failed_checks")

# Question ids with a reject row of their own, or one of their trajectories'. Rejects
# are matched on row_id alone: ids are content hashes, so a question id never equals a
# trajectory id, and this does not depend on how each stage spells row_table.
_REJECTED_IDS = (
    "SELECT row_id AS question_id FROM rejects {cond} "
    "UNION ALL SELECT t.question_id FROM rejects r JOIN trajectories t ON r.row_id = t.trajectory_id {rcond}"
)


@dataclass(frozen=True)
class QuestionFilter:
    """The question list's filters; every field is optional."""

    hops: int | None = None
    status: str = "all"
    reason: str | None = None
    solve_min: float | None = None
    solve_max: float | None = None
    turns_min: int | None = None
    turns_max: int | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise StorageError(f"unknown status filter {self.status!r}; one of {', '.join(STATUSES)}")

    def where(self) -> tuple[str, list[Any]]:
        """A WHERE clause over ``questions q`` (constant text) and its parameters."""
        conds: list[str] = ["TRUE"]
        params: list[Any] = []
        if self.hops is not None:
            conds.append("q.hops = ?")
            params.append(self.hops)
        if self.text:
            conds.append("(contains(lower(q.question), lower(?)) OR contains(lower(q.answer), lower(?)))")
            params += [self.text, self.text]
        if self.status == "kept":
            conds.append("q.question_id IN (SELECT question_id FROM kept)")
        elif self.status == "rejected":
            conds.append(
                "(NOT coalesce(q.passed, TRUE) OR q.question_id IN ("
                + _REJECTED_IDS.format(cond="", rcond="")
                + ")) AND q.question_id NOT IN (SELECT question_id FROM kept)"
            )
        elif self.status == "failed_checks":
            conds.append("NOT coalesce(q.passed, TRUE)")
        if self.reason:
            conds.append(
                "q.question_id IN (" + _REJECTED_IDS.format(cond="WHERE reason = ?", rcond="WHERE r.reason = ?") + ")"
            )
            params += [self.reason, self.reason]
        if self.solve_min is not None or self.solve_max is not None:
            conds.append(
                "q.question_id IN (SELECT question_id FROM difficulty "
                "WHERE solve_rate_tools >= ? AND solve_rate_tools <= ?)"
            )
            params += [self.solve_min if self.solve_min is not None else float("-inf"),
                       self.solve_max if self.solve_max is not None else float("inf")]
        if self.turns_min is not None or self.turns_max is not None:
            conds.append(
                "q.question_id IN (SELECT question_id FROM trajectories WHERE num_turns >= ? AND num_turns <= ?)"
            )
            params += [self.turns_min if self.turns_min is not None else -(2**31),
                       self.turns_max if self.turns_max is not None else 2**31 - 1]
        return " AND ".join(conds), params

    @property
    def joins(self) -> bool:
        """Whether a filter consults another table (a semi-join, which does not keep file order)."""
        return (self.status in ("kept", "rejected") or bool(self.reason) or self.solve_min is not None
                or self.solve_max is not None or self.turns_min is not None or self.turns_max is not None)

    def as_query(self) -> dict[str, Any]:
        """The non-default filters, for building links that keep them."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) not in (None, "", "all")}


@dataclass
class QuestionPage:
    rows: list[dict[str, Any]]
    total: int
    page: int  # 1-based
    pages: int
    size: int

    @property
    def first_row(self) -> int:
        return (self.page - 1) * self.size + 1 if self.rows else 0

    @property
    def last_row(self) -> int:
        return (self.page - 1) * self.size + len(self.rows)


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    return fetch_arrow(con, sql, params).to_pylist()


def question_page(con: duckdb.DuckDBPyConnection, flt: QuestionFilter, page: int = 1,
                  size: int = PAGE_SIZE) -> QuestionPage:
    """Page ``page`` (1-based) of the questions matching ``flt``: in file order, or in id order
    when a filter joins another table (DuckDB keeps insertion order through scans, filters and
    LIMIT, not through joins, and a page order that changes between requests would skip rows)."""
    if page < 1:
        raise StorageError(f"page must be 1 or more, got {page}")
    where, params = flt.where()
    order = "ORDER BY q.question_id" if flt.joins else ""
    total = _rows(con, f"SELECT count(*) AS n FROM questions q WHERE {where}", params)[0]["n"]
    rows = _rows(con, "SELECT q.question_id, q.question, q.answer, q.hops, q.passed, q.composer "
                      f"FROM questions q WHERE {where} {order} LIMIT ? OFFSET ?", [*params, size, (page - 1) * size])
    _attach_page_details(con, rows)
    return QuestionPage(rows=rows, total=total, page=page, pages=max(1, -(-total // size)), size=size)


def _attach_page_details(con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]]) -> None:
    """Per-question trajectory counts, kept counts, solve rates and reject reasons, for ``rows`` only."""
    ids = [r["question_id"] for r in rows]
    for r in rows:
        r.update(n_trajectories=0, max_turns=None, n_kept=0, solve_rate_tools=None, solve_rate_no_tools=None,
                 reasons=[], trajectory_ids=[])
    if not ids:
        return
    by_id = {r["question_id"]: r for r in rows}
    page = "(SELECT unnest(?::VARCHAR[]))"
    for d in _rows(con, "SELECT question_id, count(*) AS n_trajectories, max(num_turns) AS max_turns, "
                        "list(trajectory_id) AS trajectory_ids "
                        f"FROM trajectories WHERE question_id IN {page} GROUP BY question_id", [ids]):
        by_id[d["question_id"]].update(d)
    for d in _rows(con, f"SELECT question_id, count(*) AS n_kept FROM kept WHERE question_id IN {page} "
                        "GROUP BY question_id", [ids]):
        by_id[d["question_id"]].update(d)
    for d in _rows(con, "SELECT question_id, any_value(solve_rate_tools) AS solve_rate_tools, "
                        "any_value(solve_rate_no_tools) AS solve_rate_no_tools "
                        f"FROM difficulty WHERE question_id IN {page} GROUP BY question_id", [ids]):
        by_id[d["question_id"]].update(d)
    # Rejects of the questions and of their trajectories, by row id: joining rejects to the whole
    # trajectories table here would scan it again.
    owner = {tid: r["question_id"] for r in rows for tid in r["trajectory_ids"]}
    owner.update({qid: qid for qid in ids})
    for d in _rows(con, f"SELECT DISTINCT row_id, reason FROM rejects WHERE row_id IN {page} ORDER BY reason",
                   [list(owner)]):
        reasons = by_id[owner[d["row_id"]]]["reasons"]
        if d["reason"] not in reasons:
            reasons.append(d["reason"])


# --------------------------------------------------------------------------- one question


def question_detail(con: duckdb.DuckDBPyConnection, question_id: str) -> dict[str, Any] | None:
    rows = _rows(con, "SELECT * FROM questions WHERE question_id = ? LIMIT 1", [question_id])
    if not rows:
        return None
    q = rows[0]
    q["hop_rows"] = walk_hops(q.get("path") or [], q.get("evidence") or [])
    walk = _rows(con, "SELECT * FROM walks WHERE walk_id = ? LIMIT 1", [q.get("walk_id")])
    q["walk"] = walk[0] if walk else None
    diff = _rows(con, "SELECT * FROM difficulty WHERE question_id = ?", [question_id])
    q["difficulty"] = diff
    q["trajectories"] = _rows(
        con, "SELECT t.*, k.correct, k.f1, k.judge_verdict, k.judge_rationale, "
             "k.trajectory_id IS NOT NULL AS kept FROM trajectories t LEFT JOIN kept k USING (trajectory_id) "
             "WHERE t.question_id = ? ORDER BY t.attempt, t.trajectory_id", [question_id])
    traj_ids = [t["trajectory_id"] for t in q["trajectories"]]
    q["rejects"] = _rows(
        con, "SELECT stage, step, reason, row_table, row_id, detail FROM rejects "
             "WHERE row_id = ? OR row_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY stage, step",
        [question_id, traj_ids])
    reasons: dict[str, list[str]] = {}
    for r in q["rejects"]:
        reasons.setdefault(r["row_id"], []).append(r["reason"])
    for t in q["trajectories"]:
        t["reasons"] = reasons.get(t["trajectory_id"], [])
    return q


def walk_hops(path: list[str], evidence: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The walk as a chain: one row per page, with the evidence sentence of the hop into it.

    The anchor is split out of the sentence (``before``, ``anchor``, ``after``) so the
    template can mark it while still escaping all three parts.
    """
    by_hop = {e.get("hop"): e for e in evidence if e}
    hops = []
    for i, title in enumerate(path):
        ev = by_hop.get(i)
        row: dict[str, Any] = {"index": i, "title": title, "evidence": ev, "parts": None}
        if ev and ev.get("sentence"):
            sentence, anchor = ev["sentence"], ev.get("anchor") or ""
            at = sentence.lower().find(anchor.lower()) if anchor else -1
            row["parts"] = ((sentence[:at], sentence[at:at + len(anchor)], sentence[at + len(anchor):])
                            if at >= 0 else (sentence, "", ""))
        hops.append(row)
    return hops


# --------------------------------------------------------------------------- one trajectory


def trajectory_detail(con: duckdb.DuckDBPyConnection, trajectory_id: str) -> dict[str, Any] | None:
    rows = _rows(con, "SELECT t.*, k.correct, k.f1, k.judge_verdict, k.judge_rationale, "
                      "k.trajectory_id IS NOT NULL AS kept FROM trajectories t LEFT JOIN kept k "
                      "USING (trajectory_id) WHERE t.trajectory_id = ? LIMIT 1", [trajectory_id])
    turns = _rows(con, "SELECT * FROM turns WHERE trajectory_id = ? ORDER BY turn_index", [trajectory_id])
    if not rows and not turns:
        return None
    if rows:
        traj = rows[0]
    else:  # turns written but the trajectory row not yet (a rollout in progress)
        traj = dict.fromkeys([*SCHEMAS["trajectories"].names, "correct", "f1", "judge_verdict", "judge_rationale"])
        traj.update(trajectory_id=trajectory_id, question_id=turns[0]["question_id"], kept=False)
    q = _rows(con, "SELECT question_id, question, answer, answer_aliases, hops, path FROM questions "
                   "WHERE question_id = ? LIMIT 1", [traj.get("question_id")])
    traj["question"] = q[0] if q else None
    traj["rejects"] = _rows(con, "SELECT stage, step, reason, detail FROM rejects WHERE row_id = ?", [trajectory_id])
    traj["attempts"] = _rows(con, "SELECT trajectory_id, attempt, status FROM trajectories WHERE question_id = ? "
                                  "ORDER BY attempt, trajectory_id", [traj.get("question_id")])
    answers = []
    if q:
        answers = [q[0].get("answer"), *(q[0].get("answer_aliases") or [])]
    traj["answer_turn"] = mark_answer(turns, answers)
    traj["turns"] = turns
    return traj


def answer_pattern(answers: list[str | None]) -> re.Pattern[str] | None:
    """A case-insensitive whole-word pattern for the answer and its aliases (longest first)."""
    names = sorted({a.strip() for a in answers if a and a.strip()}, key=len, reverse=True)
    if not names:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(n) for n in names) + r")(?!\w)", re.IGNORECASE)


def mark_answer(turns: list[dict[str, Any]], answers: list[str | None]) -> int | None:
    """Split each observation into (text, is_answer) segments; return the first turn that names the answer.

    Only tool observations count: the answer appearing in the environment's output is
    the moment the agent could have found it (the model saying it is not evidence).
    """
    pattern = answer_pattern(answers)
    first = None
    for t in turns:
        content = t.get("content") or ""
        t["segments"] = [(content, False)]
        if pattern is None or t.get("role") != "tool":
            continue
        segments, pos = [], 0
        for m in pattern.finditer(content):
            segments += [(content[pos:m.start()], False), (m.group(0), True)]
            pos = m.end()
        if pos:
            segments.append((content[pos:], False))
            t["segments"] = segments
            if first is None:
                first = t["turn_index"]
    return first


# --------------------------------------------------------------------------- overview


def overview(con: duckdb.DuckDBPyConnection, out: Path) -> dict[str, Any]:
    """Rows per table (from the manifests), the funnel and rejects by reason."""
    tables = {}
    for name in SCHEMAS:
        entries = read_manifest(out, name)
        tables[name] = {"rows": sum(e.rows for e in entries), "shards": len(entries),
                        "runs": sorted({e.run for e in entries})}
    funnel = _rows(con, """
        SELECT 'questions written' AS stage, count(*) AS n FROM questions
        UNION ALL SELECT 'questions passing checks', count(*) FROM questions WHERE coalesce(passed, TRUE)
        UNION ALL SELECT 'questions with trajectories', count(DISTINCT question_id) FROM trajectories
        UNION ALL SELECT 'trajectories', count(*) FROM trajectories
        UNION ALL SELECT 'trajectories answered', count(*) FROM trajectories WHERE status = 'answered'
        UNION ALL SELECT 'trajectories kept', count(*) FROM kept
        UNION ALL SELECT 'questions with a kept trajectory', count(DISTINCT question_id) FROM kept
    """)
    rejects = _rows(con, "SELECT stage, step, reason, count(*) AS n FROM rejects "
                         "GROUP BY ALL ORDER BY n DESC, stage, step, reason")
    statuses = _rows(con, "SELECT status, count(*) AS n FROM trajectories GROUP BY status ORDER BY n DESC")
    return {"tables": tables, "funnel": funnel, "rejects": rejects, "statuses": statuses}


def reject_reasons(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Reasons that rejected a question or a trajectory (not a page or a link): the list's filter options."""
    return [r["reason"] for r in _rows(
        con, "SELECT DISTINCT reason FROM rejects WHERE reason IS NOT NULL AND (row_id IN "
             "(SELECT question_id FROM questions) OR row_id IN (SELECT trajectory_id FROM trajectories)) "
             "ORDER BY reason")]


def run_sql(con: duckdb.DuckDBPyConnection, sql: str, limit: int = SQL_ROW_LIMIT,
            timeout: float = SQL_TIMEOUT_SECONDS):
    """The SQL box: the same guard as ``hopforge sql``, at most ``limit`` rows, interrupted after ``timeout``."""
    timer = threading.Timer(timeout, con.interrupt)
    timer.start()
    try:
        return fetch_arrow(con, sql, limit=limit + 1)
    finally:
        timer.cancel()
