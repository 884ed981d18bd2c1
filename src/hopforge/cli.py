"""The ``hopforge`` command line (typer).

Every command takes ``--config`` (a TOML file validated by pydantic), ``--out``
and ``--seed``; ``-v``/``--quiet`` go before the command. A
:class:`~hopforge.errors.HopforgeError` prints one line and exits non-zero; any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from hopforge.config import Config, load_config
from hopforge.errors import HopforgeError, StorageError

app = typer.Typer(
    name="hopforge",
    help="Manufacture multi-hop deep-search training data from Wikipedia dumps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
graph_app = typer.Typer(help="Inspect the link graph.", no_args_is_help=True)
app.add_typer(graph_app, name="graph")
env_app = typer.Typer(help="The offline search environment, for student rollouts.", no_args_is_help=True)
app.add_typer(env_app, name="env")

console = Console()
err_console = Console(stderr=True)
log = logging.getLogger("hopforge")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.", show_default=False)]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Data directory (default: run.out, 'data').")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (default: run.seed, 0).")]
RunOpt = Annotated[str | None, typer.Option("--run-id", help="A label folded into every stage's fingerprint "
                                           "(default: run.run_id, none): an independent set of outputs.")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="If another process runs this stage on the same OUT, wait "
                                       "for it instead of exiting with its name.")]


def _selection(cfg: Config, config: Path | None) -> Any:
    """What readers read: the chain of ``config`` (its complete stages) when one is given, else the
    most recently completed chain under OUT."""
    from hopforge.stage import (
        STAGES,
        StageRun,
        current_selection,
        resolve,
        selection_for,
    )

    if config is None:
        return current_selection(cfg.run.out)
    run: StageRun | None = None
    for name in STAGES:
        r = resolve(cfg, name)
        if r.complete() is None:
            break
        run = r
    return selection_for(run) if run is not None else current_selection(cfg.run.out)


def _print_stats(stats: Any) -> None:
    """A stage's typed stats as JSON on stdout (progress and messages go to stderr)."""
    sys.stdout.buffer.write(orjson.dumps(stats.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
                            + b"\n")
    sys.stdout.flush()
    if stats.empty:
        err_console.print(f"[yellow]nothing to do:[/yellow] {stats.empty}", highlight=False, soft_wrap=True)


def settings(config: Path | None, out: Path | None = None, seed: int | None = None, run_id: str | None = None,
             **overrides: Any) -> Config:
    """Load the config and apply command-line overrides (dotted keys)."""
    return load_config(config, {"run.out": str(out) if out else None, "run.seed": seed, "run.run_id": run_id,
                                **overrides})


@app.callback()
def _main(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logging (-vv for debug).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors.")] = False,
) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


# --------------------------------------------------------------------------- storage


def _print_arrow(table: Any, fmt: str, output: Path | None, limit: int | None, total_hint: int | None = None) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if fmt == "parquet":
        if output is None:
            raise StorageError("--format parquet needs --output FILE")
        pq.write_table(table, output, compression="zstd")
        err_console.print(f"wrote {table.num_rows} rows to {output}")
        return
    if fmt == "csv":
        sink = open(output, "wb") if output else sys.stdout.buffer
        pacsv.write_csv(table, sink)
        sink.flush()
        return
    if fmt == "json":
        data = b"\n".join(orjson.dumps(r, default=str) for r in table.to_pylist())
        if output:
            output.write_bytes(data + b"\n")
        else:
            sys.stdout.buffer.write(data + b"\n" if data else b"")
            sys.stdout.flush()
        return
    rows = table.to_pylist()
    shown = rows[:limit] if limit else rows
    t = Table(show_lines=False)
    for name in table.column_names:
        t.add_column(name, overflow="fold")
    for r in shown:
        t.add_row(*[_cell(v) for v in r.values()])
    console.print(t)
    if limit and len(rows) > limit:
        console.print(f"[dim]… more rows not shown (--limit {limit}); use --format csv|json for all[/dim]")


def _cell(v: Any, width: int = 120) -> str:
    s = v if isinstance(v, str) else orjson.dumps(v, default=str).decode() if isinstance(v, (list, dict)) else str(v)
    if v is None:
        s = "NULL"
    return s if len(s) <= width else s[: width - 1] + "…"


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="One read-only statement: SELECT / WITH / DESCRIBE / SUMMARIZE.")],
    config: ConfigOpt = None,
    out: OutOpt = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | csv | json | parquet")] = "table",
    output: Annotated[Path | None, typer.Option("--output", help="Write the result to this file.")] = None,
    limit: Annotated[int, typer.Option(help="Rows shown in table format.")] = 50,
) -> None:
    """Query the tables in place with DuckDB (read-only: writes, ATTACH, INSTALL, COPY are refused).

    Each table reads one consistent chain of stage runs: the config's (with --config) or the most
    recently completed one; `<table>_all` reads every run, with its `run` column."""
    from hopforge.storage.catalog import query_arrow

    if fmt not in {"table", "csv", "json", "parquet"}:
        raise typer.BadParameter(f"unknown format {fmt!r}", param_hint="--format")
    cfg = settings(config, out)
    result = query_arrow(cfg.run.out, query, limit=limit + 1 if fmt == "table" else None,
                         selection=_selection(cfg, config))
    _print_arrow(result, fmt, output, limit if fmt == "table" else None)


