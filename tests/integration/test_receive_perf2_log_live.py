"""The agent's log of what it received, on a real nats-server, now that it binds one logger
per batch and builds a delivered message's fields only when info is written (issue 15,
receive overhead): at info every delivered message and every duplicate still has its line
with its ids; at warning none has."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from livekit import make_agent, publish_as, run_agents
from tfkit import TaskForce

from tfshare.broker import BrokerProcess, channel_subject
from tfshare.logconfig import configure


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    out = io.StringIO()
    yield out
    structlog.reset_defaults()


def events(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_at_info_each_delivered_message_and_duplicate_has_its_line(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path, lines: io.StringIO
) -> None:
    configure("info", json=True, stream=lines)
    subject = channel_subject("nl-north", "alerts", "police")
    sealed = [
        live_tf.seal("police", now_ms=now_ms(), seq=seq, rng_seed=os.urandom(8).hex())
        for seq in (1, 2)
    ]
    for s in sealed:
        publish_as(live_tf, "police", broker.url, subject, s.data, s.msg_id.hex())
    # The first again under another Nats-Msg-Id: past JetStream's dedup, a duplicate to us.
    publish_as(live_tf, "police", broker.url, subject, sealed[0].data, "again")
    agent = make_agent(live_tf, "ngo", broker.url, tmp_path)
    run_agents([agent], lambda: agent.stats.delivered == 2 and agent.stats.duplicates == 1)
    logged = events(lines)
    delivered = [e for e in logged if e["event"] == "envelope_delivered"]
    assert [(e["msg_id"], e["seq"], e["sender"], e["channel"]) for e in delivered] == [
        (s.msg_id.hex(), seq, "police", "alerts") for seq, s in enumerate(sealed, 1)
    ]
    assert all(e["level"] == "info" and e["schema"] == "tf.alert/1" for e in delivered)
    [duplicate] = [e for e in logged if e["event"] == "envelope_duplicate"]
    assert duplicate["msg_id"] == sealed[0].msg_id.hex() and duplicate["delivered"] == 1


def test_at_warning_a_delivered_message_writes_no_line(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path, lines: io.StringIO
) -> None:
    configure("warning", json=True, stream=lines)
    sealed = live_tf.seal("police", now_ms=now_ms(), seq=1, rng_seed=os.urandom(8).hex())
    subject = channel_subject("nl-north", "alerts", "police")
    publish_as(live_tf, "police", broker.url, subject, sealed.data, sealed.msg_id.hex())
    agent = make_agent(live_tf, "ngo", broker.url, tmp_path)
    run_agents([agent], lambda: agent.stats.delivered == 1)
    assert not [e for e in events(lines) if e["event"] == "envelope_delivered"]
