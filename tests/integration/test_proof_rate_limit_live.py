"""Proof requests under a per-member rate limit, on a real nats-server.

ngo floods the audit service with proof requests (bounded: a fixed number, sent without
waiting). Over its share it gets E_RATE_LIMITED answers; labour's request, meanwhile, is
answered with a proof, and police's alerts sent during the flood are all logged.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import structlog
from livekit import until_answered
from tfkit import TaskForce

from tfshare import transport
from tfshare.audit import proofs
from tfshare.audit.logstore import AuditStore
from tfshare.audit.service import E_RATE_LIMITED, AuditService, CheckpointPolicy, RateLimit
from tfshare.broker import BrokerProcess, channel_subject, inbox_prefix, proof_subject

# Floods a broker or times a failover: run alone, after the parallel run (make test), so
# that a busy neighbour cannot starve the broker or the service it measures.
pytestmark = pytest.mark.serial

FLOOD = 2000


def _now() -> int:
    return time.time_ns() // 1_000_000


async def _connect(tf: TaskForce, agency: str, url: str) -> transport.Connection:
    return await transport.connect(
        url,
        nkey_seed=tf.ids[agency].nats_seed_encoded(),
        agency=agency,
        name=f"test-{agency}",
        reconnect=False,
    )


def test_a_member_flooding_proof_requests_is_limited_and_the_others_are_served(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    service = AuditService(
        identity=live_tf.ids["coord"],
        roster=live_tf.trusted(),
        roster_bytes=live_tf.roster_bytes,
        store=AuditStore(tmp_path / "audit.db"),
        url=broker.url,
        clock=_now,
        checkpoints=CheckpointPolicy(every=1, interval_s=0.2),
        fetch_timeout=0.1,
        proof_limit=RateLimit(rate=20, burst=40),
        junk_report_s=0,
    )
    request = proofs.encode_request(proofs.inclusion_request("nl-north", index=0))
    answers: dict[str, int] = {}
    labour_answer: list[bytes] = []
    alerts = [live_tf.seal("police", seq=s, now_ms=_now(), rng_seed=f"flood{s}") for s in range(5)]

    async def flood(conn: transport.Connection) -> None:
        inbox = f"{inbox_prefix('ngo')}.flood"

        async def on_answer(msg: object) -> None:
            data = bytes(msg.data)  # type: ignore[attr-defined]
            answer = proofs.decode_response(data).answer
            kind = answer.code if isinstance(answer, proofs.ErrorAnswer) else "proof"
            answers[kind] = answers.get(kind, 0) + 1

        await conn.client.subscribe(f"{inbox}.*", cb=on_answer)
        subject = proof_subject("nl-north", "ngo")  # its own: the only one it may use
        for i in range(FLOOD):  # a reply subject per request, as clients make them
            await conn.client.publish(subject, request, reply=f"{inbox}.{i}")
        await conn.client.flush()

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        ngo = await _connect(live_tf, "ngo", broker.url)
        labour = await _connect(live_tf, "labour", broker.url)
        police = await _connect(live_tf, "police", broker.url)
        try:
            # The service is up and has signed its first checkpoint (the roster entry).
            deadline = time.monotonic() + 15
            while service.store.latest_checkpoint() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            # ... and answers proof requests (none of the flood may go to no one).
            await until_answered(police, proof_subject("nl-north", "police"), request)
            flooding = asyncio.create_task(flood(ngo))
            for sealed in alerts:  # the log must keep growing during the flood
                await transport.publish(
                    police, channel_subject("nl-north", "alerts", "police"), sealed.data,
                    msg_id=sealed.msg_id.hex(), timeout=5,
                )  # fmt: skip
            labour_answer.append(
                await transport.request(
                    labour, proof_subject("nl-north", "labour"), request, timeout=10
                )
            )
            await flooding
            while (
                sum(answers.values()) < FLOOD or service.store.size < 1 + len(alerts)
            ) and time.monotonic() < deadline + 30:
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=10)
            for conn in (ngo, labour, police):
                await conn.close()

    with structlog.testing.capture_logs() as events:
        asyncio.run(main())

    # labour got a proof, not ngo's refusal.
    labour_got = proofs.decode_response(labour_answer[0]).answer
    assert isinstance(labour_got, proofs.InclusionAnswer)
    # ngo: every request answered; beyond its burst (and what refilled meanwhile), limited.
    assert sum(answers.values()) == FLOOD
    assert answers.get(E_RATE_LIMITED, 0) > FLOOD // 2
    assert 40 <= answers.get("proof", 0) < FLOOD // 2
    assert service.stats.proofs_limited == answers[E_RATE_LIMITED]
    # Every alert sent during the flood is in the log.
    logged = {entry.msg_id for _, entry in service.store.entries()}
    assert {sealed.msg_id for sealed in alerts} <= logged
    # Counted in one event per interval, never one line per refused request.
    limited = [e for e in events if e["event"] == "audit_proofs_limited"]
    assert limited and set().union(*(e["by_agency"] for e in limited)) == {"ngo"}
    assert sum(e["count"] for e in limited) == service.stats.proofs_limited
