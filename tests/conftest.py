"""Shared fixtures. The test kit (``tfkit``) lives beside this file."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from tfkit import TaskForce, build_taskforce

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci")


@pytest.fixture(scope="session")
def taskforce() -> TaskForce:
    """coord (coordinator), police/ngo/labour (members), outsider (no membership)."""
    return build_taskforce()
