from tests.filters.trajectory_builders import GOOD_ACTIONS, make_episode

from hopforge.labels.rules import RULES_POLICY, apply_rules_policy, rule_labels


def labelled(actions):
    ep = make_episode(actions)
    rows = apply_rules_policy(ep, rule_labels(ep))
    return ep, {r["turn_index"]: r for r in rows}


def test_good_trajectory_labels_and_weights():
    ep, rows = labelled(GOOD_ACTIONS)
    # turns: 0 system, 1 user, 2 search, 3 obs, 4 visit Austria, 5 obs, 6 visit Vienna, 7 obs, 8 answer
    assert len(rows) == len(ep.turns) == 9
    assert [rows[i]["valid_call"] for i in (2, 4, 6, 8)] == [True] * 4
    assert rows[3]["valid_call"] is None and rows[0]["progress"] is None
    assert rows[2]["progress"] and rows[3]["progress"]  # the search result names Austria (hop 1)
    assert rows[4]["progress"] and rows[6]["progress"]  # Vienna (hop 2) then the Danube (hop 3)
    assert [rows[i]["novel_query"] for i in (2, 4, 6)] == [True, True, True]
    assert rows[8]["novel_query"] is None  # answer is not a query
    assert [rows[i]["loss_weight"] for i in range(9)] == [0, 0, 1, 0, 1, 0, 1, 0, 1]
    assert {r["label_policy"] for r in rows.values()} == {RULES_POLICY}
    assert all(r["judge_label"] is None for r in rows.values())


def test_tool_error_followed_by_recovery():
    _, rows = labelled([
        ("fail", "visit", "Austira", "no page titled 'Austira'"),
        ("bad", "visit(Austria", "unterminated call"),
        ("visit", "Austria", "The capital of Austria is Vienna."),
        ("visit", "Vienna", "Vienna lies on the Danube."),
        ("answer", "Danube"),
    ])
    # 2 failed visit, 3 error obs, 4 parse error, 5 visit (recovers), 6 obs, 7 visit, 8 obs, 9 answer
    assert rows[2]["valid_call"] is True and rows[2]["tool_error"] is True and rows[2]["loss_weight"] == 0
    assert rows[3]["tool_error"] is True and rows[3]["progress"] is False and rows[3]["redundant"] is True
    assert rows[4]["valid_call"] is False and rows[4]["tool_error"] is True and rows[4]["recovery"] is False
    assert rows[5]["recovery"] is True and rows[5]["loss_weight"] == 1
    assert rows[7]["recovery"] is False  # the error was already fixed


def test_repeat_and_redundant_observation():
    _, rows = labelled([
        ("search", "Zorblax", "1. Zorblax: a violin maker."),
        ("search", "zorblax ", "1. Zorblax: a violin maker."),  # same query normalised, same result
        ("search", "Zorblax luthier", "1. Zorblax: a violin maker."),  # new query, nothing new learned
        ("search", "Zorblax birthplace", "Zorblax was a violin maker born in Austria."),
        ("answer", "Danube"),
    ])
    assert rows[2]["novel_query"] is True and rows[2]["redundant"] is False and rows[2]["progress"] is False
    assert rows[4]["novel_query"] is False and rows[4]["redundant"] is True and rows[4]["loss_weight"] == 0
    assert rows[6]["novel_query"] is True and rows[6]["redundant"] is True and rows[6]["loss_weight"] == 0
    assert rows[7]["redundant"] is True
    assert rows[8]["progress"] is True and rows[8]["loss_weight"] == 1  # evidence sentence of hop 1


def test_progress_counts_each_hop_once_and_ignores_parenthetical_suffix():
    ep = make_episode([("visit", "Vienna", "Vienna lies on the Danube."),
                       ("visit", "Danube", "The Danube is a river. Vienna lies on the Danube again."),
                       ("answer", "Danube")],
                      q={**make_episode().question, "path": ["Zorblax", "Vienna", "Danube (river)"],
                         "evidence": []})
    rows = {r["turn_index"]: r for r in rule_labels(ep)}
    assert rows[2]["progress"] is True  # reveals Vienna and "danube" (from "Danube (river)")
    assert rows[4]["progress"] is False  # nothing unrevealed left
