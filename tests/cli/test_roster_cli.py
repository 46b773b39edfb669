"""``tfshare roster``: edit, sign, anchor, verify, show, diff; rollback and revocation."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tfkit import build_taskforce

from tfshare.encoding import encode
from tfshare.workflows.keys import describe

Run = Callable[..., subprocess.CompletedProcess[str]]
RunIn = Callable[[Path], Run]
Creds = Callable[[str], list[str]]

ALERT = Path(__file__).resolve().parents[2] / "examples" / "alert.json"
TASKFORCE = "tf-north"


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}: exit {result.returncode}\n{result.stderr}"
    return result


def assert_trust_error(result: subprocess.CompletedProcess[str], code: str) -> None:
    """Exit 6 with the E_ROSTER_* ``code`` on the one error line, a hint, no traceback."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("tfshare: error: ")]
    hints = [line for line in result.stderr.splitlines() if line.startswith("tfshare: hint: ")]
    assert result.returncode == 6, result.stderr
    assert len(errors) == 1, result.stderr
    assert len(hints) == 1, result.stderr
    assert code in errors[0]
    assert "Traceback" not in result.stderr


def show_json(run: Run, roster: Path) -> dict[str, Any]:
    result = ok(run("roster", "show", "--json", roster))
    info: dict[str, Any] = json.loads(result.stdout)
    return info


def foreign_anchor(path: Path, *, taskforce: str | None = None) -> Path:
    """The anchor of the test kit's task force (other coordinators), optionally renamed."""
    anchor = build_taskforce().anchor
    if taskforce is not None:
        anchor = msgspec.structs.replace(anchor, taskforce=taskforce)
    path.write_bytes(encode(anchor))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("roster")


@pytest.fixture(scope="module")
def mrun(run_in: RunIn, workdir: Path) -> Run:
    """A module-wide runner (for fixtures built once per module)."""
    return run_in(workdir)


@pytest.fixture(scope="module")
def edited(tf: Path, mrun: Run, workdir: Path) -> Path:
    """A copy of the signed roster (seq 1) with one edit after signing: coord may read alerts."""
    path = workdir / "edited.roster"
    shutil.copyfile(tf / "taskforce.roster", path)
    ok(mrun("roster", "grant", path, "coord", "--channel", "alerts", "--read"))
    return path


