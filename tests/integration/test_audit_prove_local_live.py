"""``tfshare audit prove`` from the coordinator's own audit log, end to end: a real
nats-server, coord's audit service (``tfshare audit serve``, a subprocess) and the CLI.

- The roster entry is proved by its msg_id (the first 16 bytes of the SHA-256 of the roster
  file, AUDIT-LOG.md section 7) like any message, and the bundle checks offline.
- Under a roster that requires one witness, the local proof waits for the witnesses: before
  any member co-signed, ``audit prove`` exits 1 and writes nothing; once ngo ran one witness
  round (``tfshare audit witness``), the bundle is made against the checkpoint ngo co-signed,
  carries ngo's cosignature, and ``audit check`` counts ngo.
- ``audit serve --proof-rate 0`` (a service that would answer no proof) is a usage error.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from livekit import free_port, publish_as
from test_audit_cli import home, spawn, trust
from test_bad_input_live import Files, agency_files, failure, ok, tfshare
from test_live_cli import Background, wait_for
from tfkit import TaskForce, build_taskforce

from tfshare import roster as R
from tfshare.audit.logstore import AuditStore
from tfshare.broker import channel_subject
from tfshare.encoding import encode
from tfshare.errors import InputError
from tfshare.workflows.live import start_broker


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def witnessed_taskforce(threshold: int) -> TaskForce:
    """The kit's task force at the real time, its roster requiring ``threshold`` witnesses."""
    now = now_ms()
    tf = build_taskforce(now_ms=now)
    signed = R.sign(
        R.set_witness_threshold(tf.signed, threshold, now_ms=now - 1_000), tf.ids["coord"]
    )
    _, roster = R.decode_signed_roster(encode(signed))
    return TaskForce(ids=tf.ids, signed=signed, anchor=R.anchor_of(roster), now_ms=now)


@contextmanager
def audited(tf: TaskForce, root: Path) -> Iterator[tuple[str, Files, Background]]:
    """A nats-server for ``tf`` and coord's ``tfshare audit serve`` on it (signing a
    checkpoint after every entry); yields the broker's URL, coord's files and the service."""
    broker = start_broker(
        tf.trusted(), root / "broker", port=free_port(), roster_bytes=tf.roster_bytes
    )
    service: Background | None = None
    try:
        coord = agency_files(tf, "coord", root / "coord")
        service = spawn(coord, "audit", "audit", "serve", *coord.args(), "--server", broker.url,
                        "--every", "1", "--interval", "0.5")  # fmt: skip
        service.wait_stderr("consuming from")
        yield broker.url, coord, service
    finally:
        if service is not None:
            service.cleanup()
        broker.stop()


def covered(coord: Files, msg_id: bytes) -> bool:
    """Whether coord's audit log holds the entry ``msg_id`` under a signed checkpoint."""
    path = coord.state / "audit.db"
    if not path.is_file():
        return False
    try:
        with AuditStore(path) as store:
            found = [i for i, entry in store.find(msg_id) if entry.msg_id == msg_id]
            latest = store.latest_checkpoint()
    except InputError:  # the service is creating the file at this moment
        return False
    return bool(found) and latest is not None and latest[0] > found[0]


def prove(coord: Files, msg_id: str, out: Path, *extra: str) -> tuple[int, str]:
    """coord's local ``audit prove``: (exit code, stderr); on success, the path on stdout."""
    result = tfshare(home(coord), "audit", "prove", msg_id, "--out", out, *coord.args(), *extra)
    if result.returncode == 0:
        assert result.stdout == f"{out}\n"
    return result.returncode, result.stderr


