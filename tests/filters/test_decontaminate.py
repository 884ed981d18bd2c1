import pytest
from tests.filters.trajectory_builders import question

from hopforge.errors import ConfigError
from hopforge.filters.decontaminate import contaminated_questions, load_benchmark


def test_ngram_overlap_with_benchmark_file(tmp_path):
    bench = tmp_path / "bench.txt"
    bench.write_text("What is the capital of France?\n"
                     "Which river flows through the capital of the country where the Zorblax violin maker lived?\n",
                     encoding="utf-8")
    index = load_benchmark(bench, 8)
    qs = [question("q1"), question("q2", question="Who painted the ceiling of the chapel in Rome?"),
          question("q3", question="what is the CAPITAL of France")]
    found = contaminated_questions(qs, index, 8, source="bench.txt")
    assert set(found) == {"q1", "q3"}  # q1 shares an 8-gram, q3 is a short question copied whole
    assert found["q1"][0] == "benchmark_overlap" and "bench.txt line 2" in found["q1"][1]
    assert "line 1" in found["q3"][1]


def test_missing_or_empty_benchmark_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="screen.decontaminate: benchmark file not found"):
        load_benchmark(tmp_path / "nope.txt", 13)
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="has no questions"):
        load_benchmark(tmp_path / "empty.txt", 13)
