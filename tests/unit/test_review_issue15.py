"""Adversarial review of issue 15 (epoch mode, key deliveries, key rotation): each test is
one finding, written to FAIL until the code (or PROTOCOL.md) is fixed. The names say what the
correct behaviour is; the docstrings say the attack and the fix expected.

Everything is real: keys, signatures, encryption, key files; randomness and clocks are fixed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from test_epoch_mode import (
    ALERT,
    ALERT_BODY,
    EK2,
    EK_OTHER,
    KM,
    S2,
    WRITER,
    deliver,
    delivered,
    epoch_taskforce,
    key,
    keyring,
    receiver,
    rejected,
    trusted,
)
from tfkit import NOW_MS, DeterministicRng, build_taskforce

from tfshare import roster as R
from tfshare.encoding import encode
from tfshare.envelope import MAX_SKEW_MS
from tfshare.errors import RejectCode, RosterRejected, TfshareError, TrustError
from tfshare.keyfile import KDF_PROFILES, MAX_RETIRED, open_keyfile, seal_keyfile
from tfshare.keys import Identity
from tfshare.protocol import Delivered, Receiver
from tfshare.replay import MemoryReplayStore
from tfshare.rotation import DAY_MS, MAX_GRACE_MS, make_rotation, read_rotation
from tfshare.seal import ReceivePolicy, claimed_header, seal
from tfshare.workflows import rosters as roster_workflow

REPO = Path(__file__).resolve().parents[2]
PASSPHRASE = b"review issue 15 passphrase"


def _apply_rotation(
    signed: R.SignedRoster,
    before: Identity,
    *,
    created_ms: int,
    sign: bool,
    enc: bool,
    seed: str,
    grace_ms: int = MAX_GRACE_MS,
) -> tuple[R.SignedRoster, Identity]:
    after = before.rotated(
        rng=DeterministicRng(seed), now_ms=created_ms, grace_ms=grace_ms, enc=enc, sign=sign
    )
    statement = make_rotation(before, after, created_ms=created_ms, grace_ms=grace_ms)
    verified = read_rotation(statement, R.decode_roster(signed.roster), now_ms=created_ms)
    rotated = R.apply_rotation(
        signed,
        agency=verified.agency_id,
        new_enc_pk=verified.new_enc_pk,
        enc_bind_sig=verified.enc_bind_sig,
        new_sign_pk=verified.new_sign_pk,
        created_ms=verified.created_ms,
        grace_ms=verified.grace_ms,
        now_ms=created_ms + 60_000,
    )
    return rotated, after


# ---------------------------------------------------------------------------------------------
# HIGH: a key manager that is no longer one plants the channel's next epoch


def test_removed_key_manager_cannot_plant_an_epoch_key_by_backdating() -> None:
    """The key manager agency is revoked ("retired", the ordinary removal) at S2. Ten minutes
    later it seals a tf.epoch-key/1 delivery dated S2 - 1 ms (before its revocation) for epoch
    99 of "alerts", with a key of its choosing. Checks 4b/4c let a retired key's messages
    dated before ``at_ms`` through for RETIRED_GRACE (3 days), 4e and 9d look only at the
    role, 9e only at the epoch number: today ngo accepts it, every sender then seals under
    epoch 99 (the highest started: the removed agency reads the channel), and the real key
    manager's next epoch (2) is refused as "older than held" -- the channel stays captured.

    Expected: a key delivery is accepted only from an ACTIVE key manager whose signing key is
    neither revoked nor retired NOW (9d): E_NOT_AUTHORIZED; the keyring unchanged."""
    tf = epoch_taskforce()
    after = R.sign(R.revoke(tf.signed, KM, reason="retired", now_ms=S2), tf.ids["coord"])
    box = receiver(tf, "ngo", keys=[key()], signed=after)
    planted = deliver(
        tf,
        roster=trusted(tf, after),
        now_ms=S2 - 1,
        seed="planted-by-removed-km",
        epoch=99,
        key_bytes=EK_OTHER,
        starts_ms=S2 - 1,
        reason="members",
    )
    outcome = box.receive(planted.data)
    assert not isinstance(outcome, Delivered), "a removed key manager planted epoch 99"
    rejected(outcome, RejectCode.E_NOT_AUTHORIZED)
    assert box.epochs.get("alerts", 99) is None


def test_rotated_away_key_manager_signing_key_cannot_plant_an_epoch_key() -> None:
    """The key manager rotated its signing key (keys rotate --sign; roster rotate applied):
    the old key's window closed at created_ms. Whoever holds the old key (its copy kept
    through the grace, a backup, a thief) seals a delivery dated before created_ms for epoch
    99: accepted today (4c: ts_ms <= not_after_ms and now <= not_after_ms + RETIRED_GRACE),
    with the consequences of the test above. PROTOCOL 6.4 already says a retired key "cannot
    vouch for new keys" (rotation statements); an epoch key is a new key too.

    Expected: E_NOT_AUTHORIZED (9d: the delivery's signing key must be valid now,
    ``now_ms <= not_after_ms``, not only at the claimed ts_ms)."""
    tf = epoch_taskforce()
    created = NOW_MS - 1_000_000
    rotated, _ = _apply_rotation(
        tf.signed, tf.ids[KM], created_ms=created, sign=True, enc=False, seed="km-sign-rotation"
    )
    rotated = R.sign(rotated, tf.ids["coord"])
    box = receiver(tf, "ngo", keys=[key()], signed=rotated)
    # tf.ids[KM] is the key manager's identity BEFORE the rotation: the old signing key.
    planted = deliver(
        tf,
        roster=trusted(tf, rotated),
        now_ms=created - 1,
        seed="planted-by-old-km-key",
        epoch=99,
        key_bytes=EK_OTHER,
        starts_ms=created - 1,
        reason="members",
    )
    outcome = box.receive(planted.data)
    assert not isinstance(outcome, Delivered), "a retired key manager key planted epoch 99"
    rejected(outcome, RejectCode.E_NOT_AUTHORIZED)
    assert box.epochs.get("alerts", 99) is None


# ---------------------------------------------------------------------------------------------
# HIGH/MEDIUM: after a removal, senders keep sealing under the epoch the removed member holds


def test_sender_does_not_seal_under_an_epoch_made_before_a_reader_was_removed() -> None:
    """ "alerts" is epoch-only; ngo held epoch 1 (started S1) and was revoked at S2. The
    writer has accepted the roster that removes ngo but the key manager's epoch 2 has not
    reached it (the key manager is slow, down, or behind in the stream). Today seal() goes
    on sealing under epoch 1 -- for as long as no new key arrives -- and ngo, removed, opens
    every such message with the key it kept. Issue 15 deliverable 3: "the removed agency ...
    cannot read anything sealed after the change".

    Expected: seal() refuses (TrustError, exit 6, "waiting for the key manager's new epoch")
    an epoch key older than a removal of one of the channel's readers (here: the revocation
    at_ms S2 is after epoch 1's starts_ms S1). Direct mode would do on a channel allowing it."""
    tf = epoch_taskforce(2)
    after = R.sign(R.revoke(tf.signed, "ngo", reason="retired", now_ms=S2), tf.ids["coord"])
    sealed = None
    with pytest.raises(TrustError):
        sealed = seal(
            identity=tf.ids[WRITER],
            roster=trusted(tf, after),
            channel="alerts",
            to=None,
            schema=ALERT,
            body=ALERT_BODY,
            seq=1,
            now_ms=NOW_MS,
            rng=DeterministicRng("after-removal"),
            epochs=keyring(key()),
        )
    assert sealed is None


