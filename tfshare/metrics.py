"""Health and Prometheus metrics of the agent and the audit service.

Owns: the metric names, their labels and help texts; the collectors that read the agent's
(``AgentStats``, ``AgentHealth``, the desk's status) and the audit service's counters at
scrape time; the store probe behind ``/healthz``; and the small HTTP endpoint serving
``/metrics`` and ``/healthz`` (loopback by default).

The endpoint runs on the service's own asyncio loop (aiohttp, already the web inbox's
server), not on prometheus_client's threaded server: a scrape then reads the agent's state
and its SQLite connection on the one thread that changes them (an SQLite connection belongs
to its thread; a second thread would see a half-updated batch), and the backlog, which needs
a round trip to the broker, is asked with an ``await`` before the numbers are written out.

What is exported, never more: counts, sizes, times, agency ids, the task force's name,
channel names and reject codes. No message content, no sender of a message, no key, no
passphrase, no broker reason text in a label (``/healthz``'s reasons are the agent's own
event names and broker errors, as ``agent status`` shows them).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tfshare.errors import RejectCode, UsageError
from tfshare.protocol import Outcome, Rejection

if TYPE_CHECKING:
    from tfshare.audit.service import AuditStats
    from tfshare.desk.service import Desk

# Below this much free space on the state directory's file system the store is reported
# unwritable: SQLite needs room for its journal before it can commit a batch.
MIN_FREE_BYTES: Final = 16 * 1024 * 1024
# How long the write probe waits for a lock the agent holds (held means writable).
PROBE_TIMEOUT_S: Final = 0.2


@dataclass
class Health:
    """What ``/healthz`` answers: ok, or the reasons it is not (short, no secrets)."""

    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reasons

    def body(self) -> bytes:
        status = "ok" if self.ok else "unhealthy"
        return json.dumps({"status": status, "reasons": self.reasons}).encode()


def store_unwritable(db_path: Path) -> str | None:
    """Why the SQLite database at ``db_path`` cannot take a write now, or None if it can:
    its directory writable, free space left, and a write transaction that can begin (a
    read-only file or file system fails it). Nothing is written."""
    directory = db_path.parent
    if not os.access(directory, os.W_OK):
        return f"the state directory {str(directory)!r} is not writable"
    try:
        stat = os.statvfs(directory)
    except OSError as exc:
        return f"the state directory {str(directory)!r} cannot be read: {exc.strerror}"
    free = stat.f_bavail * stat.f_frsize
    if free < MIN_FREE_BYTES:
        return f"the state directory's disk is full ({free // 1024} KiB free)"
    if not db_path.exists():
        return f"the state database {str(db_path)!r} is missing"
    try:
        db = sqlite3.connect(db_path, timeout=PROBE_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        return f"the state database cannot be opened: {exc}"
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return None  # someone is writing: it is writable
        return f"the state database cannot be written: {exc}"
    except sqlite3.Error as exc:
        return f"the state database cannot be written: {exc}"
    finally:
        db.close()
    return None


class RejectTally:
    """Rejections counted by code, from the agent's outcomes (``Agent.on_outcome``): the
    agent's own stats hold only the total. Envelopes for other agencies (E_NOT_RECIPIENT)
    are not rejections (the agent counts them as skipped) and are left out here too."""

    def __init__(self) -> None:
        self.by_code: Counter[tuple[str, bool]] = Counter()

    def observe(self, outcome: Outcome) -> None:
        if isinstance(outcome, Rejection) and outcome.code is not RejectCode.E_NOT_RECIPIENT:
            self.by_code[(outcome.code.value, outcome.verified)] += 1


def _gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def _counter(name: str, doc: str, value: float) -> Metric:
    return CounterMetricFamily(name, doc, value=value)


class AgentCollector(Collector):
    """The agent's numbers, read from its desk when scraped (on the agent's loop)."""

    def __init__(self, desk: Desk, rejects: RejectTally) -> None:
        self.desk = desk
        self.rejects = rejects

    def collect(self) -> Iterable[Metric]:
        status = self.desk.status()
        stats = self.desk.agent.stats
        yield _gauge(
            "tfshare_agent_info",
            "The agency this agent runs for (always 1).",
            1,
            {"agency": status.agency, "taskforce": status.taskforce},
        )
        received = CounterMetricFamily(
            "tfshare_agent_messages_received",
            "Envelopes the agent settled and acknowledged, by outcome.",
            labels=["outcome"],
        )
        for outcome, count in (
            ("delivered", stats.delivered),
            ("duplicate", stats.duplicates),
            ("rejected", stats.rejected),
            ("not_for_us", stats.skipped),
        ):
            received.add_metric([outcome], count)
        yield received
        rejected = CounterMetricFamily(
            "tfshare_agent_messages_rejected",
            "Envelopes refused (quarantined), by reject code; signed=false: the sender's "
            "signature did not verify (unsigned junk).",
            labels=["code", "signed"],
        )
        for (code, signed), count in sorted(self.rejects.by_code.items()):
            rejected.add_metric([code, "true" if signed else "false"], count)
        yield rejected
        yield _counter(
            "tfshare_agent_processing_failures",
            "Messages whose processing failed and was retried (quarantined after the last try).",
            stats.failed,
        )
        yield _counter(
            "tfshare_agent_messages_published",
            "Messages sent from the outbox and acknowledged by the broker.",
            stats.published,
        )
        yield _gauge(
            "tfshare_agent_connected", "1 while connected to the broker.", int(status.connected)
        )
        yield _counter(
            "tfshare_agent_reconnects",
            "Connections made again after the first one.",
            status.reconnects,
        )
        backlog = GaugeMetricFamily(
            "tfshare_agent_backlog_messages",
            "Messages waiting on the broker for this agency, by channel.",
            labels=["channel"],
        )
        for item in status.backlog:
            backlog.add_metric([item.channel], item.pending)
        yield backlog
        yield _gauge(
            "tfshare_agent_outbox_messages",
            "Sealed messages waiting in the outbox for the broker's acknowledgement.",
            status.outbox,
        )
        yield _gauge(
            "tfshare_agent_outbox_refused_messages",
            "Messages the broker refused, set aside in the outbox (see 'tfshare agent status').",
            status.outbox_refused,
        )
        yield _gauge("tfshare_agent_inbox_messages", "Messages in the inbox.", status.inbox)
        yield _gauge(
            "tfshare_agent_quarantine_entries", "Envelopes in the quarantine.", status.quarantine
        )
        yield _gauge(
            "tfshare_agent_roster_seq", "Sequence number of the roster in force.", status.roster_seq
        )
        last = self.desk.agent.health.last_stored_ms
        if last is not None:
            yield _gauge(
                "tfshare_agent_last_message_timestamp_seconds",
                "When the last message was stored (Unix time).",
                last / 1000,
            )


def agent_health(desk: Desk) -> Health:
    """Healthy: connected to the broker, and the state database can take a write."""
    health = Health()
    agent = desk.agent
    if not agent.health.connected:
        last = agent.health.errors[-1] if agent.health.errors else "no connection yet"
        health.reasons.append(f"not connected to the broker ({last})")
    problem = store_unwritable(desk.agency.store.path)
    if problem is not None:
        health.reasons.append(problem)
    return health


class AuditCollector(Collector):
    """The audit service's numbers: its counters, and its log's size and last checkpoint
    (read from the log file with a read-only connection of its own)."""

    def __init__(
        self,
        stats: AuditStats,
        log_path: Path,
        *,
        taskforce: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.stats = stats
        self.log_path = log_path
        self.taskforce = taskforce
        self.clock = clock

    def collect(self) -> Iterable[Metric]:
        yield _gauge("tfshare_audit_info", "The task force logged (always 1).", 1,
                     {"taskforce": self.taskforce})  # fmt: skip
        s = self.stats
        for name, value, doc in (
            ("appended", s.appended, "Entries appended to the log."),
            ("duplicates", s.duplicates, "Envelopes already in the log."),
            ("refused", s.refused, "Envelopes refused (junk included)."),
            ("junk", s.junk, "Envelopes refused before their signature verified."),
            ("equivocations", s.equivocations, "msg_ids used twice by their sender."),
            ("flagged", s.flagged, "Entries flagged for the coordinators."),
            ("checkpoints_signed", s.checkpoints, "Checkpoints signed by this service."),
            ("records_refused", s.records_refused, "Rosters and registry records refused."),
            ("proofs_given", s.proofs_given, "Proof requests answered."),
            ("proofs_refused", s.proofs_refused, "Proof requests answered with an error code."),
            ("proofs_limited", s.proofs_limited, "Proof requests over their member's rate."),
            ("store_failures", s.store_failures, "Writes of the log that failed and were retried."),
        ):
            yield _counter(f"tfshare_audit_{name}", doc, value)
        size, checkpoint_size, signed_ms = self._log_facts()
        yield _gauge("tfshare_audit_log_entries", "Entries in the log.", size)
        yield _gauge(
            "tfshare_audit_unsigned_entries",
            "Entries not yet covered by a signed checkpoint.",
            max(size - checkpoint_size, 0),
        )
        if signed_ms is not None:
            yield _gauge(
                "tfshare_audit_checkpoint_age_seconds",
                "Seconds since the latest checkpoint was signed.",
                max(self.clock() - signed_ms / 1000, 0.0),
            )

    def _log_facts(self) -> tuple[int, int, int | None]:
        """(entries, size of the latest checkpoint, when it was signed in ms)."""
        try:
            db = sqlite3.connect(f"file:{self.log_path}?mode=ro", uri=True, timeout=1.0)
        except sqlite3.Error:
            return 0, 0, None
        try:
            (size,) = db.execute("SELECT count(*) FROM entries").fetchone()
            row = db.execute(
                "SELECT size, signed_ms FROM checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
        except sqlite3.Error:
            return 0, 0, None
        finally:
            db.close()
        if row is None:
            return int(size), 0, None
        return int(size), int(row[0]), int(row[1])


def audit_health(log_path: Path) -> Health:
    """Healthy: the audit log can take a write."""
    problem = store_unwritable(log_path)
    return Health([problem] if problem is not None else [])


@dataclass
class MetricsEndpoint:
    """The running ``/metrics`` and ``/healthz`` endpoint."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def close(self) -> None:
        await self.runner.cleanup()


def registry_of(*collectors: Collector) -> CollectorRegistry:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    return registry


async def start(
    registry: CollectorRegistry,
    health: Callable[[], Health],
    *,
    port: int,
    host: str = "127.0.0.1",
    before_scrape: Callable[[], Awaitable[Any]] | None = None,
) -> MetricsEndpoint:
    """Serve ``/metrics`` (``registry``) and ``/healthz`` (200 or 503 with a JSON reason) in
    the running loop; ``port=0`` picks a free port. ``before_scrape`` is awaited before each
    scrape (the agent asks the broker for its backlog there)."""

    async def metrics(_request: web.Request) -> web.Response:
        if before_scrape is not None:
            await before_scrape()
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_request: web.Request) -> web.Response:
        answer = health()
        return web.Response(
            body=answer.body(),
            status=200 if answer.ok else 503,
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"the metrics endpoint cannot listen on {host} port {port}: {exc.strerror}",
            hint="choose another port with --metrics-port, or stop what uses this one",
        ) from None
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return MetricsEndpoint(runner, host, int(sock.getsockname()[1]))
