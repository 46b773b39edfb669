"""Review findings on the evidence checks (issue 11, items 6 and 7), as regression tests.

F1: check-disclosure took the roster inside the disclosure as the latest whenever its seq
    reached the anchor's, so a thief with a key revoked as compromised since could forge a
    disclosure accepted with the anchor alone.
F2: audit check verified the --roster given against the anchor alone, so whoever hands over
    the evidence could give a roster from before witnesses were required.
F3: one member publishing a bad cosignature line in the witness bucket made every witnessed
    evidence bundle fail (E_WITNESS_BAD_SIG).
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from structlog.testing import capture_logs
from tfkit import NOW_MS, TaskForce, build_taskforce
from witnesskit import TASKFORCE, Log, cosigned, entry_for, open_log, taskforce, with_witnesses

from tfshare import roster as R
from tfshare.audit.disclosure import DisclosureError, check_disclosure, disclose
from tfshare.audit.evidence import check_evidence
from tfshare.audit.note import format_note_line
from tfshare.audit.service import log_verifiers
from tfshare.audit.witness import (
    WitnessError,
    cosign,
    cosigner_key_id,
    merge_witnessed,
    require_witnesses,
    witness_name,
    witness_note,
)
from tfshare.encoding import encode
from tfshare.errors import ExitCode, InputError, RosterRejected, TrustError
from tfshare.roster import TrustedRoster
from tfshare.workflows import audit
from tfshare.workflows.audit_remote import _witnessed_size
from tfshare.workflows.rosters import trusted_roster

# --- F1: check-disclosure needs the current roster ---------------------------------------------

REVOKED_AT = NOW_MS + 3_600_000
TF1 = taskforce(threshold=1)
STOLEN = TF1.seal("police")  # signed with police's key, stolen and since revoked


def _revoked(tf: TaskForce) -> bytes:
    signed = R.sign(
        R.revoke(tf.signed, "police", reason="compromised", now_ms=REVOKED_AT), tf.ids["coord"]
    )
    return encode(signed)


def _disclosed_by(agency: str) -> bytes:
    return disclose(
        STOLEN.data,
        identity=TF1.ids[agency],
        roster=TF1.trusted(),
        roster_bytes=TF1.roster_bytes,
        now_ms=TF1.now_ms,
    )


@pytest.mark.parametrize("discloser", ["ngo", "police"])
def test_a_disclosure_with_the_anchor_alone_is_refused_even_when_its_roster_is_the_anchors(
    discloser: str,
) -> None:
    """Repro a1: the disclosure's roster seq equals the anchor's min_seq; it used to be
    taken as the latest roster and the stolen key's forgery was accepted."""
    assert R.decode_signed_roster(TF1.roster_bytes)[1].seq == TF1.anchor.min_seq
    with pytest.raises(DisclosureError) as refused:
        check_disclosure(_disclosed_by(discloser), anchor=TF1.anchor, schemas=TF1.schemas)
    assert refused.value.code == "E_DISCLOSURE_ROSTER"
    assert refused.value.exit_code == ExitCode.TRUST
    assert "give --roster with the task force's current roster" in (refused.value.hint or "")


def _files(tmp_path: Path, tf: TaskForce, roster: bytes, name: str) -> tuple[Path, Path]:
    (tmp_path / f"{name}.tfroster").write_bytes(roster)
    (tmp_path / "tf.anchor").write_bytes(encode(tf.anchor))
    return tmp_path / f"{name}.tfroster", tmp_path / "tf.anchor"


def _agency_trusting(
    tmp_path: Path, tf: TaskForce, roster: bytes, now_ms: int
) -> audit.CheckerAgency:
    """An agency whose state accepted ``roster`` (as its commands persist it)."""
    roster_path, anchor_path = _files(tmp_path, tf, roster, "agency")
    state = tmp_path / "state"
    trusted_roster(roster_path, anchor_path, state, now_ms=now_ms)
    return audit.CheckerAgency(state_dir=state, roster_path=roster_path, anchor_path=anchor_path)