# ---------------------------------------------------------------------------------------------
# MEDIUM: an epoch that "starts" in the future keeps everyone on the superseded one


def test_key_delivery_starting_after_it_was_sealed_is_e_epoch() -> None:
    """A delivery of epoch 2 sealed at NOW whose starts_ms is 30 days later (a key manager
    whose clock jumped, or one gone wrong). Today it is accepted: senders ignore epoch 2
    until then (``current`` takes the highest *started* epoch) and keep sealing under epoch 1,
    which a member removed in the meantime holds; receivers accept epoch 1 until 15 minutes
    after that future start (7d), whatever ts_ms. An epoch starts when it is made (8.6:
    "its starts_ms is when it was made"), before it is sealed.

    Expected (9e): ``starts_ms > hdr.ts_ms + MAX_SKEW`` is E_EPOCH, keyring unchanged."""
    tf = epoch_taskforce()
    box = receiver(tf, "ngo", keys=[key()])
    future = deliver(
        tf,
        seed="future-start",
        epoch=2,
        key_bytes=EK2,
        starts_ms=NOW_MS + 30 * DAY_MS,
        reason="members",
    )
    assert claimed_header(future.data).ts_ms + MAX_SKEW_MS < NOW_MS + 30 * DAY_MS
    outcome = box.receive(future.data)
    rejected(outcome, RejectCode.E_EPOCH)
    assert box.epochs.get("alerts", 2) is None


