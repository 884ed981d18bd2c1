"""Prefect defaults hopforge applies before Prefect is imported."""

from __future__ import annotations

from hopforge.flows.prefect_env import PREFECT_DEFAULTS, apply_prefect_defaults


def test_defaults_fill_only_unset_keys() -> None:
    env = {"PREFECT_SERVER_ANALYTICS_ENABLED": "true"}
    applied = apply_prefect_defaults(env)
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true"  # the user's choice wins
    assert env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "120"
    assert applied == {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
    assert set(PREFECT_DEFAULTS) == {"PREFECT_SERVER_ANALYTICS_ENABLED",
                                     "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}


def test_importing_flows_applied_them_to_this_process() -> None:
    import os

    import hopforge.flows  # noqa: F401

    assert os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"]
