"""``tfshare roster sign`` only by a key whose signature can count.

A member, an agency outside the roster, a suspended coordinator and a coordinator's revoked
key are refused (exit 6) before the passphrase is asked, and the roster file is left byte for
byte as it was. An outgoing coordinator approving a coordinator change signs with
``--previous`` (the roster in force).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from tfshare import roster as R
from tfshare.encoding import encode
from tfshare.keys import kid_sig
from tfshare.workflows.filekinds import load_card

Run = Callable[..., subprocess.CompletedProcess[str]]
NOW_MS = 1_900_000_000_000  # after the session keys were made


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}: exit {result.returncode}\n{result.stderr}"
    return result


def _sign(
    run: Run, tf: Path, roster: Path, agency: str, *extra: str | Path
) -> subprocess.CompletedProcess[str]:
    keys = tf / "keys"
    return run(
        "roster", "sign", roster, "--key", keys / f"{agency}.key",
        "--passphrase-file", keys / f"{agency}.pass", *extra,
    )  # fmt: skip


def _refused_unchanged(
    result: subprocess.CompletedProcess[str], roster: Path, before: bytes, reason: str
) -> None:
    """Exit 6, one error line naming ``reason``, a hint, no traceback, the file untouched."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("tfshare: error: ")]
    hints = [line for line in result.stderr.splitlines() if line.startswith("tfshare: hint: ")]
    assert result.returncode == 6, result.stderr
    assert len(errors) == 1 and len(hints) == 1, result.stderr
    assert reason in errors[0], result.stderr
    assert "not changed" in errors[0]
    assert "Traceback" not in result.stderr
    assert roster.read_bytes() == before


def _unsigned_copy(tf: Path, tmp_path: Path, run: Run) -> Path:
    """The session roster with one edit after signing: seq 2, no signatures yet."""
    path = tmp_path / "edited.roster"
    shutil.copyfile(tf / "taskforce.roster", path)
    ok(run("roster", "grant", path, "coord", "--channel", "alerts", "--read"))
    return path


def _with_outsider_coordinator(tf: Path, path: Path, *, status: str, revoked: bool) -> Path:
    """The session roster, re-issued with outsider as a second coordinator that is
    ``status``, its key ``revoked`` (compromised) or not; threshold stays 1 (coord votes)."""
    signed, _ = R.decode_signed_roster((tf / "taskforce.roster").read_bytes())
    card = load_card(tf / "keys" / "outsider.card")
    signed = R.add_member(signed, card, role="coordinator", now_ms=NOW_MS)
    _, roster = R.decode_signed_roster(encode(signed))
    members = [
        msgspec.structs.replace(m, status=status) if m.agency_id == "outsider" else m
        for m in roster.members
    ]
    revocations = [R.Revocation(kid_sig(card.sign_pk), NOW_MS, "compromised")] if revoked else []
    roster = msgspec.structs.replace(
        roster, members=members, revoked=[*roster.revoked, *revocations]
    )
    path.write_bytes(encode(R.edit(signed, roster, now_ms=NOW_MS)))
    return path


@pytest.mark.parametrize(
    ("agency", "reason"),
    [("police", "'police' is not a coordinator"), ("outsider", "'outsider' is not in roster")],
)
def test_sign_by_a_non_coordinator_is_refused_and_the_file_unchanged(
    run: Run, tf: Path, tmp_path: Path, agency: str, reason: str
) -> None:
    """A member's key and a key outside the roster: exit 6, the file byte for byte the same."""
    roster = _unsigned_copy(tf, tmp_path, run)
    before = roster.read_bytes()
    _refused_unchanged(_sign(run, tf, roster, agency), roster, before, reason)


def test_sign_by_a_signed_rosters_member_keeps_its_signatures(
    run: Run, tf: Path, tmp_path: Path
) -> None:
    """On a fully signed roster a refused member signature adds nothing and drops nothing."""
    roster = tmp_path / "signed.roster"
    shutil.copyfile(tf / "taskforce.roster", roster)
    before = roster.read_bytes()
    _refused_unchanged(_sign(run, tf, roster, "ngo"), roster, before, "not a coordinator")
    ok(run("roster", "verify", roster, "--anchor", tf / "taskforce.anchor"))


