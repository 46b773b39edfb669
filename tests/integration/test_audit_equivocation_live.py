"""Equivocation on a real nats-server: one sender, one msg_id, two different envelopes.

police signs two envelopes under one msg_id (one for ngo, one for labour: each reader is shown
another message under the same id). The audit service logs both - the log records what the
broker carried - and flags the second: an ``equivocation`` event, an E_EQUIVOCATION FLAG in
``audit trace`` of that msg_id, and an entry in ``audit report``. An envelope the broker
carries twice (same bytes) is logged once and is not an equivocation.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import structlog
from livekit import publish_as
from tfkit import TaskForce

from tfshare.audit import report as reports
from tfshare.audit.logstore import AuditStore
from tfshare.audit.service import E_EQUIVOCATION, AuditService, CheckpointPolicy
from tfshare.broker import BrokerProcess, channel_subject
from tfshare.workflows import audit as audit_workflows
from tfshare.workflows.live import Agency


def _now() -> int:
    return time.time_ns() // 1_000_000


def test_two_envelopes_under_one_msg_id_are_logged_and_flagged(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    subject = channel_subject("nl-north", "alerts", "police")
    now = _now()
    to_ngo = live_tf.seal("police", to=["ngo", "coord"], seq=1, now_ms=now, rng_seed="equivocal")
    to_labour = live_tf.seal(
        "police", to=["labour", "coord"], seq=2, now_ms=now, rng_seed="equivocal"
    )
    honest = live_tf.seal("police", seq=3, now_ms=now, rng_seed="honest")
    assert to_ngo.msg_id == to_labour.msg_id and to_ngo.data != to_labour.data
    publish_as(live_tf, "police", broker.url, subject, to_ngo.data)
    publish_as(live_tf, "police", broker.url, subject, honest.data)
    publish_as(live_tf, "police", broker.url, subject, honest.data)  # carried twice
    publish_as(live_tf, "police", broker.url, subject, to_labour.data)

    path = tmp_path / "state" / "audit.db"
    service = AuditService(
        identity=live_tf.ids["coord"],
        roster=live_tf.trusted(),
        roster_bytes=live_tf.roster_bytes,
        store=AuditStore(path),
        url=broker.url,
        clock=_now,
        checkpoints=CheckpointPolicy(every=2, interval_s=0.3),
        fetch_timeout=0.2,
    )

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        deadline = time.monotonic() + 15
        while service.store.size < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    with structlog.testing.capture_logs() as events:
        asyncio.run(main())

    # roster, the envelope for ngo, the honest one (once), the envelope for labour
    entries = dict(service.store.entries())
    assert [e.msg_id for e in entries.values()][1:] == [
        to_ngo.msg_id, honest.msg_id, to_labour.msg_id
    ]  # fmt: skip
    flagged = [e for e in events if e["event"] == "equivocation"]
    assert len(flagged) == 1
    assert flagged[0]["code"] == E_EQUIVOCATION
    assert (flagged[0]["index"], flagged[0]["other_index"]) == (3, 1)
    assert flagged[0]["sender"] == "police"
    assert flagged[0]["msg_id"] == to_ngo.msg_id.hex()
    assert service.stats.equivocations == 1

    # audit trace: the FLAG lines come from Trace.flags (the CLI renders each one).
    # trace reads only the roster and, beside the state database, the audit log file.
    state = SimpleNamespace(path=path.parent / "state.db")
    agency = cast(Agency, SimpleNamespace(roster=live_tf.trusted(), store=state))
    traced = audit_workflows.trace(agency, to_ngo.msg_id.hex())
    assert traced.index == 1
    assert [(f.code, f.relation, f.index, f.parent_index) for f in traced.flags] == [
        (E_EQUIVOCATION, "equivocation", 1, 3)
    ]
    assert "entries 1 and 3" in traced.flags[0].why
    assert audit_workflows.trace(agency, honest.msg_id.hex()).flags == []

    # audit report: counted, listed with both entries, in JSON and Markdown.
    result = reports.report(service.store, since_ms=now - 60_000)
    assert [(e.sender, e.msg_id, e.indices) for e in result.equivocations] == [
        ("police", to_ngo.msg_id, (1, 3))
    ]
    as_json = reports.report_json(result)
    assert as_json["equivocations"] == [
        {"sender": "police", "msg_id": to_ngo.msg_id.hex(), "channels": ["alerts"],
         "entries": [1, 3]}
    ]  # fmt: skip
    markdown = reports.report_markdown(result)
    assert "## Equivocations: 1" in markdown
    assert f"| police | {to_ngo.msg_id.hex()} | alerts | 1, 3 |" in markdown
    # Outside the period: not in the report.
    assert reports.report(service.store, since_ms=now + 60_000).equivocations == []
