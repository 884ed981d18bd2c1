"""LiveCatalog: one catalog for the server's life, reopened when shards change, safe under concurrent requests."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from hopforge.config import load_config
from hopforge.stage import selection_for
from hopforge.storage import ShardWriter
from hopforge.storage.catalog import fetch_arrow
from hopforge.testing.stages import complete_chain
from hopforge.viewer.live_catalog import LiveCatalog


def _count(cat: LiveCatalog) -> int:
    with cat.cursor() as con:
        return fetch_arrow(con, "SELECT count(*) AS n FROM questions").to_pylist()[0]["n"]


def test_reopens_only_when_a_manifest_changes(small_run):
    cat = LiveCatalog(small_run)
    try:
        assert _count(cat) == 3 and cat.generation == 1
        assert _count(cat) == 3 and cat.generation == 1  # nothing changed: same catalog
        with ShardWriter(small_run, "questions", run_id="r9") as w:
            w.write({"question_id": "q9", "hops": 2})
        assert _count(cat) == 4 and cat.generation == 2
        # a table that had no shards at all when the catalog opened shows up too
        assert (small_run / "walks").exists() and not (small_run / "nodes").exists()
        with ShardWriter(small_run, "nodes", run_id="g1") as w:
            w.write({"node": 0, "page_id": 1, "title": "A"})
        with cat.cursor() as con:
            assert fetch_arrow(con, "SELECT title FROM nodes").to_pylist() == [{"title": "A"}]
    finally:
        cat.close()


def test_concurrent_readers_while_shards_are_written(small_run):
    cat = LiveCatalog(small_run)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        i = 0
        while not stop.is_set() and i < 15:
            with ShardWriter(small_run, "questions", run_id=f"w{i}") as w:
                w.write({"question_id": f"qw{i}", "hops": 2})
            i += 1

    def reader(_: int) -> int:
        try:
            n = 0
            for _ in range(10):
                with cat.cursor() as con:
                    n = fetch_arrow(con, "SELECT count(*) AS n FROM questions q JOIN trajectories t "
                                         "USING (question_id)").to_pylist()[0]["n"]
            return n
        except BaseException as e:  # noqa: BLE001  (collected and re-raised in the test thread)
            errors.append(e)
            raise

    t = threading.Thread(target=writer)
    t.start()
    try:
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(reader, range(12)))
    finally:
        stop.set()
        t.join()
        reopened = cat.generation
        cat.close()
    assert errors == []
    assert reopened > 1, "the writer never overlapped the readers; the test proved nothing"
    assert set(results) == {3}  # the joins only see the three original questions with trajectories


def _complete_questions(out, seed: int, ids: range):
    cfg = load_config(None, {"run.out": str(out), "run.seed": seed, "graph.dump": "fixture-wiki.xml"})
    qs = [{"question_id": f"q{i}", "question": f"Q{i}?", "answer": "A", "hops": 2, "passed": True} for i in ids]
    return complete_chain(cfg, {"questions": {"questions": qs}})["questions"]


def test_views_read_the_latest_completed_chain_and_follow_a_newer_one(tmp_path):
    out = tmp_path / "data"
    _complete_questions(out, 0, range(4))
    newer = _complete_questions(out, 1, range(2, 5))  # q2 and q3 again, in another partition
    cat = LiveCatalog(out)
    try:
        with cat.cursor() as con:
            rows = fetch_arrow(con, "SELECT question_id, run FROM questions ORDER BY 1").to_pylist()
            assert rows == [{"question_id": f"q{i}", "run": newer.fingerprint} for i in range(2, 5)]
            assert fetch_arrow(con, "SELECT count(*) AS n FROM questions_all").to_pylist() == [{"n": 7}]
        generation = cat.generation
        newest = _complete_questions(out, 2, range(9, 10))
        with cat.cursor() as con:
            assert fetch_arrow(con, "SELECT question_id, run FROM questions").to_pylist() == [
                {"question_id": "q9", "run": newest.fingerprint}]
        assert cat.generation == generation + 1
    finally:
        cat.close()


def test_a_given_selection_pins_the_views_to_one_chain(tmp_path):
    out = tmp_path / "data"
    older = _complete_questions(out, 0, range(4))
    _complete_questions(out, 1, range(2, 5))
    cat = LiveCatalog(out, selection=lambda: selection_for(older))
    try:
        assert _count(cat) == 4
    finally:
        cat.close()