@app.command()
def tables(config: ConfigOpt = None, out: OutOpt = None) -> None:
    """List tables with their rows, shards, bytes and runs."""
    from hopforge.storage.schemas import SCHEMA_VERSIONS, SCHEMAS
    from hopforge.storage.shards import read_manifest

    cfg = settings(config, out)
    t = Table("table", "rows", "shards", "bytes", "runs", "schema")
    for name in SCHEMAS:
        entries = read_manifest(cfg.run.out, name)
        t.add_row(name, str(sum(e.rows for e in entries)), str(len(entries)),
                  _human(sum(e.bytes for e in entries)), str(len({e.run for e in entries})),
                  f"v{SCHEMA_VERSIONS[name]}")
    console.print(t)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


@app.command()
def runs(
    config: ConfigOpt = None,
    out: OutOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List stage runs: each stage's fingerprint, the runs it read, its state and rows, oldest first.

    A fingerprint is a digest of a stage's inputs (upstream fingerprints), its own settings and its
    code version: changing `export.format` re-runs only publish; changing `teacher.temperature`
    makes new rollouts (and everything after) under new fingerprints, beside the old ones."""
    from hopforge.stage import STAGES, get_stage, stage_records
    from hopforge.storage.schemas import SCHEMAS
    from hopforge.storage.shards import read_manifest

    cfg = settings(config, out)
    rows_by_run: dict[str, dict[str, int]] = {}
    for name in SCHEMAS:
        for e in read_manifest(cfg.run.out, name):
            rows_by_run.setdefault(e.run, {})
            rows_by_run[e.run][name] = rows_by_run[e.run].get(name, 0) + e.rows
    records = sorted(stage_records(cfg.run.out), key=lambda r: (r["created_at"], STAGES.index(r["stage"])))
    if as_json:
        for r in records:
            r["rows"] = rows_by_run.get(r["fingerprint"], {})
        sys.stdout.buffer.write(orjson.dumps(records, option=orjson.OPT_INDENT_2) + b"\n")
        return
    t = Table("stage", "fingerprint", "reads", "state", "rows", "created", title=f"stage runs in {cfg.run.out}")
    t.columns[1].no_wrap = True
    for r in records:
        comp = r["complete"]
        state = ("empty: " + comp["empty"]) if comp and comp.get("empty") else \
            (f"complete ({comp['batches']} batches)" if comp else f"partial ({r['batches_done']} batches done)")
        direct = [r["inputs"][u] for u in get_stage(r["stage"]).upstream if u in r["inputs"]]
        rows = rows_by_run.get(r["fingerprint"], {})
        t.add_row(r["stage"], r["fingerprint"], ", ".join(direct) or r["settings"].get("dump", {}).get("name", "-"),
                  state, ", ".join(f"{k} {v:,}" for k, v in rows.items()) or "-", r["created_at"])
    console.print(t)


@app.command()
def inspect(
    table: Annotated[str, typer.Argument(help="Table name, e.g. questions.")],
    config: ConfigOpt = None,
    out: OutOpt = None,
    rows: Annotated[int, typer.Option(help="Sample rows to show.")] = 3,
    check: Annotated[bool, typer.Option("--verify/--no-verify", help="Recompute shard checksums.")] = True,
) -> None:
    """Show a table's schema, shards, checksum status and a few rows."""
    from hopforge.storage.catalog import query_arrow
    from hopforge.storage.schemas import SCHEMA_VERSIONS, schema_for
    from hopforge.storage.shards import read_manifest, verify

    cfg = settings(config, out)
    schema = schema_for(table)
    console.print(f"[bold]{table}[/bold] (schema v{SCHEMA_VERSIONS[table]})")
    st = Table("column", "type")
    for f in schema:
        st.add_row(f.name, str(f.type))
    console.print(st)
    entries = read_manifest(cfg.run.out, table)
    sh = Table("shard", "rows", "bytes", "sha256", "config", "created")
    for e in entries[-20:]:
        sh.add_row(e.path, str(e.rows), _human(e.bytes), e.sha256[:12], e.config_hash[:12], e.created_at)
    console.print(sh)
    if len(entries) > 20:
        console.print(f"[dim]({len(entries) - 20} earlier shards not shown)[/dim]")
    if check:
        rep = verify(cfg.run.out, table)
        if rep.clean:
            console.print(f"checksums: {rep.ok} shards ok")
        else:
            for what, items in (("changed since written", rep.changed), ("missing", rep.missing),
                                ("not in manifest", rep.unrecorded)):
                for p in items:
                    err_console.print(f"[red]shard {table}/{p}: {what}[/red]")
            raise typer.Exit(1)
    if rows and entries:
        _print_arrow(query_arrow(cfg.run.out, f"SELECT * FROM {table} LIMIT {int(rows)}"), "table", None, rows)


# --------------------------------------------------------------------------- graph


@app.command()
def ingest(
    dump: Annotated[str | None, typer.Argument(
        help="Dump path (.xml, .xml.bz2, multistream .xml.bz2 beside its -index.txt.bz2) or http(s) URL "
             "(default: graph.dump).", show_default=False)] = None,
    config: ConfigOpt = None,
    out: OutOpt = None,
    run_id: RunOpt = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: graph.workers).")] = None,
    batch_pages: Annotated[int | None, typer.Option(help="Pages per batch (default: graph.batch_pages).")] = None,
    page_timeout: Annotated[float | None, typer.Option(
        "--page-timeout", help="Per-page parse time limit in seconds (default: graph.page_timeout_s).")] = None,
    allow_truncated: Annotated[bool | None, typer.Option(
        "--allow-truncated", help="Build the graph from the pages before a break in a truncated or corrupt "
                                  "dump instead of failing (default: graph.allow_truncated).")] = None,
    wait: WaitOpt = False,
) -> None:
    """Parse a Wikipedia dump into pages, links, redirects and the link graph (resumes an interrupted run)."""
    from hopforge.graph import run_ingest
    from hopforge.stage import LocalExecutor

    cfg = settings(config, out, None, run_id, **{"graph.dump": dump, "graph.workers": workers,
                                                 "graph.batch_pages": batch_pages,
                                                 "graph.page_timeout_s": page_timeout,
                                                 "graph.allow_truncated": allow_truncated})
    with _batch_progress("ingest batches") as progress:
        stats = run_ingest(cfg, executor=LocalExecutor(cfg.graph.workers, progress), wait=wait,
                           owner="hopforge ingest")
    _print_stats(stats)


