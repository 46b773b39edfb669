"""``tfshare roster publish`` against a real broker never rolls the roster bucket back.

A roster older than the one in the bucket, or another version of the same seq, is refused
(exit 6, E_ROSTER_ROLLBACK) and the bucket keeps what it had; a bucket value that does not
verify (junk, a forged high seq) is not overwritten unless ``--force``, which never replaces a
verified newer roster.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from tfkit import TaskForce, identity

from tfshare import roster as R
from tfshare import transport
from tfshare.broker import BrokerProcess
from tfshare.encoding import encode
from tfshare.keyfile import KDF_PROFILES, seal_keyfile

TFSHARE = Path(sys.executable).parent / "tfshare"
PASSPHRASE = "coordinator passphrase for the rollback tests"


def _now() -> int:
    return time.time_ns() // 1_000_000


def _coordinator_files(tf: TaskForce, directory: Path) -> list[str]:
    """coord's key file and passphrase file, as ``--key``/``--passphrase-file`` arguments."""
    key, secret = directory / "coord.key", directory / "coord.pass"
    if not key.exists():
        key.write_bytes(
            seal_keyfile(
                tf.ids["coord"],
                PASSPHRASE.encode(),
                limits=KDF_PROFILES["insecure-test"],
                rng=os.urandom,
            )
        )
        secret.write_text(PASSPHRASE + "\n")
    return ["--key", str(key), "--passphrase-file", str(secret)]


