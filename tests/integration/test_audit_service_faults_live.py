"""The audit service on a bad day, on a real nats-server: no spinning while its consumer is gone.

The consumer is deleted by the broker's administrator (as during a stream leader election, it
is simply not there); the service must wait longer after each failed attempt instead of
reconnecting hundreds of times a second. The pauses are observed through the service's
``pause`` (the real wait, recorded), never by timing.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import structlog
from tfkit import TaskForce

from tfshare import transport
from tfshare.audit.logstore import AuditStore
from tfshare.audit.service import AuditService, CheckpointPolicy
from tfshare.backoff import Backoff, sleep_or_stop
from tfshare.broker import BrokerProcess, audit_durable_name, stream_name
from tfshare.workflows.live import admin_seed


def _now() -> int:
    return time.time_ns() // 1_000_000


async def _delete_audit_consumer(broker: BrokerProcess) -> None:
    admin = await transport.connect(
        broker.url,
        nkey_seed=admin_seed(broker.config.parent),
        agency=None,
        name="test-admin",
        reconnect=False,
    )
    try:
        for channel in ("alerts", "tips"):  # the kit's channels: none left to read
            await admin.js.delete_consumer(
                stream_name("nl-north", channel), audit_durable_name("coord")
            )
    finally:
        await admin.close()


def test_a_missing_consumer_makes_the_service_wait_longer_each_time_not_spin(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    asyncio.run(_delete_audit_consumer(broker))
    pauses: list[float] = []
    attempts = 8

    async def pause(stop: asyncio.Event, seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) >= attempts:
            stop.set()
        # Waits for real (shortened: the schedule is what is checked, not the clock).
        await sleep_or_stop(stop, min(seconds, 0.05))

    service = AuditService(
        identity=live_tf.ids["coord"],
        roster=live_tf.trusted(),
        roster_bytes=live_tf.roster_bytes,
        store=AuditStore(tmp_path / "audit.db"),
        url=broker.url,
        clock=_now,
        checkpoints=CheckpointPolicy(every=3, interval_s=0.3),
        fetch_timeout=0.2,
        reconnect_backoff=Backoff(first=0.2, ceiling=5.0, jitter=0.0),
        pause=pause,
    )

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        try:
            # A bound for the test only: a service that spins never calls pause, so it
            # would never stop by itself.
            await asyncio.wait_for(task, timeout=20)
        finally:
            stop.set()

    with structlog.testing.capture_logs() as events:
        asyncio.run(main())
    connected = [e for e in events if e["event"] == "audit_connected"]
    lost = [e for e in events if e["event"] == "broker_lost"]
    # Every attempt failed before its first fetch, and each was followed by a longer pause.
    assert lost and all(e["fetched"] is False for e in lost)
    assert len(connected) == len(lost) == attempts
    assert pauses == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
