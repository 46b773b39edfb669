"""Health and Prometheus metrics (tfshare.metrics): what the collectors export from the
agent's and the audit service's counters, what they never export, the store probe behind
/healthz, and the HTTP endpoint itself (real aiohttp server on 127.0.0.1, real SQLite files,
a real audit log with real checkpoint signatures). The agent's desk is a stand-in giving the
real ``AgentStats``, ``AgentHealth`` and ``api.Status`` the collector reads; the live test
(tests/integration/test_metrics_live.py) runs the real agent on a real broker.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Final

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tfshare import metrics
from tfshare.agent import AgentHealth, AgentStats
from tfshare.audit.entry import LogEntry
from tfshare.audit.logstore import AuditStore
from tfshare.audit.note import Checkpoint, NoteSigner, checkpoint_origin, sign_checkpoint
from tfshare.audit.service import AuditStats
from tfshare.desk import api
from tfshare.errors import RejectCode, UsageError
from tfshare.protocol import Rejection

SECRET_SENDER: Final = "sender-who-must-not-show"
SECRET_REASON: Final = "reason text 7f3a that must not show"
T0: Final = 1_795_000_000_000


def status(**changes: Any) -> api.Status:
    fields: dict[str, Any] = {
        "agency": "ngo",
        "taskforce": "nl-north",
        "pid": 1,
        "started": "2026-12-06T15:00:00Z",
        "connected": True,
        "server": "nats://127.0.0.1:4222",
        "connected_since": "2026-12-06T15:00:00Z",
        "reconnects": 3,
        "roster_seq": 7,
        "backlog": [api.ChannelBacklog("alerts", 12), api.ChannelBacklog("receipts", 2)],
        "outbox": 4,
        "outbox_refused": 1,
        "inbox": 40,
        "quarantine": 5,
        "last_message": "2026-12-06T15:00:00Z",
        "last_sender": SECRET_SENDER,
        "delivered": 40,
        "rejected": 5,
        "duplicates": 2,
        "failed": 1,
        "published": 9,
        "witness": None,
        "errors": [f"2026-12-06T15:00:00Z broker_lost: {SECRET_REASON}"],
        "web": None,
    }
    fields.update(changes)
    return api.Status(**fields)


@dataclass
class StandInDesk:
    """The desk attributes the collector and the health check read; the agent's stats and
    health are the real dataclasses."""

    db_path: Path
    current: api.Status = field(default_factory=status)

    def __post_init__(self) -> None:
        stats = AgentStats(delivered=40, duplicates=2, rejected=5, unverified=3, skipped=6)
        stats.failed, stats.published = 1, 9
        health = AgentHealth(connected=True, reconnects=3, last_stored_ms=T0)
        health.last_sender = SECRET_SENDER
        self.agent = SimpleNamespace(stats=stats, health=health)
        self.agency = SimpleNamespace(store=SimpleNamespace(path=self.db_path))

    def status(self) -> api.Status:
        return self.current


def writable_db(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x INTEGER)")
    db.commit()
    db.close()
    return path


def scrape(registry: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry's exposition text, by (name, sorted labels)."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def rejection(code: RejectCode, *, verified: bool) -> Rejection:
    return Rejection(code, SECRET_REASON, bytes(32), sender=SECRET_SENDER, verified=verified)


# -- the agent's collector --------------------------------------------------------------------


def test_agent_metrics_export_outcomes_reject_codes_backlog_outbox_and_reconnects(
    tmp_path: Path,
) -> None:
    desk: Any = StandInDesk(writable_db(tmp_path / "state.db"))
    tally = metrics.RejectTally()
    for outcome in (
        rejection(RejectCode.E_STALE, verified=True),
        rejection(RejectCode.E_STALE, verified=True),
        rejection(RejectCode.E_BAD_SIG, verified=False),
        rejection(RejectCode.E_NOT_RECIPIENT, verified=True),  # not a rejection: skipped
    ):
        tally.observe(outcome)
    samples = scrape(metrics.registry_of(metrics.AgentCollector(desk, tally)))

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("tfshare_agent_info", agency="ngo", taskforce="nl-north") == 1
    assert value("tfshare_agent_messages_received_total", outcome="delivered") == 40
    assert value("tfshare_agent_messages_received_total", outcome="duplicate") == 2
    assert value("tfshare_agent_messages_received_total", outcome="rejected") == 5
    assert value("tfshare_agent_messages_received_total", outcome="not_for_us") == 6
    assert value("tfshare_agent_messages_rejected_total", code="E_STALE", signed="true") == 2
    assert value("tfshare_agent_messages_rejected_total", code="E_BAD_SIG", signed="false") == 1
    assert not any(
        name == "tfshare_agent_messages_rejected_total" and ("code", "E_NOT_RECIPIENT") in labels
        for name, labels in samples
    )
    assert value("tfshare_agent_processing_failures_total") == 1
    assert value("tfshare_agent_messages_published_total") == 9
    assert value("tfshare_agent_connected") == 1
    assert value("tfshare_agent_reconnects_total") == 3
    assert value("tfshare_agent_backlog_messages", channel="alerts") == 12
    assert value("tfshare_agent_backlog_messages", channel="receipts") == 2
    assert value("tfshare_agent_outbox_messages") == 4
    assert value("tfshare_agent_outbox_refused_messages") == 1
    assert value("tfshare_agent_inbox_messages") == 40
    assert value("tfshare_agent_quarantine_entries") == 5
    assert value("tfshare_agent_roster_seq") == 7
    assert value("tfshare_agent_last_message_timestamp_seconds") == T0 / 1000


def test_agent_metrics_hold_no_sender_reason_or_server_address(tmp_path: Path) -> None:
    """Labels and values only: no sender of a message, no reject reason, no broker text."""
    desk: Any = StandInDesk(writable_db(tmp_path / "state.db"))
    tally = metrics.RejectTally()
    tally.observe(rejection(RejectCode.E_SCHEMA, verified=True))
    text = generate_latest(metrics.registry_of(metrics.AgentCollector(desk, tally))).decode()
    assert SECRET_SENDER not in text
    assert SECRET_REASON not in text
    assert "nats://" not in text


def test_the_reject_tally_keeps_codes_apart_and_signed_apart_from_junk() -> None:
    tally = metrics.RejectTally()
    tally.observe(rejection(RejectCode.E_EQUIVOCATION, verified=True))
    tally.observe(rejection(RejectCode.E_EQUIVOCATION, verified=False))
    tally.observe(rejection(RejectCode.E_NOT_RECIPIENT, verified=True))
    assert dict(tally.by_code) == {("E_EQUIVOCATION", True): 1, ("E_EQUIVOCATION", False): 1}


# -- health -----------------------------------------------------------------------------------


def test_health_is_ok_when_connected_and_the_store_takes_a_write(tmp_path: Path) -> None:
    desk: Any = StandInDesk(writable_db(tmp_path / "state.db"))
    health = metrics.agent_health(desk)
    assert health.ok
    assert json.loads(health.body()) == {"status": "ok", "reasons": []}


def test_health_names_the_lost_broker_when_disconnected(tmp_path: Path) -> None:
    desk: Any = StandInDesk(writable_db(tmp_path / "state.db"))
    desk.agent.health.connected = False
    desk.agent.health.trouble("broker_unavailable", "connection refused", T0)
    health = metrics.agent_health(desk)
    assert not health.ok
    (reason,) = json.loads(health.body())["reasons"]
    assert reason.startswith("not connected to the broker")
    assert "broker_unavailable" in reason


def test_a_missing_or_damaged_state_database_is_unwritable(tmp_path: Path) -> None:
    assert "missing" in (metrics.store_unwritable(tmp_path / "state.db") or "")
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"this is not an SQLite database" * 200)
    assert "cannot be written" in (metrics.store_unwritable(damaged) or "")
    gone = tmp_path / "gone" / "state.db"
    assert metrics.store_unwritable(gone) is not None


def test_a_database_another_connection_is_writing_counts_as_writable(tmp_path: Path) -> None:
    """The agent holds its write lock during a batch: the probe must not call that a fault."""
    path = writable_db(tmp_path / "state.db")
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO t VALUES (1)")
        assert metrics.store_unwritable(path) is None
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_the_probe_writes_nothing(tmp_path: Path) -> None:
    path = writable_db(tmp_path / "state.db")
    before = path.read_bytes()
    assert metrics.store_unwritable(path) is None
    assert path.read_bytes() == before


# -- the audit service's collector ------------------------------------------------------------


def test_audit_metrics_give_the_log_size_unsigned_entries_and_checkpoint_age(
    tmp_path: Path,
) -> None:
    origin = checkpoint_origin("nl-north")
    signer = NoteSigner(origin, hashlib.sha256(b"metrics test key").digest())
    path = tmp_path / "audit.db"
    with AuditStore(path) as store:
        store.append([entry(i) for i in range(5)])
        note = sign_checkpoint(Checkpoint(origin, 5, store.root()), [signer])
        store.add_checkpoint(5, note, T0)
        store.append([entry(i) for i in range(5, 8)])
    stats = AuditStats(appended=8, refused=2, junk=1, checkpoints=1)
    collector = metrics.AuditCollector(
        stats, path, taskforce="nl-north", clock=lambda: T0 / 1000 + 90
    )
    samples = scrape(metrics.registry_of(collector))
    assert samples[("tfshare_audit_log_entries", ())] == 8
    assert samples[("tfshare_audit_unsigned_entries", ())] == 3
    assert samples[("tfshare_audit_checkpoint_age_seconds", ())] == 90
    assert samples[("tfshare_audit_appended_total", ())] == 8
    assert samples[("tfshare_audit_refused_total", ())] == 2
    assert samples[("tfshare_audit_checkpoints_signed_total", ())] == 1
    assert metrics.audit_health(path).ok


def test_an_audit_log_without_checkpoint_has_no_checkpoint_age(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditStore(path) as store:
        store.append([entry(0)])
    samples = scrape(
        metrics.registry_of(metrics.AuditCollector(AuditStats(), path, taskforce="nl-north"))
    )
    assert samples[("tfshare_audit_unsigned_entries", ())] == 1
    assert ("tfshare_audit_checkpoint_age_seconds", ()) not in samples


def entry(i: int) -> LogEntry:
    def digest(*parts: object) -> bytes:
        return hashlib.sha256(repr(parts).encode()).digest()

    return LogEntry(
        entry_type="message",
        msg_id=digest("msg", i)[:16],
        sender="police",
        sender_kid=digest("kid")[:8],
        taskforce="nl-north",
        channel="alerts",
        ts_ms=T0 + i,
        env_sha256=digest("env", i),
        refs=[],
        observed_ms=T0 + i + 100,
    )


# -- the endpoint -----------------------------------------------------------------------------


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def serve_and(
    check: Callable[[str], None], health: metrics.Health, *, before: Any = None
) -> metrics.MetricsEndpoint:
    """Start the endpoint on a loop, run ``check(url)`` in a thread (a blocking client)."""

    async def scenario() -> metrics.MetricsEndpoint:
        registry = metrics.registry_of(
            metrics.AuditCollector(AuditStats(appended=3), Path("/nonexistent"), taskforce="t")
        )
        endpoint = await metrics.start(registry, lambda: health, port=0, before_scrape=before)
        try:
            await asyncio.to_thread(check, endpoint.url)
        finally:
            await endpoint.close()
        return endpoint

    return asyncio.run(scenario())


def test_the_endpoint_serves_metrics_and_health_on_loopback() -> None:
    seen: list[tuple[int, str, bytes]] = []
    scrapes: list[int] = []

    async def before() -> None:
        scrapes.append(1)

    endpoint = serve_and(
        lambda url: seen.extend([get(f"{url}/metrics"), get(f"{url}/healthz")]),
        metrics.Health(),
        before=before,
    )
    assert endpoint.host == "127.0.0.1"
    (code, kind, body), (health_code, health_kind, health_body) = seen
    assert code == 200 and kind.startswith("text/plain")
    assert "tfshare_audit_appended_total 3.0" in body.decode()
    assert scrapes == [1]  # the backlog is asked before each scrape
    assert health_code == 200 and health_kind.startswith("application/json")
    assert json.loads(health_body) == {"status": "ok", "reasons": []}


def test_an_unhealthy_service_answers_503_with_its_reasons() -> None:
    seen: list[tuple[int, str, bytes]] = []
    serve_and(
        lambda url: seen.append(get(f"{url}/healthz")),
        metrics.Health(["not connected to the broker (no connection yet)"]),
    )
    ((code, _, body),) = seen
    assert code == 503
    assert json.loads(body) == {
        "status": "unhealthy",
        "reasons": ["not connected to the broker (no connection yet)"],
    }


def test_a_port_in_use_is_a_usage_error_naming_the_flag() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]

        async def scenario() -> None:
            await metrics.start(metrics.registry_of(), metrics.Health, port=port)

        with pytest.raises(UsageError) as caught:
            asyncio.run(scenario())
    assert "--metrics-port" in (caught.value.hint or "")
