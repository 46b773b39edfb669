"""The running agent destroys retired secrets once their grace period is over (issue 15 item 6,
PROTOCOL 8.7: "the agent does it at unlock and daily"): from memory and from its key file,
with the key kept at unlock (no passphrase), so a key file copied later opens nothing wrapped
to the retired key."""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from pathlib import Path

from agent_epochs_kit import epoch_taskforce, load_agency
from structlog.testing import capture_logs

from tfshare import roster as R
from tfshare.keyfile import KDF_PROFILES, seal_keyfile
from tfshare.rotation import make_rotation, read_rotation
from tfshare.workflows import live
from tfshare.workflows.keys import InsecureKeyCost, load_identity

DAY_MS = 24 * 3600 * 1000
PASSPHRASE = b"kit passphrase of ngo"  # agent_epochs_kit.load_agency's


def test_the_agent_destroys_retired_secrets_after_their_grace_in_memory_and_in_the_key_file(
    tmp_path: Path,
) -> None:
    now = time.time_ns() // 1_000_000
    tf = epoch_taskforce(now_ms=now)
    rotated = tf.ids["ngo"].rotated(rng=os.urandom, now_ms=now - 60_000, grace_ms=DAY_MS)
    # The coordinators applied the rotation: a secret whose key the roster in force still
    # lists is never destroyed (PROTOCOL 8.7; tests/unit/test_fixkeys_issue15.py).
    statement = make_rotation(tf.ids["ngo"], rotated, created_ms=now - 60_000, grace_ms=DAY_MS)
    checked = read_rotation(statement, R.decode_signed_roster(tf.roster_bytes)[1], now_ms=now)
    applied = R.apply_rotation(
        tf.signed, agency="ngo", new_enc_pk=checked.new_enc_pk,
        enc_bind_sig=checked.enc_bind_sig, new_sign_pk=checked.new_sign_pk,
        created_ms=checked.created_ms, grace_ms=checked.grace_ms, now_ms=now,
    )  # fmt: skip
    tf = dataclasses.replace(tf, signed=R.sign(applied, tf.ids["coord"]))
    key_path = tmp_path / "ngo.key"
    key_path.write_bytes(
        seal_keyfile(rotated, PASSPHRASE, limits=KDF_PROFILES["insecure-test"], rng=os.urandom)
    )
    agency = load_agency(tf, "ngo", tmp_path)
    assert len(agency.identity().enc_kids) == 2  # within its grace: kept
    clock = [now]
    agent = live.make_agent(agency, url="nats://127.0.0.1:1", clock=lambda: clock[0], witness=False)
    # Within the grace period nothing goes.
    assert not agent.destroy_expired_secrets(force=True)
    assert len(agent.identity.enc_kids) == 2

    clock[0] = now + 2 * DAY_MS
    assert not agent.destroy_expired_secrets()  # daily, not at every turn of the loop
    with capture_logs() as events:
        assert agent.destroy_expired_secrets(force=True)
    assert list(agent.identity.enc_kids) == [rotated.kid_enc]
    assert agent.receiver.identity is agent.identity
    assert agency.identity() is agent.identity  # the desk seals and reads with it too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyCost)
        # Opened now (when the secret is still within its grace by the clock): the file no
        # longer holds it.
        reopened = load_identity(key_path, PASSPHRASE, now_ms=now)
    assert reopened.enc_kids == (rotated.kid_enc,)
    assert [e["event"] for e in events] == ["expired_secrets_destroyed"]
    assert events[0]["enc_keys_held"] == 1
    agency.store.close()
