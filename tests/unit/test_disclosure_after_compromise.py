"""check-disclosure after a key was revoked as compromised (issue 11, item 7).

police's signing key is stolen; the coordinators revoke it as compromised. A disclosure that
carries the roster from before the revocation used to check with the anchor alone. Now the
check judges revocations under the latest roster it can verify, and trusts a message signed
with the stolen key only with a proof that witnesses co-signed its log entry before the
revocation."""

from __future__ import annotations

from pathlib import Path

import pytest
from tfkit import NOW_MS
from witnesskit import cosigned, entry_for, open_log, taskforce

from tfshare import roster as R
from tfshare.audit.disclosure import DisclosureError, check_disclosure, disclose
from tfshare.audit.service import log_verifiers
from tfshare.encoding import encode
from tfshare.roster import TrustedRoster

REVOKED_AT = NOW_MS + 3_600_000  # an hour after the message
TF = taskforce(threshold=1)
STOLEN = TF.seal("police")  # signed with police's key: by police, or by its thief


def log_keys(roster: TrustedRoster) -> list[str]:
    return [v.format() for v in log_verifiers(roster)]


def _latest() -> tuple[bytes, R.Anchor]:
    signed = R.revoke(TF.signed, "police", reason="compromised", now_ms=REVOKED_AT)
    signed = R.sign(signed, TF.ids["coord"])
    _, content = R.decode_signed_roster(encode(signed))
    return encode(signed), R.anchor_of(content)


LATEST, NEW_ANCHOR = _latest()


def _disclosed_by(agency: str) -> bytes:
    return disclose(
        STOLEN.data,
        identity=TF.ids[agency],
        roster=TF.trusted(),
        roster_bytes=TF.roster_bytes,
        now_ms=TF.now_ms,
    )


def _proof(tmp_path: Path, witnessed_s: int) -> bytes:
    log = open_log(tmp_path / "audit.db", TF, [entry_for(STOLEN.data)])
    return log.bundle(0, cosigned(log.checkpoint(), TF, "ngo", timestamp=witnessed_s))


def test_a_recipient_s_disclosure_of_a_stolen_key_s_message_is_refused_with_the_latest_roster(
    ) -> None:  # fmt: skip
    """Before the fix the old roster inside the disclosure was all that was judged."""
    with pytest.raises(DisclosureError) as refused:
        check_disclosure(
            _disclosed_by("ngo"), anchor=TF.anchor, schemas=TF.schemas, latest_roster=LATEST
        )
    assert refused.value.code == "E_REVOKED"
    assert "--proof" in (refused.value.hint or "")


def test_a_disclosure_signed_with_the_stolen_key_itself_is_refused() -> None:
    with pytest.raises(DisclosureError) as refused:
        check_disclosure(
            _disclosed_by("police"), anchor=TF.anchor, schemas=TF.schemas, latest_roster=LATEST
        )
    assert refused.value.code == "E_DISCLOSURE_SIG"


def test_an_anchor_newer_than_the_disclosure_s_roster_needs_the_current_roster() -> None:
    with pytest.raises(DisclosureError) as refused:
        check_disclosure(_disclosed_by("ngo"), anchor=NEW_ANCHOR, schemas=TF.schemas)
    assert refused.value.code == "E_DISCLOSURE_ROSTER"
    assert "--roster" in (refused.value.hint or "")


def test_a_message_witnessed_in_the_log_before_the_revocation_is_accepted(tmp_path: Path) -> None:
    result = check_disclosure(
        _disclosed_by("ngo"),
        anchor=NEW_ANCHOR,
        schemas=TF.schemas,
        latest_roster=LATEST,
        proof=_proof(tmp_path, witnessed_s=NOW_MS // 1000 + 60),
        log_keys=log_keys,
    )
    assert result.verified.header.sender == "police"
    assert result.discloser == "ngo"


def test_a_message_witnessed_only_after_the_revocation_is_refused(tmp_path: Path) -> None:
    """The thief logs a backdated message after the revocation: the witnesses' times show it."""
    with pytest.raises(DisclosureError) as refused:
        check_disclosure(
            _disclosed_by("ngo"),
            anchor=NEW_ANCHOR,
            schemas=TF.schemas,
            latest_roster=LATEST,
            proof=_proof(tmp_path, witnessed_s=REVOKED_AT // 1000 + 60),
            log_keys=log_keys,
        )
    assert refused.value.code == "E_BUNDLE_SENDER"


def test_a_current_roster_older_than_the_disclosure_s_is_a_rollback() -> None:
    newer = R.sign(R.set_witness_threshold(TF.signed, 2, now_ms=NOW_MS), TF.ids["coord"])
    disclosed = disclose(
        STOLEN.data,
        identity=TF.ids["ngo"],
        roster=TF.trusted(),
        roster_bytes=encode(newer),
        now_ms=TF.now_ms,
    )
    with pytest.raises(DisclosureError) as refused:
        check_disclosure(
            disclosed, anchor=TF.anchor, schemas=TF.schemas, latest_roster=TF.roster_bytes
        )
    assert refused.value.code == "E_ROSTER_ROLLBACK"
