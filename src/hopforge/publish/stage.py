"""The publish stage: the kept trajectories of one label run exported as training data
(``export.format``) into ``OUT/export/<format>``, with the data card rendered beside them.

The export is a view of the tables, not a table: it is rewritten whenever the chain it
reads changes (its fingerprint) or the directory is gone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from hopforge.config import Config
from hopforge.publish.card import render_card
from hopforge.publish.export import MANIFEST_NAME, export_dataset
from hopforge.stage import Batch, Stage, StageRun, StageStats, run_stage, selection_for

PUBLISH = Batch("publish", 0)


@dataclass
class PublishStats(StageStats):
    format: str | None = field(default=None, metadata={"merge": "first"})
    dest: str | None = field(default=None, metadata={"merge": "first"})
    card: str | None = field(default=None, metadata={"merge": "first"})
    trajectories: int = 0
    samples: dict[str, int] = field(default_factory=dict)


def export_dir(cfg: Config) -> Path:
    """Where publish writes the dataset and its card: OUT/export/<format>."""
    return Path(cfg.run.out) / "export" / cfg.export.format


class PublishStage(Stage):
    name = "publish"
    upstream = ("labels",)
    reads = ("questions", "trajectories", "turns", "turn_labels", "kept")
    section = "export"
    # Pushing is a side effect of publishing, not part of what is published.
    execution_keys: ClassVar[frozenset[str]] = frozenset({"push_to_hub", "hub_private"})
    stats_type = PublishStats

    def plan(self, run: StageRun) -> list[Batch]:
        return [PUBLISH]

    def output_present(self, run: StageRun) -> bool:
        return published(run)

    def run_batch(self, run: StageRun, batch: Batch) -> PublishStats:
        t0 = time.process_time()
        cfg, dest = run.cfg, export_dir(run.cfg)
        sel = selection_for(run)
        manifest = export_dataset(cfg, cfg.export.format, dest, overwrite=True, selection=sel)
        card = render_card(cfg, dest, selection=sel)
        (dest / ".fingerprint").write_text(run.fingerprint + "\n", encoding="utf-8")
        return PublishStats(format=cfg.export.format, dest=str(dest), card=str(card),
                            trajectories=manifest["counts"]["trajectories"], samples=manifest["counts"]["samples"],
                            cpu_seconds=time.process_time() - t0)


def published(run: StageRun) -> bool:
    """True when OUT/export/<format> holds this run's export (someone may have deleted or replaced it)."""
    dest = export_dir(run.cfg)
    fp = dest / ".fingerprint"
    return (dest / MANIFEST_NAME).is_file() and fp.is_file() and fp.read_text().strip() == run.fingerprint


def run_publish(cfg: Config, **kwargs: Any) -> PublishStats:
    stats = run_stage("publish", cfg, **kwargs)
    assert isinstance(stats, PublishStats)
    return stats
