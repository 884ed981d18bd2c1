"""The stage contract, the keys that name a stage's output, and the one local executor.

Every pipeline stage is a :class:`Stage` (after datatrove's ``PipelineStep`` and
dlt's resources): it declares the tables it reads and writes, the config section
that shapes its output and the stages whose output it reads; it plans batches from
its inputs, runs one batch, and returns typed stats (:class:`StageStats`). The CLI
runs a stage with :func:`run_stage` (batches in this process, or in a process pool
for CPU-bound stages); the Prefect flows call the very same methods, one task per
batch (:mod:`hopforge.flows`). Parallelism comes from exactly one of the two;
stages hold no pools of their own.

**Keyed by inputs.** A stage's output lives in a partition of its own,
``OUT/<table>/run=<fingerprint>``, where the fingerprint (``questions-1a2b…``) is a
digest of the upstream stages' fingerprints, the stage's own settings (its config
section minus the keys that only change *how* it runs, e.g. worker counts) and its
code version. So a change to ``export.format`` re-runs nothing upstream, a change to
``teacher.temperature`` makes new trajectories under a new fingerprint (the old ones
stay queryable), and a reader always reads one consistent chain of partitions.

**Completion.** A batch commits all its shards at once (:func:`storage.write_group`)
tagged with its batch id, then leaves a marker ``OUT/_stages/<fp>/done/<batch>.json``
(datatrove's completions). Skipping a finished batch costs one ``stat``; a batch
that died after its commit and before its marker is recognised from the manifests.
One writer per stage and OUT: the executor holds the stage's lease while it runs.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import multiprocessing as mp
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pyarrow as pa

from hopforge import __version__
from hopforge.config import Config
from hopforge.errors import ConfigError, HopforgeError
from hopforge.storage import (
    GroupWriter,
    Lease,
    ShardWriter,
    read_manifest,
    read_table,
    recover,
    write_group,
)
from hopforge.storage.shards import ShardInfo

log = logging.getLogger(__name__)

# Data-flow order. Each name maps to "module:Class" so that importing this module
# imports no stage (a Dask worker imports only the stage it runs).
STAGE_CLASSES: dict[str, str] = {
    "graph": "hopforge.graph.stage:GraphStage",
    "questions": "hopforge.synth.stage:QuestionStage",
    "screen": "hopforge.filters.screen:ScreenStage",
    "rollouts": "hopforge.rollouts.stage:RolloutStage",
    "filters": "hopforge.filters.stage:FilterStage",
    "labels": "hopforge.labels.stage:LabelStage",
    "publish": "hopforge.publish.stage:PublishStage",
}
STAGES: tuple[str, ...] = tuple(STAGE_CLASSES)

# The stage whose partition of a table a reader reads (rejects: every stage writes its own).
TABLE_STAGE: dict[str, str] = {
    "pages": "graph", "links_raw": "graph", "redirects_raw": "graph", "ingest_batches": "graph",
    "redirects": "graph", "links": "graph", "nodes": "graph",
    "walks": "questions", "questions": "questions",
    "difficulty": "screen",
    "trajectories": "rollouts", "turns": "rollouts",
    "kept": "filters",
    "turn_labels": "labels",
}

STAGES_DIR = "_stages"

# The shards the running batch committed (set by execute_batch; asyncio.to_thread copies the context,
# so a flush written from a worker thread is recorded too).
_COMMITTED: ContextVar[list[ShardInfo] | None] = ContextVar("hopforge_committed", default=None)


# The command that runs each stage on its own (for error messages).
COMMANDS: dict[str, str] = {"graph": "hopforge ingest", "questions": "hopforge questions", "screen": "hopforge screen",
                            "rollouts": "hopforge generate", "filters": "hopforge filter", "labels": "hopforge label",
                            "publish": "hopforge run --stages publish"}


class StageError(HopforgeError):
    """A stage cannot run: its input was never produced, or its plan is impossible."""


class Empty(Exception):  # noqa: N818 - not an error: a stage with nothing to do says why
    """Raised by :meth:`Stage.plan` when the input cannot yield any output.

    ``reason`` is one line naming the cause and the number that was zero."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ----------------------------------------------------------------------------- stats