@pytest.mark.slow
def test_local_prove_of_a_roster_entry_passes_audit_check(tmp_path: Path) -> None:
    """The roster entry's id (SHA-256 of the roster file, first 16 bytes) is proved from
    coord's own log (no broker needed for that under a threshold of 0) and checks offline
    as entry 0 of the log, a ``roster`` entry over those very bytes."""
    tf = build_taskforce(now_ms=now_ms())
    roster_sha = hashlib.sha256(tf.roster_bytes).digest()
    roster_id = roster_sha[:16]
    with audited(tf, tmp_path) as (_url, coord, service):
        assert (coord.root / "tf.roster").read_bytes() == tf.roster_bytes
        assert wait_for(lambda: covered(coord, roster_id), timeout=20), service.stderr()
        out = tmp_path / "roster.tfproof"
        code, stderr = prove(coord, roster_id.hex(), out)
        assert code == 0, stderr
        assert "Traceback" not in stderr
        assert "proof bundle against the signed checkpoint of size" in stderr

    court = tmp_path / "court"  # an offline checker: the bundle, the roster and the anchor
    checked = json.loads(ok(tfshare(court, "audit", "check", out, *trust(coord), "--json")).stdout)
    assert checked["ok"] is True and checked["self_asserted"] is False
    entry = checked["entry"]
    assert (entry["type"], entry["msg_id"]) == ("roster", roster_id.hex())
    assert entry["env_sha256"] == roster_sha.hex()
    assert entry["sender"] == "coord"  # the roster's coordinators
    shown = ok(tfshare(court, "audit", "check", out, *trust(coord)))
    assert re.search(rf" {roster_id.hex()} .* is entry 0 of the log\n$", shown.stdout), shown.stdout


@pytest.mark.slow
def test_local_prove_under_a_witness_threshold_waits_for_witnesses(tmp_path: Path) -> None:
    tf = witnessed_taskforce(1)
    sealed = tf.seal("police", seq=1, now_ms=now_ms(), rng_seed=os.urandom(8).hex())
    msg_id = sealed.msg_id.hex()
    out = tmp_path / "alert.tfproof"
    with audited(tf, tmp_path) as (url, coord, service):
        publish_as(tf, "police", url, channel_subject("nl-north", "alerts", "police"),
                   sealed.data, msg_id)  # fmt: skip
        assert wait_for(lambda: covered(coord, sealed.msg_id), timeout=20), service.stderr()

        # Signed by the log key, co-signed by nobody yet: not evidence under this roster.
        result = tfshare(home(coord), "audit", "prove", msg_id, "--out", out,
                         *coord.args(), "--server", url)  # fmt: skip
        error, hint = failure(result, 1)
        assert f"covering entry {msg_id} has the 1 witness cosignatures" in error
        assert "co-sign" in hint and "--from-broker" in hint
        assert not out.exists()

        # ngo witnesses once: it co-signs the latest checkpoint and publishes its cosignature.
        ngo = agency_files(tf, "ngo", tmp_path / "ngo")
        round_one = json.loads(ok(tfshare(home(ngo), "audit", "witness", *ngo.args(),
                                          "--server", url, "--json")).stdout)  # fmt: skip
        assert round_one["verdict"] == "first" and round_one["cosigned"] is True

        code, stderr = prove(coord, msg_id, out, "--server", url)
        assert code == 0, stderr
        # Against the checkpoint ngo co-signed (the service may have signed later ones).
        assert f"against the signed checkpoint of size {round_one['size']} written" in stderr

    envelope = tmp_path / "alert.tfenv"
    envelope.write_bytes(sealed.data)
    court = tmp_path / "court"
    checked = json.loads(ok(tfshare(court, "audit", "check", out, *trust(coord),
                                    "--envelope", envelope, "--json")).stdout)  # fmt: skip
    assert checked["witnesses"] == ["ngo"] and checked["witness_threshold"] == 1
    assert (checked["entry"]["msg_id"], checked["entry"]["sender"]) == (msg_id, "police")
    assert checked["envelope_checked"] is True
    shown = ok(tfshare(court, "audit", "check", out, *trust(coord)))
    assert "witnessed by ngo (the roster requires 1)" in shown.stderr


def test_audit_serve_refuses_a_proof_rate_that_answers_nothing(tmp_path: Path) -> None:
    """A rate of 0 (or a burst under 1) would answer every proof request E_RATE_LIMITED:
    refused before anything starts (no broker is needed, no audit log is created)."""
    tf = build_taskforce(now_ms=now_ms())
    coord = agency_files(tf, "coord", tmp_path / "coord")
    nowhere = f"nats://127.0.0.1:{free_port()}"
    for option, value in (("--proof-rate", "0"), ("--proof-burst", "0.5")):
        result = tfshare(home(coord), "audit", "serve", *coord.args(), "--server", nowhere,
                         option, value)  # fmt: skip
        error, hint = failure(result, 2)
        assert "answers nothing" in error, error
        assert "give a rate above 0 and a burst of at least 1" in hint
    assert not (coord.state / "audit.db").exists()
