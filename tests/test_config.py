from __future__ import annotations

import pytest

from hopforge.config import load_config
from hopforge.errors import ConfigError


def test_defaults_and_run_id_follow_the_config_hash(tmp_path):
    a = load_config()
    b = load_config(None, {"run.out": str(tmp_path)})
    assert a.config_hash() == b.config_hash()  # the output dir does not shape the data
    assert a.run_id == b.run_id and a.run_id.startswith("r")
    c = load_config(None, {"synth.hops_max": 5})
    assert c.run_id != a.run_id


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