def test_check_disclosure_file_without_roster_or_agency_is_a_trust_error(tmp_path: Path) -> None:
    (tmp_path / "d.tfdisclosure").write_bytes(_disclosed_by("police"))
    _, anchor = _files(tmp_path, TF1, TF1.roster_bytes, "given")
    with pytest.raises(TrustError) as refused:
        audit.check_disclosure_file(tmp_path / "d.tfdisclosure", anchor, TF1.schemas)
    assert refused.value.exit_code == ExitCode.TRUST
    assert "--roster" in (refused.value.hint or "")


@pytest.mark.parametrize(
    ("discloser", "code"), [("police", "E_DISCLOSURE_SIG"), ("ngo", "E_REVOKED")]
)
def test_check_disclosure_file_uses_the_agency_s_own_newer_roster_and_its_revocation(
    tmp_path: Path, discloser: str, code: str
) -> None:
    """No --roster given: the checking agency's roster (seq 3, police revoked) is used, not
    the disclosure's (seq 2)."""
    now = REVOKED_AT + 60_000
    agency = _agency_trusting(tmp_path, TF1, _revoked(TF1), now)
    (tmp_path / "d.tfdisclosure").write_bytes(_disclosed_by(discloser))
    with pytest.raises(DisclosureError) as refused:
        audit.check_disclosure_file(
            tmp_path / "d.tfdisclosure", None, TF1.schemas, agency=agency, now_ms=now
        )
    assert refused.value.code == code


def test_check_disclosure_file_refuses_an_older_roster_than_the_agency_trusts(
    tmp_path: Path,
) -> None:
    now = REVOKED_AT + 60_000
    agency = _agency_trusting(tmp_path, TF1, _revoked(TF1), now)
    given, _ = _files(tmp_path, TF1, TF1.roster_bytes, "given")
    (tmp_path / "d.tfdisclosure").write_bytes(_disclosed_by("police"))
    with pytest.raises(RosterRejected) as refused:
        audit.check_disclosure_file(
            tmp_path / "d.tfdisclosure", None, TF1.schemas, roster=given, agency=agency, now_ms=now
        )
    assert refused.value.code == "E_ROSTER_ROLLBACK"
    assert refused.value.exit_code == ExitCode.TRUST


def test_a_checked_disclosure_names_the_current_roster_it_was_judged_by(tmp_path: Path) -> None:
    honest = TF1.seal("police")
    data = disclose(
        honest.data,
        identity=TF1.ids["ngo"],
        roster=TF1.trusted(),
        roster_bytes=TF1.roster_bytes,
        now_ms=TF1.now_ms,
    )
    (tmp_path / "d.tfdisclosure").write_bytes(data)
    given, anchor = _files(tmp_path, TF1, TF1.roster_bytes, "given")
    checked = audit.check_disclosure_file(
        tmp_path / "d.tfdisclosure", anchor, TF1.schemas, roster=given, now_ms=TF1.now_ms
    )
    assert checked.current.source == "given"
    assert checked.current.rollback_checked is False
    assert checked.disclosed.current_seq == checked.current.seq == TF1.trusted().seq
    assert checked.disclosed.current_issued_ms == TF1.trusted().roster.issued_ms


# --- F2: audit check and an older roster -------------------------------------------------------

OLD = build_taskforce()  # the checker pinned its anchor with this roster (no witnesses)
NEW = with_witnesses(OLD, 1)  # the current roster requires one witness


def _log_keys(roster: TrustedRoster) -> list[str]:
    return [v.format() for v in log_verifiers(roster)]


def _forged_bundle(tmp_path: Path) -> tuple[bytes, bytes]:
    """A made-up one-entry log signed with the coordinator's (stolen) log key alone."""
    forged = OLD.seal("police")
    log = open_log(tmp_path / "fake.db", OLD, [entry_for(forged.data)])
    return log.bundle(0, log.checkpoint()), forged.data


