"""The publish stage (src/hopforge/publish/stage.py) and the export of one chain: OUT/export/<format>
holds the kept trajectories of the chain its config resolves to, a complete publish is skipped
until its directory is deleted or replaced, `export.format` re-runs only publish, and
`hopforge export --config` exports that config's chain even when another chain is in OUT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hopforge.cli import app
from hopforge.filters import run_filters
from hopforge.labels.stage import run_labels
from hopforge.publish.export import MANIFEST_NAME
from hopforge.publish.stage import PublishStats, export_dir, run_publish
from hopforge.rollouts import run_rollouts
from hopforge.stage import resolve
from tests.rollouts.rollout_fixtures import rollout_cfg, write_wiki


def labelled(out: Path, temperature: float):
    cfg = rollout_cfg(out, **{"teacher.temperature": temperature})
    run_rollouts(cfg)
    run_filters(cfg)
    run_labels(cfg)
    return cfg


def chain_runs(cfg) -> dict[str, list[str]]:
    """The partitions an export of ``cfg``'s chain reads, by table (those with rows)."""
    fp = {s: resolve(cfg, s).fingerprint for s in ("graph", "questions", "rollouts", "filters", "labels")}
    return {"pages": [fp["graph"]], "questions": [fp["questions"]], "trajectories": [fp["rollouts"]],
            "turns": [fp["rollouts"]], "turn_labels": [fp["labels"]], "kept": [fp["filters"]],
            "rejects": [fp["filters"]]}


@pytest.fixture
def two_chains(tmp_path: Path):
    """One OUT, two chains that differ only in the teacher's temperature (all the way to labels)."""
    out = tmp_path / "out"
    write_wiki(out)
    return out, labelled(out, 0.7), labelled(out, 0.2)


def manifest_of(dest: Path) -> dict:
    return json.loads((dest / MANIFEST_NAME).read_text())


def test_publish_exports_its_chain_and_a_rerun_is_skipped(two_chains) -> None:
    out, a, b = two_chains
    stats = run_publish(a)
    assert isinstance(stats, PublishStats)
    dest = export_dir(a)
    assert dest == out / "export" / "trl" and stats.dest == str(dest) and stats.format == "trl"
    assert stats.trajectories == 2 and sum(stats.samples.values()) == 2  # q-inject was rejected (effort)
    assert Path(stats.card) == dest / "README.md" and (dest / "README.md").is_file()
    assert manifest_of(dest)["source"]["runs"] == chain_runs(a)  # the other chain is not read
    assert (dest / ".fingerprint").read_text().strip() == resolve(a, "publish").fingerprint
    # The card counts this chain too: 3 trajectories and 2 kept, though OUT holds 6 trajectories.
    card = (dest / "README.md").read_text()
    assert "| trajectories | 3 |" in card and "| kept | 2 |" in card and "| exported rows | 2 |" in card
    written = (dest / MANIFEST_NAME).stat().st_mtime_ns
    again = run_publish(a)
    assert again.batches == again.batches_skipped == 1 and again.trajectories == 0 and again.samples == {}
    assert (dest / MANIFEST_NAME).stat().st_mtime_ns == written
    # Pushing is not part of what is published: the same run, still complete.
    pushed = rollout_cfg(out, **{"teacher.temperature": 0.7, "export.push_to_hub": "me/ds"})
    assert resolve(pushed, "publish").fingerprint == resolve(a, "publish").fingerprint


def test_the_export_directory_is_rewritten_when_deleted_or_replaced_by_another_chain(two_chains) -> None:
    import shutil

    out, a, b = two_chains
    run_publish(a)
    shutil.rmtree(export_dir(a))
    redo = run_publish(a)
    assert redo.batches_skipped == 0 and manifest_of(export_dir(a))["source"]["runs"] == chain_runs(a)
    # The other chain publishes into the same directory (same format) ...
    other = run_publish(b)
    assert other.batches_skipped == 0 and manifest_of(export_dir(b))["source"]["runs"] == chain_runs(b)
    # ... so the first chain's publish, complete but no longer on disk, runs again.
    back = run_publish(a)
    assert back.batches_skipped == 0 and manifest_of(export_dir(a))["source"]["runs"] == chain_runs(a)


def test_a_format_change_runs_only_publish(two_chains) -> None:
    out, a, _ = two_chains
    run_publish(a)
    sharegpt = rollout_cfg(out, **{"teacher.temperature": 0.7, "export.format": "sharegpt"})
    assert resolve(sharegpt, "publish").inputs == resolve(a, "publish").inputs
    stats = run_publish(sharegpt)
    assert stats.batches_skipped == 0 and stats.dest == str(out / "export" / "sharegpt")
    assert manifest_of(out / "export" / "sharegpt")["format"] == "sharegpt"
    assert manifest_of(out / "export" / "trl")["format"] == "trl"  # the trl export stays


def test_cli_export_with_a_config_exports_that_chain(two_chains, tmp_path: Path) -> None:
    out, a, b = two_chains
    for name, cfg, temperature in (("a", a, 0.7), ("b", b, 0.2)):
        conf = tmp_path / f"{name}.toml"
        conf.write_text('[run]\nrun_id = "test"\n[graph]\ndump = "fixture-wiki.xml"\n'
                        f'[teacher]\nbackend = "scripted"\nmodel = "scripted"\ntemperature = {temperature}\n',
                        encoding="utf-8")
        dest = tmp_path / f"export-{name}"
        r = CliRunner().invoke(app, ["export", "--config", str(conf), "--out", str(out), "--dest", str(dest),
                                     "--no-card"])
        assert r.exit_code == 0, r.output
        manifest = manifest_of(dest)
        assert manifest["source"]["runs"] == chain_runs(cfg) and manifest["counts"]["trajectories"] == 2
