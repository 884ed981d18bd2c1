from tests.filters.trajectory_builders import GOOD_ACTIONS, make_episode, question, write_dataset
from typer.testing import CliRunner

from hopforge.cli import app
from hopforge.config import load_config
from hopforge.errors import ConfigError
from hopforge.stage import resolve
from hopforge.storage import read_table


def test_filter_label_and_screen_commands(out, tmp_path):
    cfg = load_config(None, {"run.out": str(out)})  # the CLI's defaults with --out
    write_dataset(cfg, [question()], [make_episode(GOOD_ACTIONS, tid="good"),
                                      make_episode([*GOOD_ACTIONS[:-1], ("answer", "Rhine")], tid="wrong")])
    runner = CliRunner()
    r = runner.invoke(app, ["filter", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "answer_mismatch (1)" in r.output and "kept 1" in r.output
    assert resolve(cfg, "filters").complete()["stats"]["kept"] == 1
    r = runner.invoke(app, ["filter", "--out", str(out)])
    assert r.exit_code == 0 and "skipped: already complete for this config" in r.output
    r = runner.invoke(app, ["label", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "turn labels" in r.output
    assert read_table(out, "turn_labels").num_rows == 9  # the kept trajectory's 9 turns
    # Another threshold is another filter run (and the label stage of the default config is untouched).
    r = runner.invoke(app, ["filter", "--out", str(out), "--f1-threshold", "0.5"])
    assert r.exit_code == 0 and "kept 1" in r.output and "skipped" not in r.output
    assert len({p.name for p in (out / "kept").glob("run=*")}) == 2
    # Decontamination is a screen setting now.
    r = runner.invoke(app, ["screen", "--out", str(out), "--decontaminate", str(tmp_path / "missing.txt")])
    assert r.exit_code != 0 and isinstance(r.exception, ConfigError)
    assert "screen.decontaminate: benchmark file not found" in str(r.exception)
    r = runner.invoke(app, ["filter", "--out", str(out), "--decontaminate", "x.txt"])
    assert r.exit_code != 0 and "No such option: --decontaminate" in r.output