# ---------------------------------------------------------------------------------------------
# MEDIUM (availability): a signing-key rotation takes away the rotating agency's signature


def test_sender_signs_with_the_key_the_roster_lists_until_the_rotation_is_applied() -> None:
    """police ran ``keys rotate --sign``: its key file's newest signing key is not in the
    roster until the coordinators apply the statement. design15/PROTOCOL 8.7: "Signing uses
    the newest signing key the roster lists" (``Identity.signing_with_listed`` exists for
    it) -- but nothing calls it: seal() signs with the newest key held and refuses ("this key
    of 'police' is not in the roster"), so the agency cannot send a single message (nor a
    receipt) between ``keys rotate --sign`` and ``roster rotate``.

    Expected: sealed with the old (listed) key, and the receiver accepts it."""
    tf = build_taskforce()
    before = tf.ids["police"]
    after = before.rotated(
        rng=DeterministicRng("police-sign"), now_ms=NOW_MS - 60_000, grace_ms=DAY_MS, sign=True
    )
    sealed = seal(
        identity=after,
        roster=tf.trusted(),
        channel="alerts",
        to=None,
        schema=ALERT,
        body=ALERT_BODY,
        seq=1,
        now_ms=NOW_MS,
        rng=DeterministicRng("old-key-still-listed"),
    )
    assert claimed_header(sealed.data).sender_kid == before.kid_sig
    delivered(tf.receiver("ngo").receive(sealed.data))


def test_coordinator_rotating_its_signing_key_still_approves_the_roster_that_applies_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The only coordinator (1 of 1) rotates its signing key and applies its own statement.
    ``roster sign`` signs with the key file's newest key only (K1). Receivers trust the
    anchor in force (K0): step 3 of 7.3 finds no signature by a key of T, so the roster that
    applies the rotation is E_ROSTER_SIG everywhere -- the coordinator's vote disappeared, and
    a task force whose threshold equals its coordinators can never publish a roster again
    (only a new anchor by hand). The key file still holds K0 (grace).

    Expected: ``roster sign`` adds a signature with every signing key the key file holds
    that the roster lists for the agency (not revoked): the roster verifies against the old
    anchor, one agency counted once."""
    monkeypatch.setenv("TFSHARE_TEST", "1")  # the test key cost is on purpose
    tf = build_taskforce()
    created = NOW_MS - 1_000_000
    rotated, after = _apply_rotation(
        tf.signed, tf.ids["coord"], created_ms=created, sign=True, enc=False, seed="coord-sign"
    )
    roster_path = tmp_path / "nl-north.roster"
    roster_path.write_bytes(encode(rotated))
    key_path = tmp_path / "coord.key"
    key_path.write_bytes(
        seal_keyfile(after, PASSPHRASE, limits=KDF_PROFILES["insecure-test"], rng=os.urandom)
    )
    key_path.chmod(0o600)
    roster_workflow.sign(roster_path, key_path, lambda: PASSPHRASE)
    try:
        verified, _ = R.verify_roster(
            roster_path.read_bytes(), anchor=tf.anchor, state=None, now_ms=NOW_MS
        )
    except RosterRejected as exc:
        pytest.fail(f"the coordinator's own rotation locked it out: {exc.reject_code.value}")
    assert verified.seq == R.decode_roster(rotated.roster).seq


# ---------------------------------------------------------------------------------------------
# MEDIUM: retired secrets outlive their grace in a running agent's key file


def test_agent_destroys_retired_secrets_daily_as_protocol_8_7_says() -> None:
    """PROTOCOL 8.7 and design15: "an agent does so [rewrite the key file without the expired
    secret] at start and daily (with the key it derived at unlock)". ``destroy_expired``
    exists (workflows/keys.py) but nothing calls it, and the Agent keeps neither the key path
    nor the FileKey: an agent restarted after ``keys rotate`` (it must be, to use the new key)
    and left running past the grace keeps the old secret in memory and in the key file for
    as long as it runs. A key file copied then, with its passphrase, opens what was wrapped to
    the old key -- the very thing issue 15 item 6 bounds.

    Expected: the agent's periodic work (beside prune_epoch_keys) calls destroy_expired."""
    agent = (REPO / "tfshare" / "agent.py").read_text()
    live = (REPO / "tfshare" / "workflows" / "live.py").read_text()
    assert re.search(r"\bdestroy_expired\(", agent), "the agent never destroys expired secrets"
    built = live[live.index("agent = Agent(") :]
    built = built[: built.index("\n    )\n")]
    assert "destroy_expired=" in built, "the agent the CLI builds is given no key file to expire"


