"""Witnesses on a real nats-server with the real audit service (issue 11, item 6).

The roster requires one witness. A proof from the broker is not evidence until another member
co-signed its checkpoint; once ngo has witnessed, police's bundle carries ngo's cosignature and
checks. ngo witnesses again after the log grew (a consistency proof from the service). Then a
thief of coord's log key publishes a forged checkpoint of the same size: ngo, which holds the
real one, and labour, which held nothing but sees ngo's published cosignature of the real one,
both detect the fork, refuse to co-sign and log ``log_fork_detected`` with both checkpoints.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from test_audit_proofs_live import (
    _publish,
    agency_of,
    running,
    service_factory,
    signed_size,
    wait_for,
)
from tfkit import TaskForce, build_taskforce

from tfshare import roster as R
from tfshare import transport
from tfshare.audit.evidence import check_evidence
from tfshare.audit.logstore import AuditStore
from tfshare.audit.note import Checkpoint, checkpoint_origin, sign_checkpoint
from tfshare.audit.service import IdentitySigner, log_verifiers
from tfshare.audit.witness import WitnessCode, WitnessError
from tfshare.broker import CHECKPOINT_KEY, BrokerProcess, audit_bucket
from tfshare.encoding import encode
from tfshare.errors import ExitCode
from tfshare.workflows.audit_remote import request_inclusion
from tfshare.workflows.witness import held_path, witness

ORIGIN = checkpoint_origin("nl-north")


@pytest.fixture(scope="module")
def live_tf() -> TaskForce:
    """The kit's task force at the real time, its roster requiring one witness."""
    now = time.time_ns() // 1_000_000
    tf = build_taskforce(now_ms=now)
    signed = R.sign(R.set_witness_threshold(tf.signed, 1, now_ms=now - 1_000), tf.ids["coord"])
    _, roster = R.decode_signed_roster(encode(signed))
    return TaskForce(ids=tf.ids, signed=signed, anchor=R.anchor_of(roster), now_ms=now)


async def _forge_checkpoint(tf: TaskForce, url: str, size: int) -> bytes:
    """What a thief of coord's key does: sign another tree of ``size`` and publish it."""
    forged = sign_checkpoint(
        Checkpoint(ORIGIN, size, os.urandom(32)), [IdentitySigner(tf.ids["coord"], ORIGIN)]
    )
    conn = await transport.connect(
        url, nkey_seed=tf.ids["coord"].nats_seed_encoded(), agency="coord", name="thief"
    )
    try:
        kv = await conn.js.key_value(audit_bucket("nl-north"))
        await kv.put(CHECKPOINT_KEY, forged)
    finally:
        await conn.close()
    return forged