@pytest.fixture(scope="module")
def newer(edited: Path, tf: Path, mrun: Run, workdir: Path) -> Path:
    """The edited roster signed by coord: seq 2, valid under the session anchor."""
    path = workdir / "newer.roster"
    shutil.copyfile(edited, path)
    keys = tf / "keys"
    ok(
        mrun(
            "roster", "sign", path, "--key", keys / "coord.key",
            "--passphrase-file", keys / "coord.pass",
        )
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def v1_message(mrun: Run, creds: Creds, trust: list[str], workdir: Path) -> Path:
    """An alert police sealed under the session roster (seq 1), before any revocation."""
    out = workdir / "v1.tfenv"
    ok(
        mrun(
            "seal", *creds("police"), *trust, "--state", workdir / "police-state",
            "--channel", "alerts", "--schema", "tf.alert/1", "--in", ALERT, "--out", out,
        )
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def state_after_newer(
    mrun: Run, creds: Creds, tf: Path, newer: Path, v1_message: Path, workdir: Path
) -> Path:
    """ngo's state directory after opening a message with the newer roster (seq 2)."""
    state = workdir / "ngo-state-newer"
    ok(
        mrun(
            "open", v1_message, *creds("ngo"), "--roster", newer,
            "--anchor", tf / "taskforce.anchor", "--state", state,
        )
    )  # fmt: skip
    return state


@pytest.fixture(scope="module")
def revoked(tf: Path, mrun: Run, workdir: Path, v1_message: Path) -> Path:
    """A signed roster (seq 2) in which police is revoked as retired (after ``v1_message``)."""
    path = workdir / "revoked.roster"
    shutil.copyfile(tf / "taskforce.roster", path)
    ok(mrun("roster", "revoke", path, "police", "--reason", "retired"))
    keys = tf / "keys"
    ok(
        mrun(
            "roster", "sign", path, "--key", keys / "coord.key",
            "--passphrase-file", keys / "coord.pass",
        )
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def after_revocation(
    revoked: Path, mrun: Run, creds: Creds, trust: list[str], workdir: Path
) -> Path:
    """An alert police sealed after its revocation, with the old roster it still holds."""
    out = workdir / "after-revocation.tfenv"
    ok(
        mrun(
            "seal", *creds("police"), *trust, "--state", workdir / "police-state",
            "--channel", "alerts", "--schema", "tf.alert/1", "--in", ALERT, "--out", out,
        )
    )  # fmt: skip
    return out


def test_verify_accepts_signed_roster(run: Run, tf: Path) -> None:
    """roster verify of the signed roster against its anchor exits 0 and says it is valid."""
    result = ok(
        run("roster", "verify", tf / "taskforce.roster", "--anchor", tf / "taskforce.anchor")
    )
    assert "valid" in result.stderr
    assert result.stdout == ""


def test_verify_json_reports_valid(run: Run, tf: Path) -> None:
    """roster verify --json prints one object: valid, task force, seq 1, not expired."""
    result = ok(
        run(
            "roster", "verify", "--json", tf / "taskforce.roster",
            "--anchor", tf / "taskforce.anchor",
        )
    )  # fmt: skip
    assert json.loads(result.stdout) == {
        "valid": True,
        "taskforce": TASKFORCE,
        "seq": 1,
        "expired": False,
    }


def test_show_json_lists_members_and_signature(run: Run, tf: Path) -> None:
    """roster show --json: the task force's members, coordinator and its one signature."""
    info = show_json(run, tf / "taskforce.roster")
    assert info["taskforce"] == TASKFORCE
    assert info["seq"] == 1
    assert info["coordinators"] == ["coord"]
    assert info["signed_by"] == ["coord"]
    assert info["signatures"] == 1
    assert info["fully_signed"] is True
    assert {m["agency"] for m in info["members"]} == {"coord", "police", "ngo", "labour"}


def test_show_json_lists_channel_rights(run: Run, tf: Path) -> None:
    """roster show --json: the alerts channel's readers and writers as granted."""
    info = show_json(run, tf / "taskforce.roster")
    (alerts,) = info["channels"]
    assert alerts["name"] == "alerts"
    assert set(alerts["readers"]) == {"police", "ngo", "labour"}
    assert set(alerts["writers"]) == {"police", "labour"}


def test_show_json_fingerprints_match_cards(run: Run, tf: Path) -> None:
    """Each member's fingerprint in roster show --json is the fingerprint of its card."""
    info = show_json(run, tf / "taskforce.roster")
    for member in info["members"]:
        card = describe(tf / "keys" / f"{member['agency']}.card")
        assert member["fingerprint"] == card.fingerprint


def test_show_text_lists_members_and_channels(run: Run, tf: Path) -> None:
    """roster show prints the task force, each member with its fingerprint, and the channels."""
    result = ok(run("roster", "show", tf / "taskforce.roster"))
    assert TASKFORCE in result.stdout
    assert describe(tf / "keys" / "ngo.card").fingerprint in result.stdout
    assert "alerts: read" in result.stdout
    assert "outsider" not in result.stdout


def test_edit_before_signing_keeps_seq(run: Run, tf: Path, tmp_path: Path) -> None:
    """The edits of a never-signed roster stay in its first version (seq 1, no signatures)."""
    path = tmp_path / "draft.roster"
    ok(
        run(
            "roster", "init", "--taskforce", "draft", "--coordinator", tf / "keys" / "coord.card",
            "--threshold", "1", "--out", path,
        )
    )  # fmt: skip
    ok(run("roster", "add", path, tf / "keys" / "ngo.card"))
    info = show_json(run, path)
    assert (info["seq"], info["signatures"]) == (1, 0)


def test_edit_after_signing_bumps_seq_and_drops_signatures(run: Run, edited: Path) -> None:
    """An edit of a signed roster makes seq 2 with no signatures."""
    info = show_json(run, edited)
    assert info["seq"] == 2
    assert info["signatures"] == 0
    assert info["signed_by"] == []
    assert info["fully_signed"] is False


def test_diff_shows_the_edit(run: Run, tf: Path, edited: Path) -> None:
    """roster diff OLD NEW lists the seq change and the new reader."""
    result = ok(run("roster", "diff", tf / "taskforce.roster", edited))
    lines = result.stdout.splitlines()
    assert "seq: 1 -> 2" in lines
    assert "channel alerts: readers + coord" in lines


def test_diff_json_lists_changes(run: Run, tf: Path, edited: Path) -> None:
    """roster diff --json prints one object whose changes include the new reader."""
    result = ok(run("roster", "diff", "--json", tf / "taskforce.roster", edited))
    assert "channel alerts: readers + coord" in json.loads(result.stdout)["changes"]


def test_diff_of_identical_rosters_reports_no_changes(run: Run, tf: Path) -> None:
    """roster diff of a roster with itself prints "no changes"."""
    result = ok(run("roster", "diff", tf / "taskforce.roster", tf / "taskforce.roster"))
    assert result.stdout.strip() == "no changes"


def test_verify_unsigned_edit_is_refused(run: Run, tf: Path, edited: Path) -> None:
    """An edited roster without signatures fails verify with exit 6 and E_ROSTER_SIG."""
    result = run("roster", "verify", edited, "--anchor", tf / "taskforce.anchor")
    assert_trust_error(result, "E_ROSTER_SIG")


def test_anchor_of_unsigned_roster_is_refused(run: Run, edited: Path, tmp_path: Path) -> None:
    """roster anchor refuses an unsigned roster (exit 6) and writes no anchor file."""
    result = run("roster", "anchor", edited, "--out", tmp_path / "x.anchor")
    assert result.returncode == 6, result.stderr
    assert not (tmp_path / "x.anchor").exists()


def test_verify_with_other_taskforce_anchor_is_refused(run: Run, tf: Path, tmp_path: Path) -> None:
    """The anchor of another task force: exit 6 with E_ROSTER_TASKFORCE."""
    anchor = foreign_anchor(tmp_path / "other.anchor")
    result = run("roster", "verify", tf / "taskforce.roster", "--anchor", anchor)
    assert_trust_error(result, "E_ROSTER_TASKFORCE")


def test_verify_with_impostor_anchor_is_refused(run: Run, tf: Path, tmp_path: Path) -> None:
    """An anchor of the same task-force name but other coordinators: exit 6 with E_ROSTER_SIG."""
    anchor = foreign_anchor(tmp_path / "impostor.anchor", taskforce=TASKFORCE)
    result = run("roster", "verify", tf / "taskforce.roster", "--anchor", anchor)
    assert_trust_error(result, "E_ROSTER_SIG")


def test_verify_accepts_newer_signed_roster(run: Run, tf: Path, newer: Path) -> None:
    """A re-signed edit (seq 2) verifies under the original anchor."""
    result = ok(run("roster", "verify", "--json", newer, "--anchor", tf / "taskforce.anchor"))
    assert json.loads(result.stdout)["seq"] == 2


def test_open_with_older_roster_after_newer_is_rollback(
    run: Run, creds: Creds, tf: Path, v1_message: Path, state_after_newer: Path, tmp_path: Path
) -> None:
    """Once a state accepted seq 2, open with the seq-1 roster exits 6 with E_ROSTER_ROLLBACK."""
    state = tmp_path / "state"
    shutil.copytree(state_after_newer, state)
    result = run(
        "open", v1_message, *creds("ngo"), "--roster", tf / "taskforce.roster",
        "--anchor", tf / "taskforce.anchor", "--state", state,
    )  # fmt: skip
    assert_trust_error(result, "E_ROSTER_ROLLBACK")
    assert result.stdout == ""


def test_verify_with_state_refuses_older_roster(
    run: Run, tf: Path, state_after_newer: Path, tmp_path: Path
) -> None:
    """roster verify --state of the seq-1 roster after seq 2 was accepted: E_ROSTER_ROLLBACK."""
    state = tmp_path / "state"
    shutil.copytree(state_after_newer, state)
    result = run(
        "roster", "verify", tf / "taskforce.roster", "--anchor", tf / "taskforce.anchor",
        "--state", state,
    )  # fmt: skip
    assert_trust_error(result, "E_ROSTER_ROLLBACK")


def test_rollback_refusal_leaves_state_usable(
    run: Run, creds: Creds, tf: Path, newer: Path, state_after_newer: Path, tmp_path: Path
) -> None:
    """A refused older roster changes nothing: the newer roster still verifies with the state."""
    state = tmp_path / "state"
    shutil.copytree(state_after_newer, state)
    anchor = tf / "taskforce.anchor"
    refused = run("roster", "verify", tf / "taskforce.roster", "--anchor", anchor, "--state", state)
    assert refused.returncode == 6
    ok(run("roster", "verify", newer, "--anchor", anchor, "--state", state))


def test_revoke_marks_member_removed_and_key_retired(run: Run, revoked: Path) -> None:
    """After roster revoke --reason retired, show --json lists police as removed, key retired."""
    info = show_json(run, revoked)
    police = next(m for m in info["members"] if m["agency"] == "police")
    assert police["status"] == "removed"
    assert [k["revoked"] for k in police["sign_keys"]] == ["retired"]
    assert [r["reason"] for r in info["revoked"]] == ["retired"]


def test_revoked_sender_message_is_refused(
    run: Run, creds: Creds, tf: Path, revoked: Path, after_revocation: Path
) -> None:
    """A message police sealed after its revocation is rejected (exit 3, E_REVOKED)."""
    result = run(
        "open", after_revocation, *creds("ngo"), "--roster", revoked,
        "--anchor", tf / "taskforce.anchor", "--state", "state",
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "E_REVOKED" in result.stderr
    assert result.stdout == ""


def test_retired_sender_earlier_message_still_delivered(
    run: Run, creds: Creds, tf: Path, revoked: Path, v1_message: Path
) -> None:
    """reason=retired refuses only later messages: one sealed before revocation is delivered."""
    result = run(
        "open", v1_message, *creds("ngo"), "--roster", revoked,
        "--anchor", tf / "taskforce.anchor", "--state", "state", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outcome"] == "delivered"


def test_revoked_sender_cannot_seal_with_new_roster(
    run: Run, creds: Creds, tf: Path, revoked: Path, tmp_path: Path
) -> None:
    """police cannot seal with the roster that revokes it: exit 6, no .tfenv written."""
    result = run(
        "seal", *creds("police"), "--roster", revoked, "--anchor", tf / "taskforce.anchor",
        "--state", "state", "--channel", "alerts", "--schema", "tf.alert/1",
        "--in", ALERT, "--out", "x.tfenv",
    )  # fmt: skip
    assert result.returncode == 6, result.stderr
    assert not (tmp_path / "x.tfenv").exists()
