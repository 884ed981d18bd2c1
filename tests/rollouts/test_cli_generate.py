from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from hopforge.cli import app
from hopforge.storage import query_arrow


def test_generate_scripted_writes_and_resumes(wiki: Path) -> None:
    runner = CliRunner()
    args = ["generate", "--out", str(wiki), "--teacher", "scripted", "--model", "scripted", "--run-id", "cli",
            "--max-in-flight", "8"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    stats = orjson.loads(r.stdout[r.stdout.index("{"):])
    assert stats["status"] == {"answered": 3} and stats["written"] == 3
    assert query_arrow(wiki, "SELECT count(*) AS n FROM trajectories")["n"].to_pylist() == [3]
    r2 = runner.invoke(app, args)
    assert orjson.loads(r2.stdout[r2.stdout.index("{"):])["written"] == 0


def test_generate_rejects_unknown_teacher(wiki: Path) -> None:
    r = CliRunner().invoke(app, ["generate", "--out", str(wiki), "--teacher", "gpt9"])
    assert r.exit_code != 0 and "unknown teacher 'gpt9'" in r.output


def test_generate_openai_without_base_url_is_a_clear_error(wiki: Path) -> None:
    r = CliRunner().invoke(app, ["generate", "--out", str(wiki), "--teacher", "openai"])
    assert r.exit_code != 0
    assert "needs teacher.base_url" in str(r.exception) + r.output


def test_progress_view_shows_rates_and_status() -> None:
    import time

    from rich.console import Console

    from hopforge.cli import _rollout_view
    from hopforge.rollouts.engine import LiveStats

    st = LiveStats(trajectories=10, turns=100, tokens=5000, errors=2, retries=3, in_flight=7,
                      status={"answered": 9, "error": 1})
    st.started = time.monotonic() - 10
    con = Console(width=200, record=True)
    con.print(_rollout_view(st))
    text = con.export_text()
    assert "answered 9, error 1" in text and " 10.0 " in text and " 7 " in text  # turns/s, in flight
