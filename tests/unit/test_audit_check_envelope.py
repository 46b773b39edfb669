"""``tfshare audit check`` (issue 11, item 6): a bundle is judged against the roster, not
against itself. An envelope must be the logged message, validly signed by its sender as of its
time; a made-up log signed by one coordinator key is not evidence of junk; and a check with
no roster is refused (exit 6), not passed with a warning.

Runs the installed console script as a real subprocess, on real files."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tfkit import TaskForce
from witnesskit import cosigned, entry_for, open_log, taskforce

from tfshare.encoding import encode

TFSHARE = Path(sys.executable).parent / "tfshare"
T = 1_795_000_000


def run(home: Path, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "TFSHARE_HOME": str(home),
        "LC_ALL": "C.UTF-8",
    }
    return subprocess.run(
        [str(TFSHARE), *(os.fspath(a) for a in args)],
        check=False,
        cwd=home,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def refused(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, f"exit {result.returncode}\n{result.stderr}"
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert any(line.startswith("tfshare: hint: ") for line in lines), result.stderr
    return result.stderr


def trust_files(tf: TaskForce, where: Path) -> list[str]:
    where.mkdir(parents=True, exist_ok=True)
    (where / "tf.roster").write_bytes(encode(tf.signed))
    (where / "tf.anchor").write_bytes(encode(tf.anchor))
    return ["--roster", str(where / "tf.roster"), "--anchor", str(where / "tf.anchor")]


def test_a_made_up_log_about_junk_signed_by_one_coordinator_key_is_refused(
    tmp_path: Path,
) -> None:
    """The log holds an entry whose env_sha256 is the hash of junk, in police's name; it is
    signed by coord's key (stolen, or coord lying). Before the fix this printed "the envelope
    matches" and exited 0."""
    tf = taskforce()
    real = tf.seal("police")
    junk = b"not an envelope at all, just bytes someone wants on record"
    entry = entry_for(real.data)
    fake = type(entry)(**{**{f: getattr(entry, f) for f in entry.__struct_fields__},
                          "env_sha256": hashlib.sha256(junk).digest()})  # fmt: skip
    log = open_log(tmp_path / "forged.db", tf, [fake])
    (tmp_path / "b.tfproof").write_bytes(log.bundle(0, log.checkpoint()))
    (tmp_path / "junk.tfenv").write_bytes(junk)
    result = run(tmp_path / "court", "audit", "check", tmp_path / "b.tfproof",
                 *trust_files(tf, tmp_path), "--envelope", tmp_path / "junk.tfenv")  # fmt: skip
    assert "E_BUNDLE_SENDER" in refused(result, 6)


def test_a_real_envelope_logged_under_another_sender_is_refused(tmp_path: Path) -> None:
    tf = taskforce()
    real = tf.seal("police")
    entry = entry_for(real.data)
    fields = {f: getattr(entry, f) for f in entry.__struct_fields__}
    relabelled = type(entry)(**{**fields, "sender": "labour"})
    log = open_log(tmp_path / "audit.db", tf, [relabelled])
    (tmp_path / "b.tfproof").write_bytes(log.bundle(0, log.checkpoint()))
    (tmp_path / "m.tfenv").write_bytes(real.data)
    result = run(tmp_path / "court", "audit", "check", tmp_path / "b.tfproof",
                 *trust_files(tf, tmp_path), "--envelope", tmp_path / "m.tfenv")  # fmt: skip
    assert "E_BUNDLE_SENDER" in refused(result, 6)


def test_the_logged_envelope_signed_by_its_sender_checks(tmp_path: Path) -> None:
    tf = taskforce()
    real = tf.seal("police")
    log = open_log(tmp_path / "audit.db", tf, [entry_for(real.data)])
    (tmp_path / "b.tfproof").write_bytes(log.bundle(0, log.checkpoint()))
    (tmp_path / "m.tfenv").write_bytes(real.data)
    result = run(tmp_path / "court", "audit", "check", tmp_path / "b.tfproof",
                 *trust_files(tf, tmp_path), "--envelope", tmp_path / "m.tfenv")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(", and the envelope matches\n")
    assert "envelope signed by police" in result.stderr


def test_a_check_without_roster_or_anchor_is_a_trust_error(tmp_path: Path) -> None:
    """Before the fix: exit 0 with a warning, trusting the keys inside the bundle."""
    tf = taskforce()
    real = tf.seal("police")
    log = open_log(tmp_path / "audit.db", tf, [entry_for(real.data)])
    (tmp_path / "b.tfproof").write_bytes(log.bundle(0, log.checkpoint()))
    result = run(tmp_path / "court", "audit", "check", tmp_path / "b.tfproof")
    assert "no roster" in refused(result, 6)


def test_the_cli_refuses_an_unwitnessed_checkpoint_when_the_roster_requires_one(
    tmp_path: Path,
) -> None:
    tf = taskforce(threshold=1)
    real = tf.seal("police")
    log = open_log(tmp_path / "audit.db", tf, [entry_for(real.data)])
    note = log.checkpoint()
    (tmp_path / "bare.tfproof").write_bytes(log.bundle(0, note))
    (tmp_path / "seen.tfproof").write_bytes(log.bundle(0, cosigned(note, tf, "ngo", timestamp=T)))
    trust = trust_files(tf, tmp_path)
    assert "E_WITNESS_THRESHOLD" in refused(
        run(tmp_path / "court", "audit", "check", tmp_path / "bare.tfproof", *trust), 6
    )
    seen = run(tmp_path / "court", "audit", "check", tmp_path / "seen.tfproof", *trust)
    assert seen.returncode == 0, seen.stderr
    assert "witnessed by ngo (the roster requires 1)" in seen.stderr