def _publish(
    tf: TaskForce, broker: BrokerProcess, tmp_path: Path, signed: R.SignedRoster, *extra: str
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"roster-{os.urandom(4).hex()}.tfroster"
    path.write_bytes(encode(signed))
    return subprocess.run(
        [
            str(TFSHARE),
            "roster",
            "publish",
            str(path),
            *_coordinator_files(tf, tmp_path),
            "--server",
            broker.url,
            *extra,
        ],
        cwd=tmp_path,
        env={
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(tmp_path),
            "TFSHARE_HOME": str(tmp_path / "home"),
            "TFSHARE_KDF": "insecure-test",
            "TFSHARE_TEST": "1",  # test keys: no warning about their insecure test cost
            "LC_ALL": "C.UTF-8",
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _with_coord(tf: TaskForce, url: str, data: bytes | None) -> bytes | None:
    """Put ``data`` into the roster bucket as coord (if given); return the bucket's value."""
    conn = await transport.connect(
        url,
        nkey_seed=tf.ids["coord"].nats_seed_encoded(),
        agency="coord",
        name="test-coord",
        reconnect=False,
    )
    try:
        if data is not None:
            await transport.put_roster(conn, "nl-north", data)
        return await transport.get_roster(conn, "nl-north")
    finally:
        await conn.close()


def _bucket(tf: TaskForce, broker: BrokerProcess) -> bytes | None:
    return asyncio.run(_with_coord(tf, broker.url, None))


def _put(tf: TaskForce, broker: BrokerProcess, data: bytes) -> None:
    asyncio.run(_with_coord(tf, broker.url, data))


def _revoking(tf: TaskForce, agency: str) -> R.SignedRoster:
    """seq 2: ``agency`` revoked (retired), signed by coord."""
    return R.sign(R.revoke(tf.signed, agency, reason="retired", now_ms=_now()), tf.ids["coord"])


def _refused(result: subprocess.CompletedProcess[str], code: str | None) -> str:
    """Exit 6, one error line (with ``code`` if given), one hint, no traceback; the error."""
    assert result.returncode == 6, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("tfshare: error: ")]
    hints = [line for line in result.stderr.splitlines() if line.startswith("tfshare: hint: ")]
    assert len(errors) == 1 and len(hints) == 1, result.stderr
    assert "Traceback" not in result.stderr
    if code is not None:
        assert code in errors[0], result.stderr
    assert "nothing was published" in hints[0], result.stderr
    return errors[0]


def test_publishing_an_older_roster_over_a_newer_is_refused_and_the_bucket_kept(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """seq 2 is published; publishing seq 1 again exits 6 with E_ROSTER_ROLLBACK and the
    bucket still holds seq 2's exact bytes."""
    newer = _revoking(live_tf, "labour")
    result = _publish(live_tf, broker, tmp_path, newer)
    assert result.returncode == 0, result.stderr
    assert "published roster seq 2" in result.stderr
    assert _bucket(live_tf, broker) == encode(newer)

    error = _refused(_publish(live_tf, broker, tmp_path, live_tf.signed), "E_ROSTER_ROLLBACK")
    assert "seq 2" in error and "seq 1" in error
    assert _bucket(live_tf, broker) == encode(newer)


def test_publishing_another_roster_of_the_same_seq_is_refused(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """Two different seq-2 rosters (one revokes labour, one police): the second is refused
    as a conflicting version, not published over the first."""
    first, second = _revoking(live_tf, "labour"), _revoking(live_tf, "police")
    assert R.decode_signed_roster(encode(second))[1].seq == 2
    assert _publish(live_tf, broker, tmp_path, first).returncode == 0
    _refused(_publish(live_tf, broker, tmp_path, second), "E_ROSTER_ROLLBACK")
    assert _bucket(live_tf, broker) == encode(first)


def test_publishing_the_same_roster_again_succeeds(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """The roster already in the bucket (the broker put seq 1 there) publishes again: exit 0."""
    assert _bucket(live_tf, broker) == live_tf.roster_bytes
    result = _publish(live_tf, broker, tmp_path, live_tf.signed)
    assert result.returncode == 0, result.stderr
    assert _bucket(live_tf, broker) == live_tf.roster_bytes


def test_force_never_replaces_a_verified_newer_roster(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """--force is for junk only: seq 1 over a verified seq 2 is still E_ROSTER_ROLLBACK."""
    newer = _revoking(live_tf, "labour")
    _put(live_tf, broker, encode(newer))
    _refused(_publish(live_tf, broker, tmp_path, live_tf.signed, "--force"), "E_ROSTER_ROLLBACK")
    assert _bucket(live_tf, broker) == encode(newer)


def _forged_high_seq(tf: TaskForce) -> bytes:
    """A roster of the same task force claiming seq 99, signed only by a non-member: it does
    not verify against the task force's coordinators."""
    impostor = identity("impostor")
    forged = R.new_roster(
        "nl-north", [impostor.card_body()], threshold=1, now_ms=_now(), valid_days=90
    )
    _, content = R.decode_signed_roster(encode(forged))
    high = R.SignedRoster(R.encode_roster(msgspec.structs.replace(content, seq=99)), [])
    return encode(R.sign(high, impostor))


@pytest.mark.parametrize("junk", ["not a roster", "forged seq 99"])
def test_an_unverifiable_bucket_value_is_replaced_only_with_force(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path, junk: str
) -> None:
    """Junk in the bucket (bytes that are no roster, or a forged seq 99) is not overwritten
    silently (exit 6, the hint naming --force) and cannot block a repair: --force replaces it."""
    data = b"\x93junk" if junk == "not a roster" else _forged_high_seq(live_tf)
    _put(live_tf, broker, data)
    error = _refused(_publish(live_tf, broker, tmp_path, live_tf.signed), None)
    assert "does not verify" in error
    assert _bucket(live_tf, broker) == data

    result = _publish(live_tf, broker, tmp_path, live_tf.signed, "--force")
    assert result.returncode == 0, result.stderr
    assert _bucket(live_tf, broker) == live_tf.roster_bytes


def test_a_lower_seq_in_the_bucket_is_replaced_without_force(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """Moving forward needs nothing more: seq 2 replaces the seq 1 the broker put there."""
    newer = _revoking(live_tf, "labour")
    result = _publish(live_tf, broker, tmp_path, newer)
    assert result.returncode == 0, result.stderr
    assert _bucket(live_tf, broker) == encode(newer)