# ---------------------------------------------------------------------------------------------
# HIGH (interoperability): PROTOCOL.md 7.1 does not describe the roster the code writes


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start) : text.index(end)]


def test_protocol_7_1_describes_the_roster_elements_issue_15_added() -> None:
    """8.6 and 8.7 rely on ``epoch_policies`` and ``retired_enc_keys``, and 7.1's grammar
    (what an independent implementation decodes strictly, exact element count) still says
    ``members (1..1024)``, ``revoked (0..4096)`` and ends at witness_threshold: such an
    implementation refuses (E_ROSTER_MALFORMED) every roster after the first ``roster rotate``
    or epoch policy, and a roster of 1,025 members.

    Expected: 7.1 gives the two trailing elements (RetiredEncKey, EpochPolicy, their order
    and the drop-trailing-defaults rule) and the limits of tfshare/roster.py."""
    text = (REPO / "docs" / "PROTOCOL.md").read_text()
    grammar = _section(text, "### 7.1 Structures", "### 7.2")
    assert "retired_enc_keys" in grammar and "epoch_policies" in grammar
    assert "RetiredEncKey" in grammar and "EpochPolicy" in grammar
    assert "(1..1024)" not in grammar and "(0..4096)" not in grammar
    assert f"1..{R.MAX_MEMBERS}" in grammar.replace(",", "").replace("_", "")


def test_protocol_7_4_moves_the_encryption_key_window_only_when_the_key_changed() -> None:
    """A signing-key-only rotation (``keys rotate --sign``) leaves the roster's enc_key
    ``[pk, not_before_ms, ...]`` as it was (roster.apply_rotation: ``if new_enc``), but 7.4
    says unconditionally "the encryption key becomes [new_enc_pk, created_ms, 2^53 - 1]": an
    implementation that follows the text writes another roster (another roster_hash) for the
    same statement, and moves the window of a key that served since the card.

    Expected: 7.4 makes that bullet conditional ("if it changed", as the next one)."""
    tf = build_taskforce()
    created = NOW_MS - 1_000_000
    rotated, _ = _apply_rotation(
        tf.signed, tf.ids["police"], created_ms=created, sign=True, enc=False, seed="sign-only"
    )

    def enc_key(signed: R.SignedRoster) -> R.KeyValidity:
        return next(
            m.enc_key for m in R.decode_roster(signed.roster).members if m.agency_id == "police"
        )

    assert enc_key(rotated) == enc_key(tf.signed)  # the code: the window did not move
    text = (REPO / "docs" / "PROTOCOL.md").read_text()
    applying = _section(text, "Applying a rotation statement", "## 8. Envelope")
    bullet = next(b for b in applying.split("\n- ") if "the encryption key becomes" in b)
    assert re.search(r"\b(if|when)\b", bullet), f"unconditional in 7.4: {bullet!r}"


# ---------------------------------------------------------------------------------------------
# LOW (data loss): a key file with more retired secrets than a reader takes


