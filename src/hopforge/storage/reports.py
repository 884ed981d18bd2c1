"""Stage reports: one JSON document per stage invocation under ``OUT/reports/``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson


def save_report(out: Path, kind: str, run_id: str, report: dict[str, Any]) -> Path:
    """Write ``report`` as ``OUT/reports/<kind>-<run_id>-<UTC stamp>.json`` and return its path."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = Path(out) / "reports" / f"{kind}-{run_id}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return path
