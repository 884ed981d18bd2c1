from __future__ import annotations

import pytest

from hopforge.config import load_config
from hopforge.errors import ConfigError


def test_config_hash_ignores_the_output_dir_and_run_id_defaults_to_none(tmp_path):
    a = load_config()
    b = load_config(None, {"run.out": str(tmp_path)})
    assert a.config_hash() == b.config_hash()  # the output dir does not shape the data
    assert a.run.run_id is None  # outputs are keyed by stage fingerprints, not by a derived run id
    assert load_config(None, {"synth.hops_max": 5}).config_hash() != a.config_hash()
    assert load_config(None, {"run.run_id": "replicate-2"}).config_hash() != a.config_hash()
    with pytest.raises(ConfigError, match=r"run\.run_id: String should match pattern"):
        load_config(None, {"run.run_id": "../elsewhere"})


@pytest.mark.parametrize(("old", "section"), [("[filters]\nminhash_threshold = 0.9\n", "filters.minhash_threshold"),
                                              ("[filters]\ndifficulty_k = 2\n", "filters.difficulty_k"),
                                              ("[filters]\nlabel_judge = true\n", "filters.label_judge")])
def test_settings_moved_to_screen_and_labels_are_unknown_under_filters(tmp_path, old, section):
    p = tmp_path / "c.toml"
    p.write_text(old)
    with pytest.raises(ConfigError, match=rf"{section}: unknown key"):
        load_config(p)
    moved = load_config(None, {"screen.minhash_threshold": 0.9, "screen.difficulty_k": 2, "labels.judge": True})
    assert (moved.screen.minhash_threshold, moved.screen.difficulty_k, moved.labels.judge) == (0.9, 2, True)


def test_unknown_key_is_named_with_its_path(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[rollout]\nmax_turn = 10\n")
    with pytest.raises(ConfigError, match=r"c\.toml: rollout\.max_turn: unknown key"):
        load_config(p)


def test_bad_values_are_named(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[rollout]\nmax_turns = 900\n[teacher]\nbackend = "gpu"\n')
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "rollout.max_turns: Input should be less than or equal to 600 (got 900)" in str(e.value)
    assert "teacher.backend" in str(e.value)


def test_cross_field_check_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="hops_min \\(5\\) > hops_max \\(3\\)"):
        load_config(None, {"synth.hops_min": 5, "synth.hops_max": 3})
    p = tmp_path / "c.toml"
    p.write_text("[run\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_api_key_is_secret_and_not_in_hash(tmp_path, monkeypatch):
    cfg = load_config(None, {"teacher.api_key": "sk-planted-123"})
    assert "sk-planted-123" not in repr(cfg) and "sk-planted-123" not in cfg.model_dump_json()
    assert cfg.config_hash() == load_config().config_hash()
    assert cfg.teacher.resolved_api_key() == "sk-planted-123"
    monkeypatch.setenv("HOPFORGE_API_KEY", "from-env")
    assert load_config().teacher.resolved_api_key() == "from-env"
