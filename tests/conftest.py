"""Shared fixtures. The test kit (``tfkit``) lives beside this file."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog
from hypothesis import HealthCheck, settings
from tfkit import TaskForce, build_taskforce

from tfshare import logconfig

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci")


@pytest.fixture(scope="session")
def taskforce() -> TaskForce:
    """coord (coordinator), police/ngo/labour (members), outsider (no membership)."""
    return build_taskforce()


@pytest.fixture(autouse=True)
def _logging_as_a_new_process_has_it() -> Iterator[None]:
    """Each test starts with structlog's defaults: a CLI command run in-process configures
    logging for the whole process (a level filter at warning, a stream), which must not
    leak into later tests (capture_logs would then miss every info event)."""
    logconfig._AfterImport.cancel()
    structlog.reset_defaults()
    yield