@dataclass
class StageStats:
    """Typed stats of a stage run, merged over its batches by :meth:`merge`.

    Numbers and per-key dicts are summed, with two exceptions declared in the field
    metadata: ``seconds`` (the stage's wall time, set once by the executor: the wall
    times of concurrent batches never add up) takes the maximum, and ``empty`` keeps
    the first reason. ``cpu_seconds`` sums the batches' own compute time.
    """

    batches: int = 0
    batches_skipped: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # rows committed per table
    rejects: dict[str, int] = field(default_factory=dict)  # rejected rows by reason
    cpu_seconds: float = 0.0
    seconds: float = field(default=0.0, metadata={"merge": "max"})
    empty: str | None = field(default=None, metadata={"merge": "first"})

    @property
    def skipped(self) -> bool:
        """No batch ran in this invocation: every batch was already complete, or there was none
        (nothing to do). A stage that ran its batches and then found its output empty did not skip."""
        return self.batches == self.batches_skipped

    def merge(self, other: StageStats) -> StageStats:
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            how = f.metadata.get("merge", "sum")
            if how == "max":
                setattr(self, f.name, max(a, b))
            elif how == "first":
                setattr(self, f.name, a if a not in (None, "", [], {}) else b)
            elif isinstance(a, dict):
                setattr(self, f.name, _sum_dicts(a, b))
            elif isinstance(a, (int, float)) and not isinstance(a, bool):
                setattr(self, f.name, a + b)
            elif b is not None:
                setattr(self, f.name, b)
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(d["seconds"], 3)
        d["cpu_seconds"] = round(d["cpu_seconds"], 3)
        d["skipped"] = self.skipped
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StageStats:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _sum_dicts(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        prev = out.get(k)
        if isinstance(v, Mapping):
            out[k] = _sum_dicts(prev if isinstance(prev, Mapping) else {}, v)
        elif isinstance(v, (int, float)) and isinstance(prev, (int, float)):
            out[k] = prev + v
        else:
            out[k] = v
    return out


# ----------------------------------------------------------------------------- the contract


@dataclass(frozen=True)
class Batch:
    """A picklable unit of work: ``id`` is stable across re-plans (the completion marker's name
    and the tag on every shard the batch commits)."""

    id: str
    index: int
    payload: Any = None

    @property
    def label(self) -> str:
        return f"{self.index:05d}"


class Stage:
    """Base class of the pipeline's stages; subclasses set the class attributes and override
    :meth:`plan` and :meth:`run_batch` (and :meth:`finish` for a whole-table step)."""

    name: ClassVar[str]
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    upstream: ClassVar[tuple[str, ...]] = ()
    section: ClassVar[str] = ""  # the config section that shapes the output
    # Other sections that shape it too, each whole under its own name (the questions and rollout
    # stages search the dump: "search", so changing the backend re-runs them).
    extra_sections: ClassVar[tuple[str, ...]] = ()
    # Keys of the section that only change how the stage runs, never what it writes.
    execution_keys: ClassVar[frozenset[str]] = frozenset()
    # Bump when the stage writes different rows for the same inputs and settings.
    version: ClassVar[str] = "1"
    stats_type: ClassVar[type[StageStats]] = StageStats
    # True: a batch may commit several times (rollout flushes) and resumes itself; the executor
    # then trusts only the completion marker. False: one commit per batch.
    partial_batches: ClassVar[bool] = False

    def settings(self, cfg: Config) -> dict[str, Any]:
        """What shapes this stage's output: its section minus execution keys, and the teacher's
        identity when the stage calls the teacher (subclasses add the seed where it matters)."""
        s = getattr(cfg, self.section).model_dump(mode="json", exclude=set(self.execution_keys)) \
            if self.section else {}
        for name in self.extra_sections:
            s[f"[{name}]"] = getattr(cfg, name).model_dump(mode="json")
        if self.talks_to_teacher(cfg):
            s["teacher"] = teacher_identity(cfg)
        return s

    def talks_to_teacher(self, cfg: Config) -> bool:
        """Whether this stage calls the teacher under ``cfg`` (then its identity is in the fingerprint)."""
        return False

    def workers(self, cfg: Config) -> int:
        """Processes the local executor may use for this stage's batches (CPU-bound stages)."""
        return 1

    def plan(self, run: StageRun) -> list[Batch]:
        raise NotImplementedError

    def run_batch(self, run: StageRun, batch: Batch) -> StageStats:
        raise NotImplementedError

    def finish(self, run: StageRun, stats: StageStats) -> StageStats:
        """A whole-table step after every batch (default: none). Runs under the lease, once
        per fingerprint; may set ``stats.empty`` when the stage produced nothing usable."""
        return stats

    def output_present(self, run: StageRun) -> bool:
        """Whether a complete run's output outside the tables still exists (publish's export
        directory can be deleted by hand; the stage then runs again)."""
        return True


def teacher_identity(cfg: Config) -> dict[str, Any]:
    """The teacher settings that change what it writes (not where it runs or how it is reached)."""
    t = cfg.teacher
    ident = {"backend": t.backend, "model": t.model, "temperature": t.temperature, "max_tokens": t.max_tokens,
             "context_tokens": t.context_tokens, "protocol": t.protocol}
    if t.backend == "scripted":
        ident["scripted_policy"] = t.scripted_policy
    if t.backend == "cpu":
        ident["model_path"] = t.model_path
    if t.tool_parser != "none":  # changes the system prompt and what counts as a call
        ident["tool_parser"] = t.tool_parser
    return ident


_STAGE_CACHE: dict[str, Stage] = {}


def get_stage(name: str) -> Stage:
    if name not in STAGE_CLASSES:
        raise ConfigError(f"unknown stage {name!r}; stages are: {', '.join(STAGES)}")
    if name not in _STAGE_CACHE:
        module, cls = STAGE_CLASSES[name].split(":")
        _STAGE_CACHE[name] = getattr(importlib.import_module(module), cls)()
    return _STAGE_CACHE[name]


def select_stages(stages: Sequence[str] | None) -> list[str]:
    """Validate a stage selection and put it in data-flow order (None = all)."""
    if not stages:
        return list(STAGES)
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; stages are: {', '.join(STAGES)}")
    return [s for s in STAGES if s in stages]


# ----------------------------------------------------------------------------- a resolved run


@dataclass(frozen=True)
class StageRun:
    """One stage resolved against a config: its fingerprint and those of every stage upstream.

    Picklable (a Prefect task on a Dask or Ray worker receives it as an argument)."""

    stage: str
    fingerprint: str
    inputs: Mapping[str, str]  # every upstream stage, transitively -> its fingerprint
    cfg: Config
    settings: Mapping[str, Any] = field(default_factory=dict, compare=False)
    # Batch ids with shards in the manifests when the stage run started (read once by `prepare`):
    # a batch that died between its commit and its marker is found here without a manifest scan per batch.
    committed_batches: frozenset[str] | None = field(default=None, compare=False)

    @property
    def out(self) -> Path:
        return Path(self.cfg.run.out)

    @property
    def dir(self) -> Path:
        return self.out / STAGES_DIR / self.fingerprint

    def partition(self, stage: str) -> str:
        """The fingerprint (table partition) of ``stage`` in this run's chain."""
        if stage == self.stage:
            return self.fingerprint
        try:
            return self.inputs[stage]
        except KeyError:
            raise StageError(f"stage {self.stage!r} does not read the output of {stage!r}") from None

    def read(self, table: str, *, stage: str | None = None, columns: list[str] | None = None,
             batch: str | None = None) -> pa.Table:
        """``table`` as written by ``stage`` (default: the stage that owns it) in this chain."""
        return read_table(self.out, table, run=self.partition(stage or TABLE_STAGE[table]), columns=columns,
                          batch=batch)

    def commit(self, tables: Mapping[str, pa.Table | list[dict[str, Any]]], batch: Batch | str | None
               ) -> list[ShardInfo]:
        """Commit this stage's rows for one unit of work: every table becomes visible together."""
        from hopforge.storage.schemas import schema_for

        data = {}
        for name, rows in tables.items():
            t = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=schema_for(name))
            if t.num_rows:
                data[name] = t
        if not data:
            return []
        bid = batch.id if isinstance(batch, Batch) else batch
        infos = write_group(self.out, data, run_id=self.fingerprint, batch=bid, config_hash=self.fingerprint)
        log_ = _COMMITTED.get()
        if log_ is not None:
            log_.extend(infos)
        return infos

    @contextmanager
    def group(self, batch: Batch | str | None) -> Iterator[GroupWriter]:
        """A group commit of this stage's rows built piece by piece, for tables too large to hold:
        ``with run.group(batch) as g: g.add("links", chunk) ...``. Each :meth:`GroupWriter.add` writes
        one hidden shard at once; leaving the block normally commits them all as one unit (like
        :meth:`commit`), leaving it with an error drops them (nothing becomes visible)."""
        bid = batch.id if isinstance(batch, Batch) else batch
        with GroupWriter(self.out, run_id=self.fingerprint, batch=bid, config_hash=self.fingerprint) as g:
            yield g
            if not g.done:
                g.commit()
        log_ = _COMMITTED.get()
        if log_ is not None:
            log_.extend(g.infos)

    def on_close(self, key: str, close: Callable[[], Any]) -> None:
        """Register a per-run resource of this process (the shared teacher) to be closed by
        :func:`close_run` once the run's batches are done. One closer per ``key``."""
        with _CLOSERS_LOCK:
            _CLOSERS.setdefault(self.fingerprint, {}).setdefault(key, close)

    def writer(self, table: str, *, batch: str | None = None, rows_per_shard: int = 100_000) -> ShardWriter:
        return ShardWriter(self.out, table, run_id=self.fingerprint, config_hash=self.fingerprint,
                           rows_per_shard=rows_per_shard, batch=batch)

    # -- completion markers

    def _marker(self, batch: Batch) -> Path:
        return self.dir / "done" / f"{batch.id}.json"

    def is_done(self, batch: Batch) -> bool:
        marker = self._marker(batch)
        if not marker.exists():
            return False
        shards = orjson.loads(marker.read_bytes()).get("shards", [])
        # Tables deleted by hand make a marker stale: the batch then runs again.
        return all((self.out / s).exists() for s in shards)

    def committed(self, batch: Batch, tables: Iterable[str]) -> bool:
        """True when a shard of ``batch`` is recorded in any of ``tables`` (a batch that died
        between its commit and its marker)."""
        if self.committed_batches is not None:
            return batch.id in self.committed_batches
        return any(e.run == self.fingerprint and e.batch == batch.id and (self.out / t / e.path).exists()
                   for t in tables for e in read_manifest(self.out, t))

    def mark_done(self, batch: Batch, stats: StageStats, infos: Iterable[ShardInfo] | None = None) -> None:
        """Write the batch's completion marker naming its shards (``infos``: what this process
        committed for it; None: looked up in the manifests)."""
        if infos is None:
            infos = [e for t in get_stage(self.stage).writes for e in read_manifest(self.out, t)
                     if e.run == self.fingerprint and e.batch == batch.id]
        shards = sorted({f"{e.table}/{e.path}" for e in infos})
        _atomic_write(self._marker(batch), {"batch": batch.id, "index": batch.index, "shards": shards,
                                            "stats": stats.to_dict(), "at": _now()})

    def complete(self) -> dict[str, Any] | None:
        """The stage run's completion record, or None while it is not complete."""
        p = self.dir / "complete.json"
        return orjson.loads(p.read_bytes()) if p.exists() else None

    def mark_complete(self, stats: StageStats, batches: int) -> None:
        _atomic_write(self.dir / "complete.json", {"stage": self.stage, "fingerprint": self.fingerprint,
                                                   "batches": batches, "stats": stats.to_dict(),
                                                   "empty": stats.empty, "at": _now()})

    def outputs_exist(self) -> bool:
        """Every shard the batch markers name is still on disk (one stat per shard)."""
        for m in (self.dir / "done").glob("*.json"):
            if not all((self.out / sh).exists() for sh in orjson.loads(m.read_bytes()).get("shards", [])):
                return False
        return True

    def reset(self) -> None:
        """Forget completion (markers and record): the next run does every batch again."""
        (self.dir / "complete.json").unlink(missing_ok=True)
        for m in (self.dir / "done").glob("*.json"):
            m.unlink()

    def record(self) -> None:
        """Write ``stage.json`` (what this fingerprint stands for), once."""
        p = self.dir / "stage.json"
        if not p.exists():
            _atomic_write(p, {"stage": self.stage, "fingerprint": self.fingerprint,
                              "version": get_stage(self.stage).version, "hopforge_version": __version__,
                              "inputs": dict(self.inputs), "settings": dict(self.settings),
                              "created_at": _now()})


