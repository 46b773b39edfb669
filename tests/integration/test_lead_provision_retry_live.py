"""A cluster just started answers before all its nodes have met: `broker up --cluster`
provisions again within its wait when the broker cannot place the replicas yet, and says so
once the wait is over (a server alone asked for 3 replicas never can)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import free_port
from tfkit import TaskForce, build_taskforce

from tfshare import transport
from tfshare.broker import BrokerProcess
from tfshare.workflows import live

pytestmark = pytest.mark.slow


@pytest.fixture
def tf() -> TaskForce:
    return build_taskforce()


@pytest.fixture
def broker(tf: TaskForce, tmp_path: Path) -> Iterator[BrokerProcess]:
    process = live.start_broker(
        tf.trusted(), tmp_path / "broker", port=free_port(), roster_bytes=tf.roster_bytes
    )
    try:
        yield process
    finally:
        process.stop()


def _provisions(
    tf: TaskForce, broker: BrokerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *,
    ready_timeout: float,
) -> int:  # fmt: skip
    calls = 0
    real = transport.provision

    async def counted(*args: object, **kwargs: object) -> dict[str, int]:
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(transport, "provision", counted)
    with pytest.raises(transport.ReplicasUnavailable):
        asyncio.run(
            live.provision_broker(
                broker.url, tmp_path / "broker", tf.trusted(), replicas=3,
                ready_timeout=ready_timeout,
            )
        )  # fmt: skip
    return calls


def test_replicas_not_placeable_yet_are_asked_again_within_the_wait(
    tf: TaskForce, broker: BrokerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _provisions(tf, broker, tmp_path, monkeypatch, ready_timeout=3.0) >= 2


def test_without_a_wait_the_refusal_is_said_at_once(
    tf: TaskForce, broker: BrokerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _provisions(tf, broker, tmp_path, monkeypatch, ready_timeout=0.0) == 1