def test_audit_check_with_agency_state_refuses_a_roster_older_than_the_one_trusted(
    tmp_path: Path,
) -> None:
    """Repro a3: the old roster (threshold 0) verifies against the pinned anchor; with the
    agency's rollback state it is refused."""
    agency = _agency_trusting(tmp_path, OLD, NEW.roster_bytes, NEW.now_ms)
    given, anchor = _files(tmp_path, OLD, OLD.roster_bytes, "given")
    with pytest.raises(RosterRejected) as refused:
        audit.checker_roster(given, anchor, now_ms=OLD.now_ms, agency=agency)
    assert refused.value.code == "E_ROSTER_ROLLBACK"
    assert refused.value.exit_code == ExitCode.TRUST


def test_audit_check_with_state_alone_refuses_an_older_roster(tmp_path: Path) -> None:
    agency = _agency_trusting(tmp_path, OLD, NEW.roster_bytes, NEW.now_ms)
    given, anchor = _files(tmp_path, OLD, OLD.roster_bytes, "given")
    with pytest.raises(RosterRejected) as refused:
        audit.checker_roster(
            given, anchor, now_ms=OLD.now_ms, agency=audit.CheckerAgency(agency.state_dir)
        )
    assert refused.value.code == "E_ROSTER_ROLLBACK"


def test_audit_check_uses_the_agency_s_newer_roster_so_its_witness_threshold_applies(
    tmp_path: Path,
) -> None:
    agency = _agency_trusting(tmp_path, OLD, NEW.roster_bytes, NEW.now_ms)
    current = audit.checker_roster(None, None, now_ms=NEW.now_ms, agency=agency)
    assert (current.source, current.seq, current.rollback_checked) == (
        "agency",
        NEW.trusted().seq,
        True,
    )
    bundle, envelope = _forged_bundle(tmp_path)
    with pytest.raises(WitnessError) as refused:
        check_evidence(
            bundle, roster=current.trusted, log_keys=_log_keys(current.trusted), envelope=envelope
        )
    assert refused.value.code == "E_WITNESS_THRESHOLD"


def test_offline_audit_check_says_which_roster_it_used_and_that_it_was_not_rollback_checked(
    tmp_path: Path,
) -> None:
    given, anchor = _files(tmp_path, OLD, OLD.roster_bytes, "given")
    current = audit.checker_roster(given, anchor, now_ms=OLD.now_ms)
    assert current.source == "given"
    assert current.rollback_checked is False
    assert (current.seq, current.issued_ms) == (OLD.trusted().seq, OLD.trusted().roster.issued_ms)


def test_a_given_roster_newer_than_the_agency_s_is_used(tmp_path: Path) -> None:
    agency = _agency_trusting(tmp_path, OLD, OLD.roster_bytes, OLD.now_ms)
    given, anchor = _files(tmp_path, OLD, NEW.roster_bytes, "given")
    current = audit.checker_roster(given, anchor, now_ms=NEW.now_ms, agency=agency)
    assert (current.source, current.seq) == ("given", NEW.trusted().seq)


def test_a_state_directory_that_does_not_exist_is_an_error_not_an_offline_check(
    tmp_path: Path,
) -> None:
    given, anchor = _files(tmp_path, OLD, OLD.roster_bytes, "given")
    with pytest.raises(InputError) as refused:
        audit.checker_roster(
            given, anchor, now_ms=OLD.now_ms, agency=audit.CheckerAgency(tmp_path / "nowhere")
        )
    assert "no agency state" in refused.value.message


# --- F3: one member's bad cosignature line -----------------------------------------------------

TF3 = taskforce(threshold=1)