# Per-run resources of this process (fingerprint -> key -> closer), see StageRun.on_close.
_CLOSERS: dict[str, dict[str, Callable[[], Any]]] = {}
_CLOSERS_LOCK = threading.Lock()


def close_run(run: StageRun) -> None:
    """Close what the run's batches opened in this process (e.g. its teacher server): called by
    :func:`run_stage` and the Prefect stage flow after the last batch, also when batches failed."""
    with _CLOSERS_LOCK:
        closers = _CLOSERS.pop(run.fingerprint, {})
    for key, close in closers.items():
        try:
            close()
        except Exception:  # noqa: BLE001 - a failed close must not hide the run's own outcome
            log.exception("%s: closing %s failed", run.stage, key)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _atomic_write(path: Path, doc: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- fingerprints


def generations(out: str | Path) -> dict[str, int]:
    """Refresh generations per stage (``hopforge run --refresh`` bumps them)."""
    p = Path(out) / STAGES_DIR / "generations.json"
    return orjson.loads(p.read_bytes()) if p.exists() else {}


def bump_generation(out: str | Path, stages: Iterable[str]) -> dict[str, int]:
    gens = generations(out)
    for s in stages:
        gens[s] = gens.get(s, 0) + 1
    _atomic_write(Path(out) / STAGES_DIR / "generations.json", gens)
    return gens


def resolve(cfg: Config, name: str) -> StageRun:
    """The :class:`StageRun` of stage ``name`` under ``cfg`` (fingerprints of the whole chain)."""
    return _resolve(cfg, name, generations(cfg.run.out), {})


def _resolve(cfg: Config, name: str, gens: Mapping[str, int], memo: dict[str, StageRun]) -> StageRun:
    if name in memo:
        return memo[name]
    stage = get_stage(name)
    inputs: dict[str, str] = {}
    for up in stage.upstream:
        ur = _resolve(cfg, up, gens, memo)
        inputs.update(ur.inputs)
        inputs[up] = ur.fingerprint
    settings = stage.settings(cfg)
    doc = {"stage": name, "version": stage.version, "settings": settings,
           "inputs": {u: inputs[u] for u in stage.upstream}, "run_id": cfg.run.run_id,
           "generation": gens.get(name, 0)}
    digest = hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()
    memo[name] = StageRun(name, f"{name}-{digest[:12]}", inputs, cfg, settings)
    return memo[name]


def stage_records(out: str | Path) -> list[dict[str, Any]]:
    """Every stage run recorded under OUT: stage.json merged with its completion state."""
    base = Path(out) / STAGES_DIR
    rows = []
    for p in sorted(base.glob("*/stage.json")):
        doc = orjson.loads(p.read_bytes())
        comp = p.parent / "complete.json"
        doc["complete"] = orjson.loads(comp.read_bytes()) if comp.exists() else None
        doc["batches_done"] = len(list((p.parent / "done").glob("*.json")))
        rows.append(doc)
    return rows


# ----------------------------------------------------------------------------- executing


def upstream_state(run: StageRun) -> str | None:
    """None when every direct upstream stage is complete with output; else why this stage skips.

    Raises :class:`StageError` when an upstream stage has not (completely) run for this config."""
    stage = get_stage(run.stage)
    for up in stage.upstream:
        ur = StageRun(up, run.inputs[up], run.inputs, run.cfg)
        comp = ur.complete()
        if comp is None:
            raise StageError(f"stage {run.stage!r} needs the output of stage {up!r} for this config "
                             f"({ur.fingerprint}), which is not complete under {run.out}: run `{COMMANDS[up]}` "
                             "with the same config (or `hopforge run`) first")
        if comp.get("empty"):
            return comp["empty"]
    return None


def execute_batch(stage: Stage, run: StageRun, batch: Batch) -> StageStats:
    """Run one batch unless it is complete; mark it complete. What a Prefect task calls."""
    if run.is_done(batch) or (not stage.partial_batches and run.committed(batch, stage.writes)):
        if not run.is_done(batch):
            run.mark_done(batch, stage.stats_type(batches=1, batches_skipped=1))
        return stage.stats_type(batches=1, batches_skipped=1)
    t0 = time.process_time()
    committed: list[ShardInfo] = []
    token = _COMMITTED.set(committed)
    try:
        stats = stage.run_batch(run, batch)
    finally:
        _COMMITTED.reset(token)
    stats.batches = 1
    stats.cpu_seconds = stats.cpu_seconds or (time.process_time() - t0)
    # A resumed partial batch committed shards before this run too: look those up in the manifests.
    run.mark_done(batch, stats, None if stage.partial_batches else committed)
    return stats


def _execute_in_worker(name: str, run: StageRun, batch: Batch) -> dict[str, Any]:
    return execute_batch(get_stage(name), run, batch).to_dict()


@dataclass
class LocalExecutor:
    """Runs a stage's batches in this process, or in a pool of ``workers`` processes.

    The CLI's executor; the Prefect flows use their task runner instead."""

    workers: int = 1
    progress: Callable[[int, int], None] | None = None  # (batches done, batches) after each batch

    def map(self, stage: Stage, run: StageRun, batches: Sequence[Batch]) -> list[StageStats]:
        results: list[StageStats] = []
        if self.workers > 1 and len(batches) > 1:
            # fork: works from any caller (spawn re-imports __main__, which breaks unguarded scripts).
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ProcessPoolExecutor(max_workers=min(self.workers, len(batches)), mp_context=ctx) as pool:
                futs = [pool.submit(_execute_in_worker, stage.name, run, b) for b in batches]
                for fut in futs:
                    results.append(stage.stats_type.from_dict(fut.result()))
                    if self.progress:
                        self.progress(len(results), len(batches))
        else:
            for b in batches:
                results.append(execute_batch(stage, run, b))
                if self.progress:
                    self.progress(len(results), len(batches))
        return results


def owner_name(what: str) -> str:
    return f"{what} (pid {os.getpid()} on {socket.gethostname()})"


def prepare(run: StageRun) -> tuple[StageRun, str | None, StageStats | None]:
    """Before planning, under the lease: recover interrupted commits, check the inputs.

    Returns the run (with the batches already committed read from the manifests, once), and
    (why the stage skips, stats to return), or (None, None) when it should run."""
    stage = get_stage(run.stage)
    recover(run.out)
    reason = upstream_state(run)
    run.record()
    if reason is not None:
        # Recorded complete with the same line, so the stage after this one skips too (instead of
        # finding this one incomplete). Logged at INFO: every caller reports ``empty`` itself.
        log.info("%s: skipped: %s", run.stage, reason)
        stats = stage.stats_type(empty=reason)
        if run.complete() is None:
            run.mark_complete(stats, 0)
        return run, reason, stats
    comp = run.complete()
    if comp is not None and not stage.output_present(run):
        run.reset()
        comp = None
    if comp is not None and not run.outputs_exist():
        # Shards deleted by hand: forget completion; each batch re-checks its own shards.
        (run.dir / "complete.json").unlink(missing_ok=True)
        comp = None
    if comp is not None:  # nothing to do: the counts are this invocation's (zero)
        return run, None, stage.stats_type(batches=comp["batches"], batches_skipped=comp["batches"],
                                           empty=comp.get("empty"))
    committed = frozenset(e.batch for t in stage.writes for e in read_manifest(run.out, t)
                          if e.run == run.fingerprint and e.batch and (run.out / t / e.path).exists())
    return replace(run, committed_batches=committed), None, None


def conclude(run: StageRun, stage: Stage, results: Iterable[StageStats], n_batches: int, t0: float,
             *, finish: bool = True) -> StageStats:
    """Merge batch stats, run the whole-table step, record completion."""
    stats = stage.stats_type()
    for r in results:
        stats.merge(r)
    if finish:
        stats = stage.finish(run, stats)
    stats.seconds = time.monotonic() - t0
    run.mark_complete(stats, n_batches)
    if stats.empty:
        log.info("%s: %s", run.stage, stats.empty)
    return stats


def run_stage(name: str, cfg: Config, *, executor: LocalExecutor | None = None, wait: bool | float = False,
              owner: str = "hopforge", stage: Stage | None = None) -> StageStats:
    """Run stage ``name`` for ``cfg`` to completion with the local executor; returns its stats.

    Holds the stage's lease on OUT for the duration (a second run waits, with ``wait``,
    or fails with one line naming the holder). A stage whose input is empty writes
    nothing and returns stats whose ``empty`` says why."""
    stage = stage or get_stage(name)
    run = resolve(cfg, name)
    t0 = time.monotonic()
    with Lease(run.out, name, owner=owner_name(owner)).acquire(wait=wait):
        run, _skip, done = prepare(run)
        if done is not None:
            return done
        try:
            batches = stage.plan(run)
        except Empty as e:
            stats = stage.stats_type(empty=e.reason)
            stats.seconds = time.monotonic() - t0
            run.mark_complete(stats, 0)
            log.info("%s: %s", name, e.reason)
            return stats
        executor = executor or LocalExecutor(workers=stage.workers(cfg))
        try:
            results = executor.map(stage, run, batches)
        finally:
            close_run(run)  # one teacher per stage run: started by the first batch, stopped here
        return conclude(run, stage, results, len(batches), t0)


# ----------------------------------------------------------------------------- what readers read


def _selection(chain: Mapping[str, str]) -> dict[str, list[str]]:
    sel: dict[str, list[str]] = {t: [chain[s]] for t, s in TABLE_STAGE.items() if s in chain}
    sel["rejects"] = [chain[s] for s in STAGES if s in chain]
    return sel


def selection_for(run: StageRun) -> dict[str, list[str]]:
    """Table -> partitions for a catalog over ``run``'s chain (``run`` and every stage upstream)."""
    return _selection({**run.inputs, run.stage: run.fingerprint})


def current_selection(out: str | Path) -> dict[str, list[str]] | None:
    """The chain a reader sees when it names no config: the most recently completed stage run,
    its inputs, and its latest complete descendants (so a finished pipeline shows whole, and a
    fresh ingest of another dump shows its own pages). None when nothing is recorded."""
    done = [r for r in stage_records(out) if r["complete"]]
    if not done:
        return None
    latest = max(done, key=lambda r: r["complete"]["at"])
    chain = {**latest["inputs"], latest["stage"]: latest["fingerprint"]}  # inputs are transitive
    for name in STAGES[STAGES.index(latest["stage"]) + 1:]:
        parent = get_stage(name).upstream[-1]
        kids = [r for r in done if r["stage"] == name and r["inputs"].get(parent) == chain.get(parent)]
        if not kids:
            break
        chain[name] = max(kids, key=lambda r: r["complete"]["at"])["fingerprint"]
    return _selection(chain)
