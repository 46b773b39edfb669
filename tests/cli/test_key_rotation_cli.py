"""``tfshare keys rotate``: new keys into the key file, a statement for the coordinators."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from tfshare.keyfile import KEYFILE_TAG_V2, open_keyfile, read_keyfile_header
from tfshare.roster import decode_signed_roster
from tfshare.rotation import DAY_MS, read_rotation

Run = Callable[..., subprocess.CompletedProcess[str]]


def _copy_police(tf: Path, into: Path) -> tuple[Path, Path]:
    key = into / "police.key"
    shutil.copy(tf / "keys" / "police.key", key)
    key.chmod(0o600)
    return key, tf / "keys" / "police.pass"


def _assert_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("tfshare: error: ")]
    assert len(errors) == 1 and text in errors[0], result.stderr
    assert any(line.startswith("tfshare: hint: ") for line in result.stderr.splitlines())
    assert "Traceback" not in result.stderr


def test_rotate_writes_new_keys_and_a_statement_the_roster_accepts(
    run: Run, tf: Path, tmp_path: Path
) -> None:
    key, pass_file = _copy_police(tf, tmp_path)
    before = open_keyfile(key.read_bytes(), pass_file.read_text().strip().encode())
    result = run("keys", "rotate", "--key", key, "--passphrase-file", pass_file, umask=0)
    assert result.returncode == 0, result.stderr
    statement = tmp_path / "police.rotation"
    # Plain words on what to do next, and nothing secret.
    assert "tfshare roster rotate ROSTER police.rotation" in result.stderr
    assert "send it to a coordinator" in result.stderr
    passphrase = pass_file.read_text().strip()
    assert passphrase not in result.stdout + result.stderr
    # The key file: 0600, v2, the new key current, the old one still held.
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert read_keyfile_header(key.read_bytes()).tag == KEYFILE_TAG_V2
    after = open_keyfile(key.read_bytes(), passphrase.encode())
    assert after.enc_kids == (after.kid_enc, before.kid_enc)
    assert after.kid_enc != before.kid_enc
    assert after.sign_pk == before.sign_pk  # no --sign
    assert after.state_key == before.state_key
    roster = decode_signed_roster((tf / "taskforce.roster").read_bytes())[1]
    verified = read_rotation(statement.read_bytes(), roster)
    assert verified.new_enc_pk == after.enc_pk
    assert verified.grace_ms == 7 * DAY_MS
    assert (verified.rotates_enc, verified.rotates_sign) == (True, False)


def test_rotate_sign_with_grace_and_out_reports_json(run: Run, tf: Path, tmp_path: Path) -> None:
    key, pass_file = _copy_police(tf, tmp_path)
    out = tmp_path / "statement.bin"
    result = run(
        "keys", "rotate", "--key", key, "--passphrase-file", pass_file,
        "--sign", "--no-enc", "--grace", "12h", "--out", out, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    done = json.loads(result.stdout)
    assert done["statement_path"] == str(out)
    assert (done["rotated_enc"], done["rotated_sign"]) == (False, True)
    assert done["destroy_after_ms"] - done["created_ms"] == 12 * 3_600_000
    roster = decode_signed_roster((tf / "taskforce.roster").read_bytes())[1]
    verified = read_rotation(out.read_bytes(), roster)
    assert (verified.rotates_enc, verified.rotates_sign) == (False, True)


def test_rotate_nothing_or_a_bad_grace_is_a_usage_error_before_the_passphrase(
    run: Run, tf: Path, tmp_path: Path
) -> None:
    """No passphrase is given: the usage error comes first (exit 2, not 6)."""
    key, _ = _copy_police(tf, tmp_path)
    original = key.read_bytes()
    _assert_error(run("keys", "rotate", "--key", key, "--no-enc"), 2, "nothing to rotate")
    _assert_error(run("keys", "rotate", "--key", key, "--grace", "7x"), 2, "not a duration")
    _assert_error(run("keys", "rotate", "--key", key, "--grace", "91d"), 2, "1 hour to 90 days")
    _assert_error(run("keys", "rotate", "--key", key, "--grace", "59m"), 2, "1 hour to 90 days")
    assert key.read_bytes() == original
    assert not (tmp_path / "police.rotation").exists()


def test_rotate_with_the_wrong_passphrase_changes_nothing(
    run: Run, tf: Path, tmp_path: Path
) -> None:
    key, _ = _copy_police(tf, tmp_path)
    original = key.read_bytes()
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not the passphrase at all\n")
    result = run("keys", "rotate", "--key", key, "--passphrase-file", wrong)
    _assert_error(result, 6, "wrong passphrase")
    assert key.read_bytes() == original
    assert not (tmp_path / "police.rotation").exists()


def test_rotate_refuses_a_card_given_as_the_key(run: Run, tf: Path) -> None:
    result = run("keys", "rotate", "--key", tf / "keys" / "police.card")
    assert result.returncode == 6, result.stderr
    assert "agency card" in result.stderr


def test_keys_show_reads_a_rotated_v2_key_file(run: Run, tf: Path, tmp_path: Path) -> None:
    key, pass_file = _copy_police(tf, tmp_path)
    assert run("keys", "rotate", "--key", key, "--passphrase-file", pass_file).returncode == 0
    shown = run("keys", "show", key, "--json")
    assert shown.returncode == 0, shown.stderr
    after = open_keyfile(key.read_bytes(), pass_file.read_text().strip().encode())
    assert json.loads(shown.stdout)["kid_enc"] == after.kid_enc.hex()


def test_rotate_uses_the_profiles_key_and_writes_the_statement_beside_it(
    run: Run, tf: Path, tmp_path: Path
) -> None:
    result = run("init", "--agency", "police", "--server", "nats://127.0.0.1:4222",
                 "--roster", tf / "taskforce.roster", "--anchor", tf / "taskforce.anchor",
                 "--key", tf / "keys" / "police.key")  # fmt: skip
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "home" / "profiles" / "default"
    pass_file = tf / "keys" / "police.pass"
    rotated = run("--profile", "default", "keys", "rotate", "--passphrase-file", pass_file)
    assert rotated.returncode == 0, rotated.stderr
    assert (folder / "police.rotation").exists()
    after = open_keyfile(
        (folder / "police.key").read_bytes(), pass_file.read_text().strip().encode()
    )
    assert len(after.enc_kids) == 2
    # The session's own key file is untouched.
    assert read_keyfile_header((tf / "keys" / "police.key").read_bytes()).tag != KEYFILE_TAG_V2


def test_rotate_without_key_or_profile_is_a_usage_error(run: Run) -> None:
    _assert_error(run("keys", "rotate"), 2, "--key is required without a profile")