def _witnessed_log(tmp_path: Path) -> tuple[bytes, bytes, bytes, Log]:
    msg = TF3.seal("police")
    log = open_log(tmp_path / "a.db", TF3, [entry_for(msg.data)])
    note = log.checkpoint()
    text = note[: note.rfind(b"\n\n") + 1]
    honest = witness_note(
        text, cosign(text, TF3.ids["ngo"], taskforce=TASKFORCE, timestamp=TF3.now_ms // 1000)
    )
    return note, honest, msg.data, log


def _garbage_line(agency: str) -> bytes:
    name = witness_name(TASKFORCE, agency)
    return format_note_line(name, cosigner_key_id(name, TF3.ids[agency].sign_pk) + bytes(72))


@pytest.mark.parametrize("named", ["police", "ngo"])
def test_a_member_s_bad_cosignature_line_is_dropped_and_the_bundle_still_checks(
    tmp_path: Path, named: str
) -> None:
    """Repro a2: police publishes the checkpoint with a garbage line under its own witness
    name, or under ngo's; ngo's honest cosignature still makes the bundle check."""
    note, honest, envelope, log = _witnessed_log(tmp_path)
    hostile = note + _garbage_line(named)
    merged = merge_witnessed(note, [("ngo", honest), ("police", hostile)], TF3.trusted())
    assert merged.dropped == ("police",)
    assert [w.agency for w in require_witnesses(merged.note, TF3.trusted())] == ["ngo"]
    evidence = check_evidence(
        log.bundle(0, merged.note),
        roster=TF3.trusted(),
        log_keys=_log_keys(TF3.trusted()),
        envelope=envelope,
    )
    assert [w.agency for w in evidence.witnesses] == ["ngo"]


def test_a_valid_cosignature_of_another_agency_in_a_member_s_note_is_not_taken_from_it(
    tmp_path: Path,
) -> None:
    """The bucket key says who published: ngo's valid line in police's note is not ngo's
    publication, and police's note is reported."""
    note, honest, _, _ = _witnessed_log(tmp_path)
    merged = merge_witnessed(note, [("police", honest)], TF3.trusted())
    assert merged.note == note
    assert merged.dropped == ("police",)


def test_notes_on_another_checkpoint_are_skipped_without_blame(tmp_path: Path) -> None:
    _, honest, envelope, _ = _witnessed_log(tmp_path)
    two = [
        entry_for(envelope),
        msgspec.structs.replace(entry_for(envelope), msg_id=bytes(16), env_sha256=bytes(32)),
    ]
    newer = open_log(tmp_path / "b.db", TF3, two).checkpoint()
    merged = merge_witnessed(newer, [("ngo", honest)], TF3.trusted())
    assert (merged.note, merged.dropped) == (newer, ())


def test_prove_finds_the_witnessed_checkpoint_despite_a_hostile_note_and_logs_the_drop(
    tmp_path: Path,
) -> None:
    note, honest, _, _ = _witnessed_log(tmp_path)
    hostile = note + _garbage_line("police")
    with capture_logs() as logs:
        found = audit._witnessed([(1, note)], [("police", hostile), ("ngo", honest)], TF3.trusted())
    assert found is not None and found[0] == 1
    assert [w.agency for w in require_witnesses(found[1], TF3.trusted())] == ["ngo"]
    dropped = [e for e in logs if e["event"] == "cosignature_dropped"]
    assert [e["agency"] for e in dropped] == ["police"]


def test_prove_from_broker_picks_the_witnessed_size_though_a_hostile_note_comes_first(
    tmp_path: Path,
) -> None:
    """The hostile note is log-signed, so it was the one merged into: its garbage line made
    the witnessed checkpoint look unwitnessed (size 0: the latest, unwitnessed)."""
    note, honest, _, _ = _witnessed_log(tmp_path)
    hostile = note + _garbage_line("police")
    assert _witnessed_size([("police", hostile), ("ngo", honest)], TF3.trusted()) == 1


def test_cosigned_helper_still_matches_merge_witnessed(tmp_path: Path) -> None:
    """The test kit's unverified merge and the verified one agree on honest notes."""
    note, honest, _, _ = _witnessed_log(tmp_path)
    merged = merge_witnessed(note, [("ngo", honest)], TF3.trusted())
    assert merged.note == cosigned(note, TF3, "ngo", timestamp=TF3.now_ms // 1000)
