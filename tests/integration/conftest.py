"""Integration fixtures: a real nats-server per test module, configured from the roster."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import free_port
from tfkit import TaskForce, build_taskforce

from tfshare.broker import BrokerProcess
from tfshare.workflows.live import start_broker

# The kit's and the tests' key files use the insecure test cost on purpose: no warning about it
# (tfshare.workflows.keys), here and in the CLI processes the tests start.
os.environ["TFSHARE_TEST"] = "1"


@pytest.fixture(scope="module")
def live_tf() -> TaskForce:
    """The kit's task force, its clock set to the real time (the broker is real)."""
    return build_taskforce(now_ms=time.time_ns() // 1_000_000)


@pytest.fixture
def broker(live_tf: TaskForce, tmp_path: Path) -> Iterator[BrokerProcess]:
    """A fresh nats-server with JetStream, the stream and every reader's consumer."""
    process = start_broker(
        live_tf.trusted(), tmp_path / "broker", port=free_port(), roster_bytes=live_tf.roster_bytes
    )
    try:
        yield process
    finally:
        process.stop()