def test_key_file_with_more_retired_secrets_than_readers_take_is_never_written() -> None:
    """``_SecretsV2.retired`` is decoded with ``max_length=MAX_RETIRED`` (256) but written
    without any bound: ``keys rotate --enc --sign`` every hour with the default 7-day grace
    (336 secrets kept), or daily with --grace 90d... and the key file written is one that
    ``open_keyfile`` refuses as "wrong passphrase, or the file was modified" -- the agency's
    only key file, unreadable.

    Expected: ``seal_keyfile`` (and so ``keys rotate``) refuses, with a TfshareError that
    says why, to write a key file it could not read back; or what it writes opens."""
    identity = build_taskforce().ids["police"]
    for i in range(MAX_RETIRED // 2 + 1):
        identity = identity.rotated(
            rng=DeterministicRng(f"rotation-{i}"),
            now_ms=NOW_MS + i * 3_600_000,
            grace_ms=90 * DAY_MS,
            enc=True,
            sign=True,
        )
    assert len(identity.retired_secrets()) > MAX_RETIRED
    try:
        data = seal_keyfile(
            identity, PASSPHRASE, limits=KDF_PROFILES["insecure-test"], rng=os.urandom
        )
    except TfshareError:
        return  # refused before anything was written: the file on disk is still readable
    reopened = open_keyfile(data, PASSPHRASE)
    assert reopened.enc_pk == identity.enc_pk


# ---------------------------------------------------------------------------------------------
# MEDIUM (silent loss): a wrap to this agency's own key that it does not hold is "not for us"


def test_wrap_to_an_own_key_not_held_is_e_wrap_not_silently_skipped() -> None:
    """police rotated its encryption key and the coordinators applied it, but the process
    receiving for police holds the identity of before: an agent started before ``keys rotate``
    (nothing reloads the key file), or one whose old secret was destroyed while senders still
    wrapped to it (the roster applied the rotation after its grace). labour's message is
    wrapped to the key the roster lists for police; today the outcome is E_NOT_RECIPIENT, which
    the agent counts as "skipped", logs at debug level, acknowledges and never quarantines:
    every direct message to police is lost without a trace until someone notices.

    Expected: a wrap whose kid the roster gives to this agency (``agency_of_enc_kid``) but
    that this identity does not hold is E_WRAP (quarantined, logged as a rejection); only a
    message with no wrap for this agency at all is E_NOT_RECIPIENT."""
    tf = build_taskforce()
    created = NOW_MS - 1_000_000
    rotated, after = _apply_rotation(
        tf.signed, tf.ids["police"], created_ms=created, enc=True, sign=False, seed="police-enc"
    )
    rotated = R.sign(rotated, tf.ids["coord"])
    roster, _ = R.verify_roster(encode(rotated), anchor=tf.anchor, state=None, now_ms=NOW_MS)
    sealed = seal(
        identity=tf.ids["labour"],
        roster=roster,
        channel="alerts",
        to=None,
        schema=ALERT,
        body=ALERT_BODY,
        seq=1,
        now_ms=NOW_MS,
        rng=DeterministicRng("to-the-new-key"),
    )
    assert roster.agency_of_enc_kid[after.kid_enc] == "police"
    stale = Receiver(
        identity=tf.ids["police"],  # the key file as it was before keys rotate
        roster=roster,
        replay=MemoryReplayStore(),
        schemas=tf.schemas,
        clock=lambda: NOW_MS,
        policy=ReceivePolicy(),
    )
    rejected(stale.receive(sealed.data), RejectCode.E_WRAP)
    # The identity after the rotation opens it (the wrap is really police's).
    delivered(
        Receiver(
            identity=after,
            roster=roster,
            replay=MemoryReplayStore(),
            schemas=tf.schemas,
            clock=lambda: NOW_MS,
            policy=ReceivePolicy(),
        ).receive(sealed.data)
    )


# ---------------------------------------------------------------------------------------------
# MEDIUM: two key managers split a channel


def test_roster_refuses_a_second_active_key_manager() -> None:
    """PROTOCOL 8.6: "A task force that uses epoch mode runs one key manager"; the key
    manager itself warns ("keymanager_not_alone") when the roster names another. But the
    roster takes any number, and every receiver accepts key deliveries from each (4e, 9d):
    two key managers both make epoch 1 of every channel with different keys, each reader
    keeps whichever delivery reached it first and refuses the other (E_EPOCH), and then the
    readers holding the other key refuse every message sealed under it (E_COMMIT) -- the
    channel is split until someone notices. Any agency given the role by mistake also gets
    to plant keys on every channel, including those it may not read.

    Expected: ``roster role AGENCY --roles member,key-manager`` is refused (TrustError, the
    roster unchanged) while another active member holds the role; 7.2 states the rule."""
    tf = epoch_taskforce()  # "keyman" is the key manager
    with pytest.raises(TrustError):
        R.set_roles(tf.signed, "labour", ["member", "key-manager"], now_ms=NOW_MS)
