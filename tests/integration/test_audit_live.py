"""The audit service on a real nats-server: every envelope logged once, verified, checkpointed.

attacks.md's audit rows: a forged envelope is refused (not logged under the claimed sender);
a restart neither loses nor duplicates an entry; checkpoints are signed only over a log that
extends the previous one, and anyone holding the roster can verify them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from livekit import publish_as
from tfkit import TaskForce

from tfshare import transport
from tfshare.audit.logstore import AuditStore, verify_store
from tfshare.audit.note import checkpoint_origin, open_checkpoint
from tfshare.audit.service import AuditService, CheckpointPolicy, log_verifiers
from tfshare.broker import BrokerProcess, channel_subject


def _now() -> int:
    return time.time_ns() // 1_000_000


def _service(tf: TaskForce, url: str, path: Path, every: int = 3) -> AuditService:
    return AuditService(
        identity=tf.ids["coord"],
        roster=tf.trusted(),
        roster_bytes=tf.roster_bytes,
        store=AuditStore(path),
        url=url,
        clock=_now,
        checkpoints=CheckpointPolicy(every=every, interval_s=0.3),
        fetch_timeout=0.2,
    )


def _run(service: AuditService, until: object, timeout: float = 10.0) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        deadline = time.monotonic() + timeout
        while not until() and time.monotonic() < deadline:  # type: ignore[operator]
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    asyncio.run(main())


def _publish(tf: TaskForce, url: str, sender: str, seq: int, channel: str = "alerts") -> bytes:
    schema = "tf.tip_summary/1" if channel == "tips" else "tf.alert/1"
    sealed = tf.seal(
        sender, channel=channel, schema=schema, seq=seq, now_ms=_now(), rng_seed=f"{sender}{seq}"
    )
    subject = channel_subject("nl-north", channel, sender)
    publish_as(tf, sender, url, subject, sealed.data, sealed.msg_id.hex())
    return sealed.msg_id


def test_every_envelope_is_logged_once_and_a_forgery_not_at_all(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    sent = [_publish(live_tf, broker.url, "police", seq) for seq in range(1, 5)]
    sent.append(_publish(live_tf, broker.url, "ngo", 1, channel="tips"))
    forged = bytearray(live_tf.seal("police", seq=99, now_ms=_now(), rng_seed="forged").data)
    forged[-1] ^= 1  # the signature no longer verifies
    publish_as(
        live_tf,
        "police",
        broker.url,
        channel_subject("nl-north", "alerts", "police"),
        bytes(forged),
    )

    service = _service(live_tf, broker.url, tmp_path / "audit.db")
    # 1 roster entry + 5 messages; the forgery is refused
    _run(service, lambda: service.stats.appended == 6 and service.stats.refused == 1)
    assert service.stats.refused == 1
    store = AuditStore(tmp_path / "audit.db")
    assert store.size == 6
    logged = [store.entry(i) for i in range(store.size)]
    assert logged[0].entry_type == "roster"
    assert sorted(e.msg_id for e in logged[1:]) == sorted(sent)
    assert {e.sender for e in logged[1:]} == {"police", "ngo"}
    assert all(e.channel in ("alerts", "tips") for e in logged[1:])
    report = verify_store(
        tmp_path / "audit.db", log_verifiers(live_tf.trusted()), checkpoint_origin("nl-north")
    )
    assert report.entries == 6 and report.checkpoints >= 1

    # Restart: nothing logged twice, new messages appended, checkpoints stay consistent.
    later = [_publish(live_tf, broker.url, "police", seq) for seq in range(5, 7)]
    again = _service(live_tf, broker.url, tmp_path / "audit.db")
    _run(again, lambda: again.stats.appended == 2)
    store = AuditStore(tmp_path / "audit.db")
    assert store.size == 8
    assert {store.entry(i).msg_id for i in (6, 7)} == set(later)
    assert again.stats.duplicates == 1  # the roster version, already logged
    report = verify_store(
        tmp_path / "audit.db", log_verifiers(live_tf.trusted()), checkpoint_origin("nl-north")
    )
    assert report.entries == 8 and report.checkpoints >= 2
    latest = store.latest_checkpoint()
    assert latest is not None and latest[0] == 8


def test_a_redelivered_envelope_is_not_appended_twice(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    service = _service(live_tf, broker.url, tmp_path / "audit.db")
    sealed = live_tf.seal("police", now_ms=_now(), rng_seed="once")
    subject = channel_subject("nl-north", "alerts", "police")
    first = service.ingest([(sealed.data, subject)])
    second = service.ingest([(sealed.data, subject)])
    assert first == [0] and second == [None]
    assert service.stats.duplicates == 1


def test_checkpoints_reach_members_on_the_subject_and_in_the_bucket(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    received: list[bytes] = []

    async def watch_and_serve() -> bytes | None:
        police = live_tf.ids["police"]
        conn = await transport.connect(
            broker.url,
            nkey_seed=police.nats_seed_encoded(),
            agency="police",
            name="watcher",
            reconnect=False,
        )
        await transport.subscribe_checkpoints(conn, "nl-north", received.append)
        service = _service(live_tf, broker.url, tmp_path / "audit.db", every=1)
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        await asyncio.sleep(0.3)
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await task
        stored = await transport.get_checkpoint(conn, "nl-north")
        await conn.close()
        return stored

    stored = asyncio.run(watch_and_serve())
    assert received, "no checkpoint arrived on the subject"
    checkpoint, signers = open_checkpoint(
        received[-1], log_verifiers(live_tf.trusted()), origin=checkpoint_origin("nl-north")
    )
    assert checkpoint.size == 1  # the roster entry
    assert signers == (checkpoint_origin("nl-north"),)
    assert stored == received[-1]