def test_witnesses_make_evidence_trusted_and_catch_a_forged_checkpoint(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    police = agency_of(live_tf, "police", tmp_path / "police")
    ngo = agency_of(live_tf, "ngo", tmp_path / "ngo")
    labour = agency_of(live_tf, "labour", tmp_path / "labour")
    log = tmp_path / "audit.db"
    log_keys = [v.format() for v in log_verifiers(live_tf.trusted())]
    first = _publish(live_tf, broker.url, 1)
    with running(service_factory(live_tf, broker.url, log)):
        wait_for(lambda: signed_size(log) >= 2)  # the roster entry and the alert

        # No witness yet: the service's proof is sound, but not evidence under this roster.
        bare = tmp_path / "bare.tfproof"
        request_inclusion(police, first.msg_id.hex(), url=broker.url, out=bare)
        with pytest.raises(WitnessError) as unwitnessed:
            check_evidence(bare.read_bytes(), roster=police.roster, log_keys=log_keys)
        assert unwitnessed.value.witness_code is WitnessCode.E_WITNESS_THRESHOLD

        # ngo witnesses; police's next bundle carries the cosignature and checks.
        round_one = witness(ngo, url=broker.url)
        assert round_one.verdict == "first" and round_one.cosigned
        proof = tmp_path / "alert.tfproof"
        request_inclusion(police, first.msg_id.hex(), url=broker.url, out=proof)
        evidence = check_evidence(
            proof.read_bytes(), roster=police.roster, log_keys=log_keys, envelope=first.data
        )
        assert [w.agency for w in evidence.witnesses] == ["ngo"]

        # The roster entry's msg_id (SHA-256 of the roster file, first 16 bytes) is provable.
        roster_id = hashlib.sha256(live_tf.roster_bytes).digest()[:16]
        roster_proof = tmp_path / "roster.tfproof"
        request_inclusion(police, roster_id.hex(), url=broker.url, out=roster_proof)
        logged = check_evidence(roster_proof.read_bytes(), roster=police.roster, log_keys=log_keys)
        assert logged.checked.entry.entry_type == "roster"
        assert logged.checked.entry.env_sha256 == hashlib.sha256(live_tf.roster_bytes).digest()

        # The log grows; ngo co-signs the new checkpoint after a consistency proof.
        size_before = round_one.size
        _publish(live_tf, broker.url, 2)
        wait_for(lambda: signed_size(log) > size_before)
        round_two = witness(ngo, url=broker.url)
        assert round_two.verdict == "newer" and round_two.cosigned
        assert round_two.size > size_before
        with AuditStore(log) as store:
            latest_size, _ = store.checkpoints()[-1]
    held = held_path(ngo.store.path.parent).read_bytes()

    # The service stopped; a thief of coord's key shows another tree of the same size.
    forged = asyncio.run(_forge_checkpoint(live_tf, broker.url, latest_size))
    with capture_logs() as events, pytest.raises(WitnessError) as at_ngo:
        witness(ngo, url=broker.url)
    assert at_ngo.value.witness_code is WitnessCode.E_LOG_FORK
    assert at_ngo.value.exit_code == ExitCode.TRUST
    assert held_path(ngo.store.path.parent).read_bytes() == held  # kept as evidence
    forks = [e for e in events if e["event"] == "log_fork_detected"]
    assert len(forks) == 1
    assert forks[0]["held_checkpoint"] == held.decode()
    assert forks[0]["seen_checkpoint"] == forged.decode()

    # labour holds nothing: the forged note alone looks fine, but ngo's published
    # cosignature is of another tree of that size: a split view, refused.
    with capture_logs() as events, pytest.raises(WitnessError) as at_labour:
        witness(labour, url=broker.url)
    assert at_labour.value.witness_code is WitnessCode.E_LOG_FORK
    assert [e["event"] for e in events].count("log_fork_detected") == 1
    assert not held_path(labour.store.path.parent).exists()


def test_a_forged_checkpoint_of_another_size_than_a_peers_is_a_fork(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """Review finding F7: witnesses compared their checkpoints with each other's only at the
    same size. ngo co-signed the real log at one size; the log grew; a thief of coord's key
    then shows labour (which holds nothing) another tree of the new size. The audit service
    proves the real trees consistent, and the forged root is not the one it proves: labour
    refuses to co-sign and logs the fork, instead of witnessing the forgery."""
    ngo = agency_of(live_tf, "ngo", tmp_path / "ngo")
    labour = agency_of(live_tf, "labour", tmp_path / "labour")
    log = tmp_path / "audit.db"
    _publish(live_tf, broker.url, 1)
    with running(service_factory(live_tf, broker.url, log)):
        wait_for(lambda: signed_size(log) >= 2)
        early = witness(ngo, url=broker.url)
        assert early.cosigned
        _publish(live_tf, broker.url, 2)
        _publish(live_tf, broker.url, 3)
        wait_for(lambda: signed_size(log) >= early.size + 2)
        later = signed_size(log)
        forged = asyncio.run(_forge_checkpoint(live_tf, broker.url, later))
        with capture_logs() as events, pytest.raises(WitnessError) as at_labour:
            witness(labour, url=broker.url)
    assert at_labour.value.witness_code is WitnessCode.E_LOG_FORK
    [fork] = [e for e in events if e["event"] == "log_fork_detected"]
    assert fork["seen_checkpoint"] == forged.decode()
    assert not held_path(labour.store.path.parent).exists()
    published = asyncio.run(_cosignature_of(live_tf, broker.url, "labour"))
    assert published is None  # the forgery was never co-signed


async def _cosignature_of(tf: TaskForce, url: str, agency: str) -> bytes | None:
    conn = await transport.connect(
        url, nkey_seed=tf.ids["police"].nats_seed_encoded(), agency="police", name="reader"
    )
    try:
        return await transport.get_cosignature(conn, "nl-north", agency)
    finally:
        await conn.close()
