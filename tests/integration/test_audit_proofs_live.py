"""Proofs over NATS request-reply on a real nats-server: a member asks the running audit
service for an inclusion and a consistency proof and verifies both with its own roster; an
unknown message is E_NOT_FOUND; junk is answered E_MALFORMED and the service goes on; the
broker keeps non-members out and members from listening on the proof subject; with no
service running the member is told so, without a traceback.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from livekit import publish_as
from tfkit import TaskForce

from tfshare import transport
from tfshare.audit.evidence import check_bundle
from tfshare.audit.logstore import AuditStore
from tfshare.audit.proofs import AnswerRefused, ErrorAnswer, decode_response
from tfshare.audit.service import AuditService, CheckpointPolicy, log_verifiers
from tfshare.broker import BrokerProcess, channel_subject, proof_subject
from tfshare.encoding import encode
from tfshare.errors import BrokerError
from tfshare.keyfile import KDF_PROFILES, seal_keyfile
from tfshare.seal import Sealed
from tfshare.workflows.audit_remote import request_consistency, request_inclusion
from tfshare.workflows.exchange import Credentials
from tfshare.workflows.live import Agency


def _now() -> int:
    return time.time_ns() // 1_000_000


def agency_of(tf: TaskForce, name: str, root: Path) -> Agency:
    """An agency as the CLI loads it: key file (with passphrase), roster, anchor, state."""
    root.mkdir(parents=True, exist_ok=True)
    passphrase = os.urandom(8).hex().encode()
    key = root / f"{name}.key"
    key.write_bytes(
        seal_keyfile(tf.ids[name], passphrase, limits=KDF_PROFILES["insecure-test"], rng=os.urandom)
    )
    (root / "tf.roster").write_bytes(tf.roster_bytes)
    (root / "tf.anchor").write_bytes(encode(tf.anchor))
    return Agency.load(
        Credentials(key, passphrase),
        roster_path=root / "tf.roster",
        anchor_path=root / "tf.anchor",
        state_dir=root / "state",
        registry_dir=root / "registry",
    )


@contextmanager
def running(make: Callable[[], AuditService]) -> Iterator[Callable[[], AuditService]]:
    """Run an audit service on its own thread and event loop (its SQLite connection lives
    there) while the test, on this thread, acts as a member; stop it cleanly after."""
    made: list[AuditService] = []
    started = threading.Event()
    control: dict[str, object] = {}

    async def main() -> None:
        stop = asyncio.Event()
        control["loop"], control["stop"] = asyncio.get_running_loop(), stop
        made.append(make())
        started.set()
        await made[0].run(stop)

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield lambda: made[0]
    finally:
        loop, stop = control["loop"], control["stop"]
        assert isinstance(loop, asyncio.AbstractEventLoop) and isinstance(stop, asyncio.Event)
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)
        assert not thread.is_alive()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def service_factory(tf: TaskForce, url: str, path: Path) -> Callable[[], AuditService]:
    return lambda: AuditService(
        identity=tf.ids["coord"],
        roster=tf.trusted(),
        roster_bytes=tf.roster_bytes,
        store=AuditStore(path),
        url=url,
        clock=_now,
        checkpoints=CheckpointPolicy(every=1, interval_s=0.2),
        fetch_timeout=0.2,
    )


def signed_size(path: Path) -> int:
    with AuditStore(path) as store:
        latest = store.latest_checkpoint()
    return 0 if latest is None else latest[0]


def _publish(tf: TaskForce, url: str, seq: int) -> Sealed:
    sealed = tf.seal("police", seq=seq, now_ms=_now(), rng_seed=os.urandom(8).hex())
    subject = channel_subject("nl-north", "alerts", "police")
    publish_as(tf, "police", url, subject, sealed.data, sealed.msg_id.hex())
    return sealed


async def _raw_request(tf: TaskForce, url: str, agency: str, data: bytes) -> bytes:
    conn = await transport.connect(
        url,
        nkey_seed=tf.ids[agency].nats_seed_encoded(),
        agency=agency,
        name="test",
        reconnect=False,
    )
    try:
        return await transport.request(conn, proof_subject("nl-north", agency), data, timeout=5)
    finally:
        await conn.close()


def test_a_member_gets_verified_inclusion_and_consistency_proofs(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    sent = [_publish(live_tf, broker.url, seq) for seq in (1, 2)]
    police = agency_of(live_tf, "police", tmp_path / "police")
    log = tmp_path / "audit.db"
    with running(service_factory(live_tf, broker.url, log)) as service:
        wait_for(lambda: signed_size(log) >= 3)  # the roster entry and both messages
        with AuditStore(log) as store:
            first_size, first_note = store.checkpoints()[0]

        # Inclusion: checked with police's own roster, written as the offline bundle.
        out = tmp_path / "alert.tfproof"
        checked = request_inclusion(police, sent[1].msg_id.hex(), url=broker.url, out=out)
        assert checked.entry.msg_id == sent[1].msg_id
        assert checked.entry.sender == "police" and checked.entry.channel == "alerts"
        assert checked.size >= 3 and not checked.self_asserted
        vkeys = [key.format() for key in log_verifiers(police.roster)]
        offline = check_bundle(
            out.read_bytes(), trusted_vkeys=vkeys, taskforce="nl-north", envelope=sent[1].data
        )
        assert offline.index == checked.index and offline.size == checked.size

        # Consistency from the first checkpoint police saw (held as a file) to the latest.
        held = tmp_path / "held.checkpoint"
        held.write_bytes(first_note)
        grown = request_consistency(police, known=held, url=broker.url)
        assert grown.old_size == first_size and grown.new_size >= 3
        assert grown.old_checkpoint == first_note
        again = request_consistency(police, first_size, new_size=grown.new_size, url=broker.url)
        assert again.new_root == grown.new_root

        # A message the log does not have: the service's specific code, no proof.
        with pytest.raises(AnswerRefused) as caught:
            request_inclusion(police, os.urandom(16).hex(), url=broker.url)
        assert caught.value.code == "E_NOT_FOUND"

        # Junk is answered E_MALFORMED, and the service keeps answering after it.
        junk = asyncio.run(_raw_request(live_tf, broker.url, "ngo", b"\xc1 not a request"))
        refusal = decode_response(junk).answer
        assert isinstance(refusal, ErrorAnswer) and refusal.code == "E_MALFORMED"
        assert request_inclusion(police, sent[0].msg_id.hex(), url=broker.url).index >= 1
        stats = service().stats
    assert stats.proofs_given == 4
    assert stats.proofs_refused == 2


async def _subscribe_as(tf: TaskForce, url: str, agency: str, subject: str) -> list[str]:
    conn = await transport.connect(
        url,
        nkey_seed=tf.ids[agency].nats_seed_encoded(),
        agency=agency,
        name="test",
        reconnect=False,
    )
    try:
        await conn.client.subscribe(subject)
        await conn.client.flush(timeout=2)
        deadline = time.monotonic() + 2
        while not conn.errors and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return conn.errors
    finally:
        await conn.close()


def test_without_a_service_non_members_and_eavesdroppers_get_nothing(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    police = agency_of(live_tf, "police", tmp_path / "police")
    # Nobody serves the subject: the member is told so at once, with what to do.
    started = time.monotonic()
    with pytest.raises(BrokerError) as caught:
        request_inclusion(police, os.urandom(16).hex(), url=broker.url, timeout=5)
    assert "no audit service is answering" in caught.value.message
    assert "audit serve" in caught.value.hint
    assert time.monotonic() - started < 4  # the broker's no-responders, not the timeout

    # An agency outside the roster has no NATS user: the broker refuses it at connect.
    outsider = agency_of(live_tf, "outsider", tmp_path / "outsider")
    with pytest.raises(transport.BrokerAuthFailed):
        request_inclusion(outsider, os.urandom(16).hex(), url=broker.url)

    # A member may not listen on the proof subjects (to read or answer others' requests).
    errors = asyncio.run(
        _subscribe_as(live_tf, broker.url, "police", proof_subject("nl-north", "ngo"))
    )
    assert any("permissions violation" in error.lower() for error in errors), errors


def test_a_reply_subject_outside_the_members_inboxes_gets_no_answer(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """police names, as the reply subject of a proof request, the audit bucket's checkpoint
    key and coord's subject on the channel stream (neither of which police may publish to).
    The service's ``allow_responses`` would let it publish there; it answers nothing: the
    checkpoint in the bucket is unchanged and no message appears on coord's subject."""
    _publish(live_tf, broker.url, 1)
    log = tmp_path / "audit.db"
    targets = ["$KV.tf_nl-north_audit.checkpoint", channel_subject("nl-north", "alerts", "coord")]

    async def attack() -> tuple[bytes | None, bytes | None, list[str]]:
        ids = live_tf.ids
        police = await transport.connect(
            broker.url, nkey_seed=ids["police"].nats_seed_encoded(), agency="police", name="x"
        )
        coord = await transport.connect(
            broker.url, nkey_seed=ids["coord"].nats_seed_encoded(), agency="coord", name="y"
        )
        arrived: list[str] = []

        async def seen(msg: object) -> None:
            arrived.append(str(getattr(msg, "subject", "")))

        try:
            await coord.client.subscribe(targets[1], cb=seen)
            before = await transport.get_checkpoint(coord, "nl-north")
            for target in targets:
                await police.client.publish(
                    proof_subject("nl-north", "police"), b"junk", reply=target
                )
            await police.client.flush()
            await asyncio.sleep(1.0)
            after = await transport.get_checkpoint(coord, "nl-north")
            return before, after, arrived
        finally:
            await police.close()
            await coord.close()

    with running(service_factory(live_tf, broker.url, log)):
        wait_for(lambda: signed_size(log) >= 2)
        # The service is subscribed once its first checkpoint is signed and announced.
        time.sleep(0.3)
        before, after, arrived = asyncio.run(attack())
    assert before is not None and before.startswith(b"tfshare/nl-north/audit\n")
    assert after == before
    assert arrived == []