@contextlib.contextmanager
def _batch_progress(what: str) -> Any:
    """A rich progress bar on stderr fed by the executor's (done, total) callback (stdout stays JSON)."""
    from rich.progress import Progress

    if not err_console.is_terminal:
        yield None
        return
    bar = Progress(console=err_console, transient=True)
    task = bar.add_task(what, total=None)
    with bar:
        yield lambda done, total: bar.update(task, completed=done, total=total)


@graph_app.command("stats")
def graph_stats(
    config: ConfigOpt = None,
    out: OutOpt = None,
    run_id: RunOpt = None,
    top: Annotated[int, typer.Option(help="Top PageRank nodes to list.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Nodes, edges, degree distribution, components and top PageRank of the link graph."""
    from hopforge.graph import LinkGraph
    from hopforge.storage import read_table

    cfg = settings(config, out)
    g = LinkGraph.load(cfg.run.out, run_id)
    run = run_id or g.meta.get("run")
    nodes = read_table(cfg.run.out, "nodes", run=run, columns=["node", "pagerank"]) if run else \
        read_table(cfg.run.out, "nodes", columns=["node", "pagerank"])
    import numpy as np

    pr = np.zeros(g.n_nodes)
    pr[nodes.column("node").to_numpy()] = nodes.column("pagerank").to_numpy()
    st = g.stats(top=top, pagerank=pr)
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(st, option=orjson.OPT_INDENT_2) + b"\n")
        return
    t = Table("metric", "value")
    for k in ("nodes", "edges", "weak_components", "strong_components", "largest_scc"):
        t.add_row(k, str(st[k]))
    for k in ("out_degree", "in_degree"):
        t.add_row(k, ", ".join(f"{a}={b}" for a, b in st[k].items()))
    console.print(t)
    tp = Table("rank", "title", "pagerank")
    for i, r in enumerate(st.get("top_pagerank", []), 1):
        tp.add_row(str(i), r["title"], f"{r['pagerank']:.6f}")
    console.print(tp)


# --------------------------------------------------------------------------- synth (questions)


@app.command()
def questions(
    config: ConfigOpt = None,
    out: OutOpt = None,
    seed: SeedOpt = None,
    run_id: RunOpt = None,
    n: Annotated[int | None, typer.Option("--n", "-n", help="Questions to compose (default: synth.n_questions).")] = None,
    hops_min: Annotated[int | None, typer.Option(help="Fewest hops per walk (default: synth.hops_min).")] = None,
    hops_max: Annotated[int | None, typer.Option(help="Most hops per walk, up to 8 (default: synth.hops_max).")] = None,
    composer: Annotated[str | None, typer.Option(help="template | llm (default: synth.composer).")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes (default: synth.workers).")] = None,
    wait: WaitOpt = False,
) -> None:
    """Random walks over the link graph -> obfuscated multi-hop questions with checks (walks, questions, rejects)."""
    from hopforge.stage import LocalExecutor
    from hopforge.synth import run_questions

    cfg = settings(config, out, seed, run_id, **{"synth.n_questions": n, "synth.hops_min": hops_min,
                                                  "synth.hops_max": hops_max, "synth.composer": composer,
                                                  "synth.workers": workers})
    with _batch_progress("question batches") as progress:
        stats = run_questions(cfg, executor=LocalExecutor(cfg.synth.workers if cfg.synth.composer == "template"
                                                          else 1, progress), wait=wait, owner="hopforge questions")
    _print_stats(stats)


@app.command()
def screen(
    config: ConfigOpt = None,
    out: OutOpt = None,
    seed: SeedOpt = None,
    run_id: RunOpt = None,
    decontaminate: Annotated[Path | None, typer.Option(help="Benchmark questions file, one per line.")] = None,
    difficulty_k: Annotated[int | None, typer.Option(help="Closed-book attempts per question (0: none).")] = None,
    wait: WaitOpt = False,
) -> None:
    """Question-level filters before any rollout: decontamination, near-duplicates, closed-book difficulty."""
    from hopforge.stage import run_stage

    cfg = settings(config, out, seed, run_id, **{
        "screen.decontaminate": str(decontaminate) if decontaminate else None, "screen.difficulty_k": difficulty_k})
    _print_stats(run_stage("screen", cfg, wait=wait, owner="hopforge screen"))


# --------------------------------------------------------------------------- rollout


def _rollout_view(stats: Any) -> Table:
    secs = max(1e-9, __import__("time").monotonic() - stats.started)
    t = Table("trajectories", "traj/s", "turns/s", "tokens/s", "errors", "retries", "context events", "in flight",
              "status", title="hopforge generate")
    t.add_row(str(stats.trajectories), f"{stats.trajectories / secs:.2f}", f"{stats.turns / secs:.1f}",
              f"{stats.tokens / secs:,.0f}", str(stats.errors), str(stats.retries), str(stats.context_events),
              str(stats.in_flight), ", ".join(f"{k} {v}" for k, v in sorted(stats.status.items())) or "-")
    return t


@app.command()
def generate(
    config: ConfigOpt = None,
    out: OutOpt = None,
    seed: SeedOpt = None,
    run_id: RunOpt = None,
    teacher: Annotated[str | None, typer.Option("--teacher", help="cpu | openai | vllm | scripted "
                                                "[default: teacher.backend].")] = None,
    base_url: Annotated[str | None, typer.Option(help="Use a running OpenAI-compatible server instead of "
                                                 "starting one.")] = None,
    model: Annotated[str | None, typer.Option(help="Teacher model name (vllm: the HF id to serve).")] = None,
    client: Annotated[str | None, typer.Option(help="HTTP client: lean (aiohttp) | sdk (openai).")] = None,
    max_in_flight: Annotated[int | None, typer.Option(help="Global bound on requests in flight.")] = None,
    max_turns: Annotated[int | None, typer.Option(help="Turn limit per trajectory (<= 600).")] = None,
    attempts: Annotated[int | None, typer.Option(help="Trajectories per question.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Live progress display.")] = True,
    wait: WaitOpt = False,
) -> None:
    """Roll out teacher trajectories over the screened questions (resumes: written trajectories are skipped)."""
    from rich.live import Live

    from hopforge.rollouts import run_rollouts

    if teacher is not None and teacher not in {"cpu", "openai", "vllm", "scripted"}:
        raise typer.BadParameter(f"unknown teacher {teacher!r}", param_hint="--teacher")
    if client is not None and client not in {"lean", "sdk"}:
        raise typer.BadParameter(f"unknown client {client!r}", param_hint="--client")
    cfg = settings(config, out, seed, run_id, **{
        "teacher.backend": teacher, "teacher.base_url": base_url, "teacher.model": model, "teacher.client": client,
        "rollout.max_in_flight": max_in_flight, "rollout.max_turns": max_turns,
        "rollout.attempts_per_question": attempts})
    if progress and err_console.is_terminal:
        with Live(console=err_console, refresh_per_second=4, transient=False) as live:
            stats = run_rollouts(cfg, progress=lambda s: live.update(_rollout_view(s)), wait=wait,
                                 owner="hopforge generate")
    else:
        stats = run_rollouts(cfg, wait=wait, owner="hopforge generate")
    _print_stats(stats)


# --------------------------------------------------------------------------- filters


def _print_funnel(stats: Any) -> None:
    t = Table("step", "in", "kept", "rejected", "top reasons", title="filter funnel")
    for st in stats.steps:
        t.add_row(st["step"], str(st["in"]), str(st["kept"]), str(st["rejected"]),
                  ", ".join(f"{r} ({n})" for r, n in st["top_reasons"]))
    console.print(t)
    state = "skipped: already complete for this config" if stats.skipped else f"{stats.seconds:.1f} s"
    console.print(f"in {stats.trajectories}  kept {stats.kept}  rejected {stats.rejected}  ({state})")
    if stats.empty:
        err_console.print(f"[yellow]nothing to do:[/yellow] {stats.empty}", highlight=False, soft_wrap=True)


@app.command("filter")
def filter_cmd(
    config: ConfigOpt = None,
    out: OutOpt = None,
    seed: SeedOpt = None,
    run_id: RunOpt = None,
    llm_judge: Annotated[bool | None, typer.Option("--llm-judge/--no-llm-judge",
                                                   help="Ask the teacher about near-miss answers.")] = None,
    f1_threshold: Annotated[float | None, typer.Option(help="Token F1 that counts as correct.")] = None,
    min_tool_calls: Annotated[int | None, typer.Option(help="Fewest search/visit calls kept.")] = None,
    wait: WaitOpt = False,
) -> None:
    """Filter trajectories into kept / rejects (format, effort, degeneration, correctness, duplicates)
    and print the funnel. Question-level filters run before rollouts (`hopforge screen`)."""
    from hopforge.filters import run_filters

    cfg = settings(config, out, seed, run_id, **{
        "filters.llm_judge": llm_judge, "filters.f1_threshold": f1_threshold,
        "filters.min_tool_calls": min_tool_calls})
    _print_funnel(run_filters(cfg, wait=wait, owner="hopforge filter"))


@app.command("label")
def label_cmd(
    config: ConfigOpt = None,
    out: OutOpt = None,
    seed: SeedOpt = None,
    run_id: RunOpt = None,
    judge: Annotated[bool | None, typer.Option("--judge/--no-judge",
                                               help="Teacher labels essential / not_necessary / harmful.")] = None,
    judge_window: Annotated[int | None, typer.Option(help="Assistant turns per judge request.")] = None,
    wait: WaitOpt = False,
) -> None:
    """Write turn labels and loss weights for kept trajectories (rule labels; judge labels with --judge)."""
    from hopforge.labels.stage import run_labels

    cfg = settings(config, out, seed, run_id, **{"labels.judge": judge, "labels.judge_window": judge_window})
    stats = run_labels(cfg, wait=wait, owner="hopforge label")
    t = Table("trajectories", "turns", "assistant turns", "mean weight", "judge requests", "fallback windows",
              "policies", title="turn labels")
    t.add_row(str(stats.trajectories), str(stats.turns), str(stats.assistant_turns),
              str(stats.mean_assistant_loss_weight), str(stats.judge_requests), str(stats.judge_fallback_windows),
              ", ".join(f"{k} ({v})" for k, v in stats.assistant_turn_policies.items()))
    console.print(t)
    if stats.skipped:
        console.print("[dim]skipped: already complete for this config[/dim]")
    if stats.empty:
        err_console.print(f"[yellow]nothing to do:[/yellow] {stats.empty}", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- export


@app.command()
def export(
    dest: Annotated[Path, typer.Option("--dest", "-d", help="Export directory (a dataset repo layout).")],
    config: ConfigOpt = None,
    out: OutOpt = None,
    fmt: Annotated[str | None, typer.Option("--format", "-f", help="trl | sharegpt | openai-jsonl | tokens | rl "
                                            "(default: export.format)")] = None,
    tokenizer: Annotated[str | None, typer.Option("--tokenizer", help="tokens: the student's tokenizer, a directory "
                                                  "or a .gguf file (default: export.tokenizer).")] = None,
    chat_template: Annotated[str | None, typer.Option("--chat-template", help="tokens: a Jinja chat template file "
                                                      "or a bundled name (gemma3), when the tokenizer has none "
                                                      "(default: export.chat_template).")] = None,
    include_rejected: Annotated[bool, typer.Option("--include-rejected", help="Also export rejected "
                                                   "trajectories (for analysis, not training).")] = False,
    window_turns: Annotated[int | None, typer.Option(help="Cut trajectories into windows of at most N assistant "
                                                     "turns (default: export.window_turns, off).")] = None,
    reasoning: Annotated[str | None, typer.Option(help="keep | drop | shorten the teacher's thinking "
                                                  "(default: export.reasoning).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing export in --dest.")] = False,
    card: Annotated[bool, typer.Option("--card/--no-card", help="Also render the dataset card.")] = True,
    push_to_hub: Annotated[str | None, typer.Option("--push-to-hub", help="Upload to this HF dataset repo"
                                                    "; token from HF_TOKEN (default: export.push_to_hub).")] = None,
) -> None:
    """Export kept trajectories as training data (Parquet splits by question + manifest, optional card and push)."""
    from hopforge.publish.card import render_card
    from hopforge.publish.export import export_dataset
    from hopforge.publish.export import push_to_hub as push

    cfg = settings(config, out, **{"export.format": fmt, "export.window_turns": window_turns,
                                   "export.reasoning": reasoning, "export.push_to_hub": push_to_hub,
                                   "export.tokenizer": tokenizer, "export.chat_template": chat_template})
    selection = _selection(cfg, config)
    manifest = export_dataset(cfg, cfg.export.format, dest, include_rejected=include_rejected, overwrite=overwrite,
                              selection=selection)
    c = manifest["counts"]
    what = (f"{sum(c['questions'].values())} questions" if manifest["format"] == "rl"
            else f"{c['trajectories']} trajectories")
    console.print(f"exported {c['samples']['train']} train / {c['samples']['validation']} validation rows "
                  f"({what}, {manifest['format']}) to {dest}")
    if "tokens" in manifest:
        t = manifest["tokens"]
        console.print(f"tokens: {t['tokens']:,} in all, {t['assistant_tokens']:,} assistant, "
                      f"{t['weighted_tokens']:,} with weight > 0; chat template: {t['chat_template']['source']}")
    if card:
        console.print(f"dataset card: {render_card(cfg, dest, selection=selection)}")
    if cfg.export.push_to_hub:
        result = push(dest, cfg.export.push_to_hub, private=cfg.export.hub_private)
        console.print(f"pushed to {result['repo_url']}")


@app.command("card")
def card_cmd(
    dest: Annotated[Path, typer.Option("--dest", "-d", help="Export directory written by `hopforge export`.")],
    config: ConfigOpt = None,
    out: OutOpt = None,
) -> None:
    """Render the Hugging Face dataset card (README.md + plots) of an export from the data tables."""
    from hopforge.publish.card import render_card

    cfg = settings(config, out)
    console.print(f"dataset card: {render_card(cfg, dest, selection=_selection(cfg, config))}")


# --------------------------------------------------------------------------- environment


@env_app.command("serve")
def env_serve(
    config: ConfigOpt = None,
    out: OutOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default; another address exposes "
                                           "the environment to the network).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8770,
    graph_run: Annotated[str | None, typer.Option("--graph-run", help="Graph stage run whose pages to serve "
                                                  "(default: the config's, else the latest complete).")] = None,
    workers: Annotated[int, typer.Option(help="Threads running tool calls.")] = 2,
    max_pending: Annotated[int, typer.Option(help="Calls that may wait for a worker; more get 503.")] = 256,
    max_connections: Annotated[int, typer.Option(help="Concurrent connections accepted.")] = 512,
    mcp: Annotated[bool, typer.Option("--mcp/--no-mcp", help="Also serve MCP (streamable HTTP) at /mcp.")] = True,
) -> None:
    """Serve search / visit over the dump's index as HTTP/JSON and MCP (what the teacher searched)."""
    from hopforge.rollouts.env_server import EnvService, ServerLimits
    from hopforge.rollouts.env_server import serve as serve_env
    from hopforge.rollouts.environment import Environment
    from hopforge.stage import resolve

    cfg = settings(config, out)
    if graph_run is None and config is not None:
        r = resolve(cfg, "graph")
        graph_run = r.fingerprint if r.complete() else None
    env = Environment.from_tables(cfg.run.out, graph_run, page_chars=cfg.rollout.page_chars, search=cfg.search)
    limits = ServerLimits(workers=workers, max_pending=max_pending, max_connections=max_connections,
                          max_k=cfg.rollout.search_k * 2)
    service = EnvService(env, search_k=cfg.rollout.search_k, limits=limits)
    err_console.print(f"hopforge env: {len(env.titles):,} pages, {env.num_passages:,} passages; "
                      f"http://{host}:{port}/search, /visit, /call, /tools" + (f"; MCP http://{host}:{port}/mcp"
                                                                             if mcp else "") + "  (Ctrl-C to stop)",
                      highlight=False, soft_wrap=True)
    serve_env(service, host=host, port=port, mcp=mcp)


# --------------------------------------------------------------------------- viewer


@app.command()
def view(
    config: ConfigOpt = None,
    out: OutOpt = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (the viewer never listens on other interfaces).")] = 8765,
    card: Annotated[Path | None, typer.Option(help="Export directory (`hopforge export --dest`) whose data card "
                                                    "the overview shows [default: search OUT/card, OUT/export].")] = None,
) -> None:
    """Serve a local web page to read questions and trajectories (read-only, 127.0.0.1 only)."""
    from hopforge.viewer import serve

    cfg = settings(config, out)
    console.print(f"hopforge viewer: http://127.0.0.1:{port}/  (data: {cfg.run.out}; Ctrl-C to stop)")
    # With --config: that config's chain (as it completes); without: the most recently completed one.
    serve(cfg.run.out, port=port, card=card, selection=(lambda: _selection(cfg, config)) if config else None)


# --------------------------------------------------------------------------- flows

StagesOpt = Annotated[str | None, typer.Option(
    "--stages", help="Comma-separated subset, in any order: graph,questions,screen,rollouts,filters,labels,publish "
                     "(default: all).")]
RunnerOpt = Annotated[str | None, typer.Option(
    "--task-runner", help="thread | dask | ray (default: flows.task_runner).", show_default=False)]


def _flow_overrides(out: Path | None, seed: int | None, run_id: str | None, task_runner: str | None) -> dict[str, Any]:
    return {k: v for k, v in {"run.out": str(out) if out else None, "run.seed": seed, "run.run_id": run_id,
                              "flows.task_runner": task_runner}.items() if v is not None}


def _print_summary(summary: dict[str, Any]) -> None:
    from hopforge.flows.report import stage_outcome

    st = Table("stage", "fingerprint", "batches", "ran", "skipped", "failed", "seconds", "outcome", title="stages")
    st.columns[1].no_wrap = True
    prev = None
    for s in summary["stages"]:
        st.add_row(s["stage"], s["fingerprint"], str(s["tasks"]), str(s["ran"]), str(s["skipped"]),
                   f"[red]{len(s['failures'])}[/red]" if s["failures"] else "0", f"{s['seconds']:.1f}",
                   stage_outcome(s, prev))
        prev = s
    for name in summary["skipped_stages"]:
        st.add_row(name, "", "-", "-", "-", "-", "-", "not run")
    console.print(st)
    f = summary["funnel"]
    ft = Table("table", "rows (this chain)", "rows (all runs)", title=f"funnel of {f['out']}")
    for table, n in f["rows"].items():
        ft.add_row(table, f"{n['run']:,}", f"{n['all']:,}")
    console.print(ft)
    if f["rejects"]:
        rt = Table("stage", "reason", "rows", title="rejects by reason")
        for r in f["rejects"]:
            rt.add_row(r["stage"], r["reason"], f"{r['rows']:,}")
        console.print(rt)
    console.print(f"teacher tokens: {f['tokens']['tokens_in']:,} in, {f['tokens']['tokens_out']:,} out")
    for x in summary["failures"]:
        err_console.print(f"[red]failed[/red] {x['stage']}/{x['task']} ({x['state']}): {x['reason']}",
                          highlight=False, soft_wrap=True)


@app.command()
def run(
    config: ConfigOpt = None,
    out: OutOpt = None,
    seed: SeedOpt = None,
    run_id: RunOpt = None,
    stages: StagesOpt = None,
    task_runner: RunnerOpt = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="Start a new generation of the selected stages: new "
                                          "fingerprints for them and everything after; earlier output stays "
                                          "queryable (`<table>_all`, `hopforge runs`).")] = False,
    wait: WaitOpt = False,
    json_summary: Annotated[Path | None, typer.Option("--json", help="Also write the run summary to this JSON file.")]
    = None,
) -> None:
    """Run the pipeline as Prefect flows: graph, questions, screen, rollouts, filters, labels, publish.

    No Prefect server is needed (an ephemeral API starts in-process unless PREFECT_API_URL is set).
    Each stage's output is keyed by its inputs and its own settings: re-running the same command
    after a crash runs only the missing batches, and a stage whose settings did not change is skipped.
    A stage with nothing to produce ends the run with its reason (exit 0). Exits 1 if a task failed,
    75 if another process runs a stage on the same OUT (pass --wait to wait for it).
    """
    from hopforge.flows.prefect_env import apply_prefect_defaults

    apply_prefect_defaults()
    overrides = _flow_overrides(out, seed, run_id, task_runner)
    settings(config, **overrides)  # fail fast on a bad config, before Prefect starts
    selected = [s.strip() for s in stages.split(",") if s.strip()] if stages else None
    from hopforge.errors import LeaseHeldError
    from hopforge.flows import run_pipeline
    from hopforge.stage import select_stages

    select_stages(selected)
    summary, state = run_pipeline(config, overrides, selected, refresh, wait)
    _print_summary(summary)
    if json_summary:
        json_summary.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    if summary.get("held"):
        err_console.print(f"[red]error:[/red] {summary['held']}", highlight=False, soft_wrap=True)
        raise typer.Exit(LeaseHeldError.exit_code)
    if not summary["ok"]:
        err_console.print(f"[red]error:[/red] {state.message}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if summary.get("empty"):
        err_console.print(f"[yellow]nothing to do:[/yellow] {summary['empty']}", highlight=False, soft_wrap=True)


@app.command()
def serve(
    config: ConfigOpt = None,
    out: OutOpt = None,
    seed: SeedOpt = None,
    run_id: RunOpt = None,
    stages: StagesOpt = None,
    task_runner: RunnerOpt = None,
    name: Annotated[str, typer.Option(help="Deployment name (the flow is 'pipeline').")] = "hopforge",
    cron: Annotated[str | None, typer.Option(help="Cron schedule (default: flows.cron).", show_default=False)] = None,
    limit: Annotated[int | None, typer.Option(help="Max concurrent runs of the deployment.")] = 1,
) -> None:
    """Register the pipeline with a Prefect server on a cron schedule and execute its runs (blocks).

    Needs PREFECT_API_URL pointing at `prefect server start` (see docs/flows.md). Ctrl-C pauses the schedule.
    """
    from hopforge.flows.prefect_env import apply_prefect_defaults

    apply_prefect_defaults()
    overrides = {**_flow_overrides(out, seed, run_id, task_runner), **({"flows.cron": cron} if cron else {})}
    cfg = settings(config, **overrides)
    selected = [s.strip() for s in stages.split(",") if s.strip()] if stages else None
    from hopforge.flows import serve_pipeline

    serve_pipeline(cfg, config, overrides, name=name, stages=selected, limit=limit)


def main() -> None:
    """Entry point: one clear line for expected errors, a traceback for bugs."""
    try:
        app()
    except HopforgeError as e:
        err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
