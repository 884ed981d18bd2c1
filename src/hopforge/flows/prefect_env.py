"""Prefect process settings hopforge needs, applied before Prefect is imported.

Prefect reads its settings from the environment when it is first imported, so
these must be set before ``import prefect``. A value the user exported wins.
"""

from __future__ import annotations

import os

PREFECT_DEFAULTS: dict[str, str] = {
    # No telemetry leaves the machine.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # A cold ephemeral API server (SQLite migrations + uvicorn) takes ~25 s on a
    # busy 2-core VM; Prefect's 20 s default times out before the first flow runs.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def apply_prefect_defaults(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set :data:`PREFECT_DEFAULTS` in ``environ`` (``os.environ``) unless already set.

    Returns the keys it set, so a caller can log them.
    """
    env = os.environ if environ is None else environ
    applied = {}
    for key, value in PREFECT_DEFAULTS.items():
        if key not in env:
            env[key] = value
            applied[key] = value
    return applied
