"""Review findings F1 and F2 through the real ``tfshare`` command (its own process; no broker
needed: the checks are offline).

A made-up one-entry log is signed with the coordinator's (stolen) log key alone. The checker
pinned its anchor when the roster required no witnesses; the current roster requires one,
and the checking agency's state accepted it. Whoever hands over the evidence also hands over
the old roster: with the agency's state that is refused (E_ROSTER_ROLLBACK, exit 6); offline
it checks, and the verdict says which roster it used and that a newer one may exist.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_bad_input_live import failure, ok, tfshare
from tfkit import TaskForce, build_taskforce

from tfshare import roster as R
from tfshare.audit.disclosure import disclose
from tfshare.audit.entry import LogEntry
from tfshare.audit.evidence import encode_bundle, make_bundle
from tfshare.audit.logstore import AuditStore
from tfshare.audit.note import Checkpoint, checkpoint_origin, sign_checkpoint
from tfshare.audit.service import IdentitySigner, log_verifiers
from tfshare.encoding import encode
from tfshare.seal import claimed_header
from tfshare.workflows.rosters import trusted_roster


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Case:
    old: Path  # the roster the anchor was pinned with (no witnesses)
    new: Path  # the current roster (one witness required)
    anchor: Path
    state: Path  # the checking agency's state: it accepted ``new``
    bundle: Path  # a log made up with the coordinator's key alone
    disclosure: Path  # ngo's disclosure of the message, carrying the old roster
    court: Path  # the checker's home


def _forged_bundle(tf: TaskForce, envelope: bytes, path: Path) -> bytes:
    hdr = claimed_header(envelope)
    entry = LogEntry(
        entry_type="message",
        msg_id=hdr.msg_id,
        sender=hdr.sender,
        sender_kid=hdr.sender_kid,
        taskforce=hdr.taskforce,
        channel=hdr.channel,
        ts_ms=hdr.ts_ms,
        env_sha256=hashlib.sha256(envelope).digest(),
        refs=[],
        observed_ms=hdr.ts_ms,
    )
    store = AuditStore(path)
    store.append([entry])
    origin = checkpoint_origin(tf.anchor.taskforce)
    note = sign_checkpoint(
        Checkpoint(origin, store.size, store.root()), [IdentitySigner(tf.ids["coord"], origin)]
    )
    vkeys = [v.format() for v in log_verifiers(tf.trusted())]
    return encode_bundle(make_bundle(store, 0, note, vkeys, tf.anchor.taskforce))


@pytest.fixture
def case(tmp_path: Path) -> Case:
    now = now_ms()
    old = build_taskforce(now_ms=now)
    signed = R.sign(R.set_witness_threshold(old.signed, 1, now_ms=now - 60_000), old.ids["coord"])
    paths = {name: tmp_path / name for name in ("old.tfroster", "new.tfroster", "tf.anchor")}
    paths["old.tfroster"].write_bytes(old.roster_bytes)
    paths["new.tfroster"].write_bytes(encode(signed))
    paths["tf.anchor"].write_bytes(encode(old.anchor))
    state = tmp_path / "state"
    trusted_roster(paths["new.tfroster"], paths["tf.anchor"], state, now_ms=now)
    message = old.seal("police")
    bundle = tmp_path / "forged.tfproof"
    bundle.write_bytes(_forged_bundle(old, message.data, tmp_path / "fake.db"))
    disclosure = tmp_path / "alert.tfdisclosure"
    disclosure.write_bytes(
        disclose(
            message.data,
            identity=old.ids["ngo"],
            roster=old.trusted(),
            roster_bytes=old.roster_bytes,
            now_ms=old.now_ms,
        )
    )
    return Case(
        paths["old.tfroster"],
        paths["new.tfroster"],
        paths["tf.anchor"],
        state,
        bundle,
        disclosure,
        tmp_path / "court",
    )


def test_audit_check_with_the_agency_state_refuses_the_older_roster_handed_over(
    case: Case,
) -> None:
    """Repro a3 at the command line: before the fix the old roster checked (exit 0)."""
    args = ("--roster", case.old, "--anchor", case.anchor, "--state", case.state)
    error, hint = failure(tfshare(case.court, "audit", "check", case.bundle, *args), 6)
    assert error.startswith("E_ROSTER_ROLLBACK: "), error
    assert "current roster" in hint, hint


def test_audit_check_with_the_agency_state_and_the_current_roster_needs_its_witnesses(
    case: Case,
) -> None:
    """The current roster given (and accepted by the state): its witness threshold refuses
    the log signed with one key."""
    args = ("--roster", case.new, "--anchor", case.anchor, "--state", case.state)
    error, _ = failure(tfshare(case.court, "audit", "check", case.bundle, *args), 6)
    assert error.startswith("E_WITNESS_THRESHOLD: "), error


def test_offline_audit_check_names_the_roster_used_and_warns_a_newer_may_exist(
    case: Case,
) -> None:
    args = ("--roster", case.old, "--anchor", case.anchor)
    shown = ok(tfshare(case.court, "audit", "check", case.bundle, *args))
    assert "judged under roster seq" in shown.stderr, shown.stderr
    assert "a newer roster may have revoked keys" in shown.stderr, shown.stderr
    verdict = json.loads(
        ok(tfshare(case.court, "audit", "check", case.bundle, *args, "--json")).stdout
    )
    assert verdict["roster"]["source"] == "given"
    assert verdict["roster"]["rollback_checked"] is False
    assert isinstance(verdict["roster"]["seq"], int) and verdict["roster"]["issued"]
    assert not (case.court / "state").exists()  # offline: nothing written


def test_check_disclosure_with_the_anchor_alone_is_exit_6_with_its_hint(case: Case) -> None:
    """Repro a1 at the command line: before the fix it printed the message (exit 0)."""
    result = tfshare(
        case.court, "audit", "check-disclosure", case.disclosure, "--anchor", case.anchor
    )
    error, hint = failure(result, 6)
    assert "no current roster" in error, error
    assert "give --roster with the task force's current roster" in hint, hint


def test_check_disclosure_with_the_agency_state_refuses_an_older_roster(case: Case) -> None:
    args = ("--anchor", case.anchor, "--roster", case.old, "--state", case.state)
    error, _ = failure(tfshare(case.court, "audit", "check-disclosure", case.disclosure, *args), 6)
    assert error.startswith("E_ROSTER_ROLLBACK: "), error
