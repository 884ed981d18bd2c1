from hopforge.storage import content_id


def test_same_content_same_id_and_order_of_keys_does_not_matter():
    assert content_id("q", {"a": 1, "b": 2}, 0) == content_id("q", {"b": 2, "a": 1}, 0)
    assert len(content_id("x")) == 20


def test_different_content_or_seed_different_id():
    assert content_id("walk", ["A", "B"], 0) != content_id("walk", ["A", "B"], 1)
    assert content_id("walk", ["A", "B"], 0) != content_id("walk", ["B", "A"], 0)
    assert content_id("x", prefix="q_").startswith("q_")
