"""Flow fixtures: ONE session-scoped Prefect test harness for the whole test session.

Other packages' tests that need Prefect should use ``prefect_harness`` from here
(move it to tests/conftest.py if a second package needs it): starting a second
harness costs another ~25 s cold server start on a 2-core VM.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hopforge.flows.prefect_env import apply_prefect_defaults

apply_prefect_defaults()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[str]:
    """A temporary Prefect API (SQLite in a temp dir, subprocess server on 127.0.0.1);
    yields its URL so subprocesses (``hopforge run``) can use the same API."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    # None: use PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (120 s) instead of the harness's 30 s.
    with prefect_test_harness(server_startup_timeout=None):
        yield PREFECT_API_URL.value()


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hopforge_env() -> dict[str, str]:
    """Environment for a ``hopforge`` subprocess: this source tree on PYTHONPATH, quiet Prefect."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "PREFECT_LOGGING_LEVEL": "WARNING"}


@pytest.fixture(scope="session")
def enwiki_233_module() -> Path:
    """The real 233-article dump (session scope: module fixtures run the pipeline on it once)."""
    path = (Path(__file__).resolve().parents[2] / ".." / "shared" / "wiki" / "enwiki-233.xml.bz2").resolve()
    if not path.exists():
        pytest.skip(f"{path} not found: the shared Wikipedia fixtures live in ../shared/wiki beside the repo")
    return path


@pytest.fixture(scope="session")
def pipeline_config():
    """``write_config(path, dump, **sections) -> path``: the flow tests' small real-data config."""
    return write_config


def write_config(path: Path, dump: Path, **sections: dict) -> Path:
    """enwiki-233, a few dozen template questions in several batches, the scripted teacher."""
    base = {
        "graph": {"dump": str(dump), "workers": 1, "batch_pages": 64},
        # ~13 % of 2-3 hop template questions pass every check on enwiki-233 (issue 15 gates): ~20 here.
        "synth": {"n_questions": 160, "hops_min": 2, "hops_max": 3, "batch_size": 40},
        "teacher": {"backend": "scripted"},
        "rollout": {"batch_questions": 2, "max_turns": 12, "max_in_flight": 4},
        "filters": {"min_tool_calls": 1},
        "flows": {"max_workers": 2, "task_retries": 1, "retry_delay_s": 0.1},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        for k, v in values.items():
            lines.append(f"{k} = {_toml(v)}")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture(scope="session")
def reference(prefect_harness: str, tmp_path_factory: pytest.TempPathFactory, enwiki_233_module: Path):
    """One uninterrupted pipeline run (config path, OUT, summary, final state), shared by the
    umbrella, resume and Dask tests, which compare their tables against it. Tests that run the
    pipeline again on it work on a copy (:func:`copy_out`)."""
    from hopforge.flows import run_pipeline

    root = tmp_path_factory.mktemp("reference")
    config = write_config(root / "pipeline.toml", enwiki_233_module)
    out = root / "data"
    summary, state = run_pipeline(config, {"run.out": str(out)})
    return config, out, summary, state


def copy_out(src: Path, dest: Path) -> Path:
    """A copy of an OUT directory (stage outputs are keyed by fingerprints, not by where OUT lies)."""
    return Path(shutil.copytree(src, dest, symlinks=True))


def shard_paths_by_table(out: Path) -> dict[str, list[str]]:
    """Every table's manifest, as the shard paths it records in order (a new shard shows here)."""
    from hopforge.storage import read_manifest
    from hopforge.storage.schemas import SCHEMAS

    return {t: [f"{e.path}" for e in read_manifest(out, t)] for t in SCHEMAS}


@pytest.fixture(scope="session")
def table_keys():
    """``table_keys(out, table) -> Counter`` of the table's id-column tuples (duplicates counted)."""
    from collections import Counter

    from hopforge.storage import read_table
    from hopforge.storage.schemas import ID_COLUMNS

    def keys(out: Path, table: str) -> Counter:
        cols = list(ID_COLUMNS[table])
        t = read_table(out, table, columns=cols)
        return Counter(zip(*(t.column(c).to_pylist() for c in cols), strict=True))

    return keys

