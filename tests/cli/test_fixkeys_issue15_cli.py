"""``tfshare keys rotate`` after the second review of issue 15: it never overwrites a rotation
statement (exit 1, said before the passphrase), and ``--statement-only`` writes the statement
of the newest rotation again from the key file."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from tfshare.roster import decode_signed_roster
from tfshare.rotation import read_rotation

Run = Callable[..., subprocess.CompletedProcess[str]]


def _copy_police(tf: Path, into: Path) -> tuple[Path, Path]:
    key = into / "police.key"
    shutil.copy(tf / "keys" / "police.key", key)
    key.chmod(0o600)
    return key, tf / "keys" / "police.pass"


def test_a_second_rotate_is_refused_while_the_statement_is_there(
    run: Run, tf: Path, tmp_path: Path
) -> None:
    key, pass_file = _copy_police(tf, tmp_path)
    first = run("keys", "rotate", "--key", key, "--passphrase-file", pass_file)
    assert first.returncode == 0, first.stderr
    assert "move police.rotation away" in first.stderr
    statement = tmp_path / "police.rotation"
    unapplied, key_bytes = statement.read_bytes(), key.read_bytes()

    # No passphrase file: the refusal comes before any passphrase is asked.
    again = run("keys", "rotate", "--key", key, "--sign")
    assert again.returncode == 1, again.stderr
    lines = again.stderr.splitlines()
    assert any(
        line.startswith("tfshare: error: ") and "never overwritten" in line for line in lines
    ), again.stderr
    assert any(
        line.startswith("tfshare: hint: ") and "send police.rotation" in line for line in lines
    ), again.stderr
    assert "Traceback" not in again.stderr
    assert (statement.read_bytes(), key.read_bytes()) == (unapplied, key_bytes)


def test_statement_only_writes_the_lost_statement_again(run: Run, tf: Path, tmp_path: Path) -> None:
    key, pass_file = _copy_police(tf, tmp_path)
    done = run("keys", "rotate", "--key", key, "--passphrase-file", pass_file, "--sign")
    assert done.returncode == 0, done.stderr
    statement = tmp_path / "police.rotation"
    original = statement.read_bytes()
    statement.unlink()
    key_bytes = key.read_bytes()

    again = run(
        "keys", "rotate", "--key", key, "--passphrase-file", pass_file, "--statement-only"
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "again" in again.stderr
    assert statement.read_bytes() == original
    assert key.read_bytes() == key_bytes  # nothing rotated
    roster = decode_signed_roster((tf / "taskforce.roster").read_bytes())[1]
    assert read_rotation(original, roster).rotates_sign
