"""Proof requests on each member's own subject, on a real nats-server (issue 11, item 4).

The audit service's per-member rate limit once keyed on the request's reply subject, which
the requester chooses: ngo could name ``_INBOX_labour.x`` and spend labour's share. Now a
member publishes only on ``tf.<tf>.audit.proof.<itself>`` (the broker refuses the others),
the share spent is the one that subject names, and the answer goes only into that same
member's inbox: a spoofed inbox gets no answer and costs the victim nothing.
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
from tfshare.broker import BrokerProcess, inbox_prefix, proof_subject

# Floods a broker or times a failover: run alone, after the parallel run (make test), so
# that a busy neighbour cannot starve the broker or the service it measures.
pytestmark = pytest.mark.serial

BURST = 5
SPOOFED = 3 * BURST


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


def test_a_member_naming_another_members_inbox_gets_no_answer_and_spends_nothing(
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
        # Practically no refill: a share spent stays spent for the whole test.
        proof_limit=RateLimit(rate=1e-6, burst=BURST),
    )
    request = proofs.encode_request(proofs.inclusion_request("nl-north", index=0))
    stolen: list[bytes] = []  # answers that reached labour's spoofed inbox
    labour_kinds: list[str] = []
    forged_errors: list[str] = []

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        ngo = await _connect(live_tf, "ngo", broker.url)
        labour = await _connect(live_tf, "labour", broker.url)
        try:
            deadline = time.monotonic() + 15
            while service.store.latest_checkpoint() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            # The service answers proof requests (its subscriptions are up: a request sent
            # before would reach no one): police asks once, on its own subject.
            police = await _connect(live_tf, "police", broker.url)
            try:
                await until_answered(police, proof_subject("nl-north", "police"), request)
            finally:
                await police.close()

            async def on_stolen(msg: object) -> None:
                stolen.append(bytes(msg.data))  # type: ignore[attr-defined]

            # labour listens on the inbox ngo names (its own: only labour may read it).
            await labour.client.subscribe(f"{inbox_prefix('labour')}.spoofed.*", cb=on_stolen)
            await labour.client.flush()
            # ngo asks, on its own proof subject, with labour's inbox as the reply subject.
            for i in range(SPOOFED):
                await ngo.client.publish(
                    proof_subject("nl-north", "ngo"),
                    request,
                    reply=f"{inbox_prefix('labour')}.spoofed.{i}",
                )
            # ... and tries labour's proof subject itself: the broker refuses it.
            await ngo.client.publish(
                proof_subject("nl-north", "labour"), request, reply=f"{inbox_prefix('ngo')}.x"
            )
            await ngo.client.flush()
            # Every spoofed request refused (logged) before labour asks: on a busy machine
            # the service may take more than a second to go through them.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and (
                sum(e["event"] == "request_reply_refused" for e in events) < SPOOFED
            ):
                await asyncio.sleep(0.05)
            # ... and the broker's refusal of the other proof subject has come back.
            while time.monotonic() < deadline and not any(
                "permissions violation" in e.lower() for e in ngo.errors
            ):
                await asyncio.sleep(0.05)
            forged_errors.extend(ngo.errors)
            # labour's whole share is still there: BURST requests, each answered with a proof.
            for _ in range(BURST):
                data = await transport.request(
                    labour, proof_subject("nl-north", "labour"), request, timeout=5
                )
                answer = proofs.decode_response(data).answer
                labour_kinds.append(
                    answer.code if isinstance(answer, proofs.ErrorAnswer) else "proof"
                )
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=10)
            await ngo.close()
            await labour.close()

    with structlog.testing.capture_logs() as events:
        asyncio.run(main())

    assert stolen == []  # no answer reached the inbox ngo named
    refused = [e for e in events if e["event"] == "request_reply_refused"]
    assert len(refused) == SPOOFED
    assert labour_kinds == ["proof"] * BURST  # not one E_RATE_LIMITED: labour spent nothing
    assert E_RATE_LIMITED not in labour_kinds
    assert service.stats.proofs_limited == 0
    assert any("permissions violation" in e.lower() for e in forged_errors), forged_errors