def test_sign_is_refused_before_the_passphrase_is_asked(run: Run, tf: Path, tmp_path: Path) -> None:
    """Without any passphrase (no file, no terminal) the refusal is still the coordinator
    check: the key file's public part is enough to know the signature would not count."""
    roster = _unsigned_copy(tf, tmp_path, run)
    before = roster.read_bytes()
    result = run("roster", "sign", roster, "--key", tf / "keys" / "police.key")
    _refused_unchanged(result, roster, before, "not a coordinator")
    assert "passphrase" not in result.stderr.lower()


@pytest.mark.parametrize(
    ("status", "revoked", "reason"),
    [
        ("suspended", False, "coordinator 'outsider' is suspended"),
        ("active", True, "this key of 'outsider' is revoked (compromised)"),
    ],
)
def test_sign_by_an_inactive_or_revoked_coordinator_is_refused(
    run: Run, tf: Path, tmp_path: Path, status: str, revoked: bool, reason: str
) -> None:
    """A coordinator that is suspended, or whose key is revoked, cannot sign; coord (an
    active coordinator) signs the same file."""
    roster = _with_outsider_coordinator(tf, tmp_path / "two.roster", status=status, revoked=revoked)
    before = roster.read_bytes()
    _refused_unchanged(_sign(run, tf, roster, "outsider"), roster, before, reason)
    result = ok(_sign(run, tf, roster, "coord"))
    assert "1 of 1 coordinator signature(s)" in result.stderr


def test_sign_by_a_coordinator_still_works(run: Run, tf: Path, tmp_path: Path) -> None:
    """The guard lets the roster's coordinator sign: the file verifies afterwards."""
    roster = _unsigned_copy(tf, tmp_path, run)
    result = ok(_sign(run, tf, roster, "coord"))
    assert "signed roster seq 2 as coord" in result.stderr
    assert "not a coordinator" not in result.stderr
    ok(run("roster", "verify", roster, "--anchor", tf / "taskforce.anchor"))


def test_outgoing_coordinator_signs_a_coordinator_change_with_previous(
    run: Run, tf: Path, tmp_path: Path
) -> None:
    """coord hands over to outsider: coord is refused without --previous, accepted with the
    roster in force (noted as an outgoing approval); with outsider's signature too the new
    roster verifies against the old anchor (k of the old set and k of the new)."""
    signed, _ = R.decode_signed_roster((tf / "taskforce.roster").read_bytes())
    card = load_card(tf / "keys" / "outsider.card")
    signed = R.add_member(signed, card, role="coordinator", now_ms=NOW_MS)
    _, content = R.decode_signed_roster(encode(signed))
    members = [
        msgspec.structs.replace(m, roles=["member"]) if m.agency_id == "coord" else m
        for m in content.members
    ]
    content = msgspec.structs.replace(content, members=members, coordinators=["outsider"])
    roster = tmp_path / "handover.roster"
    roster.write_bytes(encode(R.edit(signed, content, now_ms=NOW_MS)))
    before = roster.read_bytes()

    _refused_unchanged(_sign(run, tf, roster, "coord"), roster, before, "not a coordinator")
    result = ok(_sign(run, tf, roster, "coord", "--previous", tf / "taskforce.roster"))
    assert "outgoing coordinator" in result.stderr
    ok(_sign(run, tf, roster, "outsider"))
    verified = ok(run("roster", "verify", roster, "--anchor", tf / "taskforce.anchor"))
    assert "valid" in verified.stderr


def test_previous_must_be_an_earlier_version_of_the_same_roster(
    run: Run, tf: Path, tmp_path: Path
) -> None:
    """--previous naming the roster itself (not older) is a usage error; nothing changes."""
    roster = _unsigned_copy(tf, tmp_path, run)
    before = roster.read_bytes()
    result = _sign(run, tf, roster, "police", "--previous", roster)
    assert result.returncode == 2, result.stderr
    assert "--previous" in result.stderr
    assert roster.read_bytes() == before
