import json

from tests.filters.trajectory_builders import GOOD_ACTIONS, make_episode, question, write_dataset
from typer.testing import CliRunner

from hopforge.cli import app
from hopforge.storage import read_table


def test_filter_and_label_commands(out, tmp_path):
    write_dataset(out, [question()], [make_episode(GOOD_ACTIONS, tid="good"),
                                      make_episode([*GOOD_ACTIONS[:-1], ("answer", "Rhine")], tid="wrong")])
    runner = CliRunner()
    r = runner.invoke(app, ["filter", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "answer_mismatch (1)" in r.output and "kept 1" in r.output
    [report] = list((out / "reports").glob("filter-*.json"))
    assert json.loads(report.read_text())["kept"] == 1
    r = runner.invoke(app, ["label", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "turn labels" in r.output
    assert read_table(out, "turn_labels").num_rows == 9  # the kept trajectory's 9 turns
    r = runner.invoke(app, ["filter", "--out", str(out), "--decontaminate", str(tmp_path / "missing.txt")])
    assert r.exit_code != 0 and "benchmark file not found" in str(r.exception)
