"""The layout reads as the pipeline: no stage package imports another stage, flows or the CLI;
storage knows no stage and no config; llm, search and text import no stage (checked on the source, every
import statement including the ones inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "hopforge"
STAGES = ("graph", "synth", "rollouts", "filters", "labels", "publish")
FOLDERS = ("graph/", "synth/", "rollouts/", "llm/", "search/", "filters/", "labels/", "publish/", "storage/",
           "flows/", "viewer/", "text/", "testing/", "cli.py", "config.py", "stage.py")


def imports(package: str) -> list[tuple[str, str]]:
    """(file, imported module) for every import under ``src/hopforge/<package>``."""
    found = []
    for path in sorted((SRC / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(path.name, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found += [(path.name, node.module)]
    return found


def test_the_folder_list_is_the_pipeline():
    for name in FOLDERS:
        assert (SRC / name).exists(), f"src/hopforge/{name} is missing"


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_imports_another_stage_flows_or_cli(stage):
    forbidden = {f"hopforge.{s}" for s in STAGES if s != stage} | {"hopforge.flows", "hopforge.cli"}
    bad = [(f, m) for f, m in imports(stage) if any(m == x or m.startswith(x + ".") for x in forbidden)]
    assert not bad, f"{stage}/ imports {bad}"


@pytest.mark.parametrize("package", ["storage", "text", "llm", "search"])
def test_shared_packages_import_no_stage(package):
    forbidden = {f"hopforge.{s}" for s in STAGES} | {"hopforge.flows", "hopforge.cli", "hopforge.stage"}
    if package in ("storage", "text"):
        forbidden.add("hopforge.config")
    if package == "text":
        forbidden |= {"hopforge.storage", "hopforge.llm"}
    if package == "search":  # the index reads pages through storage; it needs no model and no config
        forbidden |= {"hopforge.llm", "hopforge.config"}
    bad = [(f, m) for f, m in imports(package) if any(m == x or m.startswith(x + ".") for x in forbidden)]
    assert not bad, f"{package}/ imports {bad}"


def test_the_test_double_is_not_imported_by_any_stage():
    for stage in (*STAGES, "llm"):
        bad = [(f, m) for f, m in imports(stage) if m.startswith("hopforge.testing")]
        # The scripted backend is started by the teacher client on request (teacher.backend = "scripted").
        assert all(stage == "llm" and f == "client.py" for f, _ in bad), f"{stage}/ imports {bad}"
