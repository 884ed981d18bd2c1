from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from hopforge.cli import app
from hopforge.errors import TeacherError
from hopforge.stage import StageError
from hopforge.storage import query_arrow

# The chain write_wiki recorded (rollout_cfg's run id and dump), as a config file for the CLI.
CONFIG = '[run]\nrun_id = "test"\n[graph]\ndump = "fixture-wiki.xml"\n'


def config_file(tmp_path: Path) -> Path:
    p = tmp_path / "hopforge.toml"
    p.write_text(CONFIG, encoding="utf-8")
    return p


def stats_of(stdout: str) -> dict:
    return orjson.loads(stdout[stdout.index("{"):])


def test_generate_scripted_writes_and_a_rerun_skips(wiki: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["generate", "--config", str(config_file(tmp_path)), "--out", str(wiki), "--teacher", "scripted",
            "--model", "scripted", "--max-in-flight", "8"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    stats = stats_of(r.stdout)
    assert stats["status"] == {"answered": 3} and stats["rows"] == {"trajectories": 3}
    assert stats["trajectories"] == 3 and stats["batches"] == 1 and stats["skipped"] is False
    assert query_arrow(wiki, "SELECT count(*) AS n FROM trajectories")["n"].to_pylist() == [3]
    r2 = runner.invoke(app, [*args[:-1], "16"])  # max_in_flight does not change what is written
    again = stats_of(r2.stdout)
    assert again["skipped"] is True and again["batches_skipped"] == again["batches"] == 1
    assert again["trajectories"] == 0 and again["rows"] == {}


def test_generate_without_the_screened_questions_of_its_config_names_the_missing_stage(wiki: Path) -> None:
    r = CliRunner().invoke(app, ["generate", "--out", str(wiki), "--teacher", "scripted", "--run-id", "cli"])
    assert r.exit_code != 0 and isinstance(r.exception, StageError)
    assert "needs the output of stage 'graph'" in str(r.exception)


def test_generate_rejects_unknown_teacher(wiki: Path) -> None:
    r = CliRunner().invoke(app, ["generate", "--out", str(wiki), "--teacher", "gpt9"])
    assert r.exit_code != 0 and "unknown teacher 'gpt9'" in r.output


def test_generate_openai_without_base_url_is_a_clear_error(wiki: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["generate", "--config", str(config_file(tmp_path)), "--out", str(wiki),
                                 "--teacher", "openai"])
    assert r.exit_code != 0 and isinstance(r.exception, TeacherError)
    assert "needs teacher.base_url" in str(r.exception)


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
